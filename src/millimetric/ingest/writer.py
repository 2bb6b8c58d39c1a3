"""Group commit: many requests' events go to the store in one append.

A handler calls `await writer.write(rows)`; it returns once the append holding those rows is
durable, so a 202 always means durable, with how many of them the store left out as duplicates
of events it already holds (same project and event id). One append is in flight at a time, on the event loop
itself; requests that arrive meanwhile queue and form the next one. The queue is bounded in
events: a full queue refuses at once (503 overloaded) instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from millimetric.errors import ApiError, overloaded
from millimetric.events.model import EventRow
from millimetric.operations import metrics
from millimetric.store.interface import EventStore, StoreOverloaded, StoreTimeout

log = logging.getLogger("millimetric.writer")


_Pending = tuple[list[EventRow], asyncio.Future]


class Writer:
    def __init__(self, sink: EventStore, max_queued_events: int, max_transaction_events: int = 20_000) -> None:
        self._sink = sink
        self._max_queued = max_queued_events
        self._max_transaction = max_transaction_events
        self._pending: deque[_Pending] = deque()
        self._queued_events = 0
        self._accepting = True
        self._committing: asyncio.Task | None = None

    @property
    def queued_events(self) -> int:
        return self._queued_events

    async def write(self, rows: list[EventRow]) -> int:
        """Resolve after `rows` are durable, to how many of them were duplicates (not stored);
        ApiError overloaded/upstream_failed otherwise."""
        if not self._accepting or self._queued_events + len(rows) > self._max_queued:
            raise overloaded()
        future = asyncio.get_running_loop().create_future()
        self._pending.append((rows, future))
        self._queued_events += len(rows)
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit_pending())
        return await future

    async def close(self) -> None:
        """Stop accepting and wait until everything already queued is durable."""
        self._accepting = False
        if self._committing is not None:
            await asyncio.shield(self._committing)

    def _take(self) -> list[_Pending]:
        """Everything pending, up to one append's worth of events (at least one request)."""
        taken: list[_Pending] = []
        count = 0
        while self._pending and (not taken or count + len(self._pending[0][0]) <= self._max_transaction):
            item = self._pending.popleft()
            taken.append(item)
            count += len(item[0])
        return taken

    async def _commit_pending(self) -> None:
        try:
            while self._pending:
                taken = self._take()
                rows = [row for item in taken for row in item[0]]
                error: BaseException | None = None
                duplicates: list[int] = []
                started = time.perf_counter()
                try:
                    duplicates = await self._sink.append(rows)
                    metrics.count_accepted(len(rows) - len(duplicates))  # one count per group commit, not per request
                    log.debug(
                        "committed %d events from %d requests in %.1f ms",
                        len(rows),
                        len(taken),
                        (time.perf_counter() - started) * 1000,
                    )
                except Exception as exc:  # the store refused or is unreachable: every waiter hears it
                    log.exception("event store write failed (%d events)", len(rows))
                    error = exc
                self._queued_events -= len(rows)
                _settle(taken, duplicates, error)
        finally:
            self._committing = None


def _settle(taken: list[_Pending], duplicates: list[int], error: BaseException | None) -> None:
    """Answer each request; `duplicates` are positions in the append of all `taken` rows, in order."""
    start, index = 0, 0
    for rows, future in taken:
        end = start + len(rows)
        count = 0
        while index < len(duplicates) and duplicates[index] < end:
            count, index = count + 1, index + 1
        start = end
        if future.done():  # its request went away (client disconnected)
            continue
        if error is None:
            future.set_result(count)
        elif isinstance(error, (StoreTimeout, StoreOverloaded)):
            future.set_exception(overloaded())  # wedged or full: nothing was acknowledged, retry later
        else:
            future.set_exception(ApiError("upstream_failed"))
