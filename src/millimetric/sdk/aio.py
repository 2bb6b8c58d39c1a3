"""`AsyncClient`: `Client` for asyncio applications; batches go out from a task on the caller's
event loop instead of a thread."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
from typing import Any, AsyncIterator, Mapping, Sequence

import httpx

from millimetric.sdk.common import (
    DEFAULT_HOST,
    MAX_BATCH,
    MAX_QUEUE,
    ErrorHook,
    MillimetricError,
    Moment,
    QueryRow,
    answer,
    deliver,
    deliver_async,
    event_body,
    http_options,
    identify_body,
    read_params,
    report,
)


class AsyncClient:
    """Same contract as `Client`, with `await`. The sending task starts with the first event on
    the running loop. At interpreter exit (the loop already gone) what is still queued is sent
    synchronously; call `aclose()` in your shutdown hook to send it on the loop instead."""

    def __init__(
        self,
        key: str,
        host: str = DEFAULT_HOST,
        flush_at: int = 20,
        flush_interval: float = 1.0,
        on_error: ErrorHook | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._options = http_options(key, host, timeout)
        self._http = httpx.AsyncClient(**self._options)
        self._flush_at = max(1, min(flush_at, MAX_BATCH))
        self._interval = flush_interval
        self._on_error = on_error
        self._queue: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._sending: asyncio.Future[bool] | None = None
        self._closed = False
        atexit.register(self._send_at_exit)

    async def track(self, event: str, **fields: Any) -> None:
        try:
            self._enqueue(event_body(event, fields))
        except Exception as exc:
            report(self._on_error, exc, [])

    async def identify(self, anonymous_id: str, user_id: str, traits: Mapping[str, Any] | None = None) -> None:
        try:
            self._enqueue(identify_body(anonymous_id, user_id, traits))
        except Exception as exc:
            report(self._on_error, exc, [])

    async def flush(self) -> None:
        """Send everything queued now and wait for the answers (including the batch in flight)."""
        if self._sending is not None:
            await asyncio.shield(self._sending)
        while self._queue:
            batch = self._take()
            await deliver_async(self._http, batch, self._on_error)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        await self._http.aclose()
        atexit.unregister(self._send_at_exit)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    def _take(self) -> list[dict[str, Any]]:
        batch = self._queue[: self._flush_at]
        del self._queue[: self._flush_at]
        return batch

    def _enqueue(self, body: dict[str, Any]) -> None:
        if self._closed:
            raise MillimetricError(0, "client_closed")
        if len(self._queue) >= MAX_QUEUE:
            raise MillimetricError(0, "queue_full", {"max_queue": MAX_QUEUE})
        self._queue.append(body)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self._queue) >= self._flush_at:
            assert self._wake is not None
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if len(self._queue) < self._flush_at:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
            if not self._queue:
                continue
            # A task of its own, so that a cancelled loop (aclose) lets the batch in flight finish.
            self._sending = asyncio.ensure_future(deliver_async(self._http, self._take(), self._on_error))
            await asyncio.shield(self._sending)  # cancelled (aclose): `flush` awaits the batch instead

    def _send_at_exit(self) -> None:
        if not self._queue:
            return
        with httpx.Client(**self._options) as http:
            while self._queue:
                deliver(http, self._take(), self._on_error)

    # Privacy and reads ------------------------------------------------------------------------
    async def forget(self, user_id: str) -> dict[str, Any]:
        return answer(await self._http.post("/v1/forget", json={"user_id": user_id}))

    async def query(self, from_: Moment, to: Moment, **params: Any) -> AsyncIterator[QueryRow]:
        wanted = read_params(from_, to, params)
        while True:
            page = answer(await self._http.get("/v1/query", params=wanted))
            for row in page["rows"]:
                yield row
            if not page.get("next_cursor"):
                return
            wanted["cursor"] = page["next_cursor"]

    async def stats(self, from_: Moment, to: Moment, **params: Any) -> dict[str, Any]:
        return answer(await self._http.get("/v1/stats", params=read_params(from_, to, params)))

    async def sources(self, from_: Moment, to: Moment, **params: Any) -> dict[str, Any]:
        return answer(await self._http.get("/v1/sources", params=read_params(from_, to, params)))

    async def funnel(self, from_: Moment, to: Moment, steps: Sequence[str], **params: Any) -> dict[str, Any]:
        wanted = read_params(from_, to, {**params, "steps": list(steps)})
        return answer(await self._http.get("/v1/funnel", params=wanted))
