"""GET /healthz: both stores answer, or 503 naming the one that does not and how."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from starlette.requests import Request
from starlette.responses import Response

from millimetric.api.responses import json_response
from millimetric.api.services import Services
from millimetric.store.interface import StoreTimeout

log = logging.getLogger("millimetric.api")
CHECK_SECONDS = 3.0  # each store's own timeout is shorter; this bounds the control plane too


async def _check(name: str, ping: Callable[[], None]) -> str:
    try:
        await asyncio.wait_for(asyncio.to_thread(ping), CHECK_SECONDS)
        return "ok"
    except (StoreTimeout, TimeoutError):
        log.error("health check: %s did not answer in time", name)
        return "timeout"
    except Exception:
        log.exception("health check failed: %s", name)
        return "unreachable"


async def healthz(request: Request) -> Response:
    services: Services = request.app.state.services
    control, events = await asyncio.gather(
        _check("control_plane", services.control.ping), _check("event_store", services.events.ping)
    )
    healthy = control == events == "ok"
    body = {
        "ok": healthy,
        "control_plane": control,
        "event_store": events,
        "queued_events": services.writer.queued_events,
    }
    return json_response(body, 200 if healthy else 503)
