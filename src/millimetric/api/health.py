"""GET /healthz: both stores answer, or 503 naming the one that does not."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response

from millimetric.api.responses import json_response
from millimetric.api.services import Services

log = logging.getLogger("millimetric.api")


async def healthz(request: Request) -> Response:
    services: Services = request.app.state.services
    checks = {"control_plane": services.control.ping, "event_store": services.events.ping}
    status = {}
    for name, ping in checks.items():
        try:
            await asyncio.to_thread(ping)
            status[name] = "ok"
        except Exception:
            log.exception("health check failed: %s", name)
            status[name] = "unreachable"
    healthy = all(v == "ok" for v in status.values())
    body = {"ok": healthy, **status, "queued_events": services.writer.queued_events}
    return json_response(body, 200 if healthy else 503)
