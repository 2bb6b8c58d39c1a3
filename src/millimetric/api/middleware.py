"""Pure ASGI middleware: a request id on every response, no traceback ever reaching a client, and
each request counted (`GET /metrics`) and logged in one line."""

from __future__ import annotations

import logging
import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from millimetric.api.responses import error_response
from millimetric.errors import ApiError
from millimetric.operations import logs, metrics

log = logging.getLogger("millimetric.api")
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def new_request_id() -> bytes:
    """Unique, not secret: `random` never releases the GIL (os.urandom does, costing a thread
    switch per request whenever another thread waits for the GIL)."""
    return b"%016x" % random.getrandbits(64)


def _incoming_request_id(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return value if _SANE_ID.match(value) else None
    return None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = time.perf_counter()
        request_id = _incoming_request_id(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id.decode()
        started = False
        status = 500
        answered = arrived

        async def send_with_id(message: Message) -> None:
            nonlocal started, status, answered
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                answered = time.perf_counter()
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error request_id=%s", request_id.decode())
            if not started:
                await error_response(ApiError("internal_error"))(scope, receive, send_with_id)
        finally:
            _account(scope, request_id, status, answered - arrived if started else time.perf_counter() - arrived)


def _account(scope: Scope, request_id: bytes, status: int, seconds: float) -> None:
    """Count and log one request under its route's template (a bounded set of labels): a path
    no route matched is `unmatched`, a CORS preflight answered before routing `preflight`."""
    route = scope.get("route")
    method = scope["method"]
    if route is not None:
        label = getattr(route, "path", "unmatched")
    else:
        label = "preflight" if method == "OPTIONS" else "unmatched"
    metrics.observe_request(label, method, status, seconds)
    logs.access(request_id.decode(), method, scope["path"], label, status, seconds)
