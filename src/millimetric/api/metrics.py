"""GET /metrics: Prometheus text for the whole server (every worker process, summed).

Counters and histograms come from the processes' sample files; what describes the server as a
whole (the event store's spool, forget jobs) is read from the stores at scrape time, once.
"""

from __future__ import annotations

import asyncio
import hmac

from starlette.requests import Request
from starlette.responses import Response

from millimetric.api.services import Services
from millimetric.errors import ApiError
from millimetric.operations import metrics
from millimetric.operations.metrics import gauge


def _require_token(request: Request, token: str) -> None:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError("missing_bearer_token")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError("invalid_api_key")


def _scraped(services: Services) -> list[metrics.Metric]:
    """The gauges read from the stores; a store that does not answer leaves its gauges out (its
    unavailability is /healthz's to report) and says so in `millimetric_scrape_errors`."""
    families, errors = [], {"event_store": 0.0, "control_plane": 0.0}
    try:
        status = services.events.status()
        families += [
            gauge("millimetric_spool_events", "Acknowledged events not yet in the event store proper.",
                  [({}, float(status.get("unflushed_events", 0)))]),
            gauge("millimetric_spool_bytes", "Bytes of acknowledged events not yet in the event store proper.",
                  [({}, float(status.get("unflushed_bytes", 0)))]),
            gauge("millimetric_spool_oldest_seconds", "Age of the oldest event not yet in the event store proper.",
                  [({}, float(status.get("unflushed_seconds", 0.0)))]),
        ]  # fmt: skip
    except Exception:
        errors["event_store"] = 1.0
    try:
        jobs = services.control.forget_job_counts()
        families.append(
            gauge(
                "millimetric_forget_jobs", "Forget jobs by state.", [({"state": s}, float(n)) for s, n in jobs.items()]
            )
        )
    except Exception:
        errors["control_plane"] = 1.0
    families.append(
        gauge("millimetric_scrape_errors", "1 when a store did not answer this scrape.",
              [({"store": store}, failed) for store, failed in errors.items()])
    )  # fmt: skip
    return families


async def metrics_text(request: Request) -> Response:
    services: Services = request.app.state.services
    if services.settings.metrics_token:
        _require_token(request, services.settings.metrics_token)
    metrics.set_queue_depth(services.writer.queued_events)
    metrics.publish()  # this worker's latest requests; the others publish theirs every second
    body = await asyncio.to_thread(lambda: metrics.render(_scraped(services)))
    return Response(body, media_type=metrics.CONTENT_TYPE)
