"""`Client`: tracking that batches on a background thread and never raises into the caller, and
reads that page through cursors."""

from __future__ import annotations

import atexit
import threading
import time
from typing import Any, Iterator, Mapping, Sequence

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
    event_body,
    http_options,
    identify_body,
    read_params,
    report,
)


class Client:
    """Events are queued and sent by one background thread in batches of up to `flush_at`, at
    least every `flush_interval` seconds. A batch that still fails after the retries is handed to
    `on_error(exception, events)` and the logger `millimetric.sdk`; nothing raises into `track`.
    Whatever is queued is sent by `flush()`, `close()`, and at interpreter exit."""

    def __init__(
        self,
        key: str,
        host: str = DEFAULT_HOST,
        flush_at: int = 20,
        flush_interval: float = 1.0,
        on_error: ErrorHook | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._http = httpx.Client(**http_options(key, host, timeout))
        self._flush_at = max(1, min(flush_at, MAX_BATCH))
        self._interval = flush_interval
        self._on_error = on_error
        self._queue: list[dict[str, Any]] = []
        self._busy = 0  # batches taken off the queue and not yet answered
        self._flushing = 0  # callers waiting in flush(): the thread sends without waiting
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        atexit.register(self.close)

    # Tracking ---------------------------------------------------------------------------------
    def track(self, event: str, **fields: Any) -> None:
        """Queue an event; `fields` are /v1/track's (`properties`, `anonymous_id`, `user_id`,
        `event_id`, `timestamp` as str or datetime, `url`, `context`, ...)."""
        try:
            self._enqueue(event_body(event, fields))
        except Exception as exc:
            report(self._on_error, exc, [])

    def identify(self, anonymous_id: str, user_id: str, traits: Mapping[str, Any] | None = None) -> None:
        """Queue the link between an anonymous visitor and a known user (an `$identify` event)."""
        try:
            self._enqueue(identify_body(anonymous_id, user_id, traits))
        except Exception as exc:
            report(self._on_error, exc, [])

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Send everything queued now and wait for the answers; False if `timeout` passed first."""
        with self._cond:
            self._flushing += 1
            try:
                self._ensure_thread()
                self._cond.notify_all()
                return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)
            finally:
                self._flushing -= 1

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, stop the thread and release the connections (also run at interpreter exit)."""
        if self._closed:
            return
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._http.close()
        atexit.unregister(self.close)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _enqueue(self, body: dict[str, Any]) -> None:
        with self._cond:
            if self._closed:
                raise MillimetricError(0, "client_closed")
            if len(self._queue) >= MAX_QUEUE:
                raise MillimetricError(0, "queue_full", {"max_queue": MAX_QUEUE})
            self._queue.append(body)
            self._ensure_thread()
            if len(self._queue) >= self._flush_at:
                self._cond.notify_all()

    def _ensure_thread(self) -> None:
        """Started on first use, and again in a forked child (threads do not survive a fork)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="millimetric-sdk", daemon=True)
            self._thread.start()

    def _ready(self) -> bool:
        return self._closed or len(self._queue) >= self._flush_at or bool(self._flushing and self._queue)

    def _run(self) -> None:
        while True:
            with self._cond:
                deadline = time.monotonic() + self._interval
                while not self._ready() and (remaining := deadline - time.monotonic()) > 0:
                    self._cond.wait(remaining)
                batch = self._queue[: self._flush_at]
                del self._queue[: self._flush_at]
                if not batch:
                    if self._closed:
                        return
                    continue
                self._busy += 1
            try:
                deliver(self._http, batch, self._on_error)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    # Privacy and reads (these answer the caller, so their failures raise MillimetricError) ------
    def forget(self, user_id: str) -> dict[str, Any]:
        """Delete every event of a user (needs an `sk_` key); the queued job's description."""
        return answer(self._http.post("/v1/forget", json={"user_id": user_id}))

    def query(self, from_: Moment, to: Moment, **params: Any) -> Iterator[QueryRow]:
        """Every row in [from_, to), newest first, following `next_cursor` page by page."""
        wanted = read_params(from_, to, params)
        while True:
            page = answer(self._http.get("/v1/query", params=wanted))
            yield from page["rows"]
            if not page.get("next_cursor"):
                return
            wanted["cursor"] = page["next_cursor"]

    def stats(self, from_: Moment, to: Moment, **params: Any) -> dict[str, Any]:
        return answer(self._http.get("/v1/stats", params=read_params(from_, to, params)))

    def sources(self, from_: Moment, to: Moment, **params: Any) -> dict[str, Any]:
        return answer(self._http.get("/v1/sources", params=read_params(from_, to, params)))

    def funnel(self, from_: Moment, to: Moment, steps: Sequence[str], **params: Any) -> dict[str, Any]:
        wanted = read_params(from_, to, {**params, "steps": list(steps)})
        return answer(self._http.get("/v1/funnel", params=wanted))
