"""Group commit: many requests' events go to the store in one transaction.

A handler calls `await writer.write(rows)`; it returns once the transaction holding those rows has
committed, so a 202 always means durable. The queue is bounded in events: a full queue refuses at
once (503 overloaded) instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Protocol

from millimetric.errors import ApiError, overloaded
from millimetric.store.rows import EventRow

log = logging.getLogger("millimetric.writer")


class EventSink(Protocol):
    def append(self, rows: list[EventRow]) -> None: ...


_Pending = tuple[list[EventRow], asyncio.Future, asyncio.AbstractEventLoop]


class Writer:
    def __init__(self, sink: EventSink, max_queued_events: int, max_transaction_events: int = 20_000) -> None:
        self._sink = sink
        self._max_queued = max_queued_events
        self._max_transaction = max_transaction_events
        self._cond = threading.Condition()
        self._pending: deque[_Pending] = deque()
        self._queued_events = 0
        self._accepting = True
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="millimetric-writer", daemon=True)
        self._thread.start()

    @property
    def queued_events(self) -> int:
        return self._queued_events

    async def write(self, rows: list[EventRow]) -> None:
        """Resolve after `rows` are committed; ApiError overloaded/upstream_failed otherwise."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if not self._accepting or self._queued_events + len(rows) > self._max_queued:
                raise overloaded()
            self._pending.append((rows, future, loop))
            self._queued_events += len(rows)
            self._cond.notify()
        await future

    def close(self) -> None:
        """Stop accepting, write everything already queued, then stop the thread."""
        with self._cond:
            self._accepting = False
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def _take(self) -> list[_Pending]:
        """Everything pending, up to one transaction's worth of events (at least one request)."""
        taken, count = [], 0
        while self._pending and (not taken or count + len(self._pending[0][0]) <= self._max_transaction):
            item = self._pending.popleft()
            taken.append(item)
            count += len(item[0])
        return taken

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if not self._pending and self._stopped:
                    return
                taken = self._take()
            rows = [row for item in taken for row in item[0]]
            error: BaseException | None = None
            started = time.perf_counter()
            try:
                self._sink.append(rows)
                log.debug("committed %d events from %d requests in %.1f ms",
                          len(rows), len(taken), (time.perf_counter() - started) * 1000)
            except Exception as exc:  # the store refused or is unreachable: every waiter hears it
                log.exception("event store write failed (%d events)", len(rows))
                error = exc
            with self._cond:
                self._queued_events -= len(rows)
            _settle(taken, error)


def _settle(taken: list[_Pending], error: BaseException | None) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
    for _rows, future, loop in taken:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, futures, error)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            pass


def _resolve(futures: list[asyncio.Future], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(ApiError("upstream_failed"))
