"""POST /v1/track, /v1/batch, /v1/identify: authenticate, read, validate, enrich, write durably."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from millimetric.api.body import read_body, require_json
from millimetric.api.client import client_ip
from millimetric.api.responses import json_response
from millimetric.api.services import Services
from millimetric.auth import ratelimit, scopes
from millimetric.auth.guard import Principal, require_kind, require_origin
from millimetric.events.model import EventRow
from millimetric.ingest import pipeline, schemas
from millimetric.ingest.visit import Visit


async def _authorised(request: Request, route: str) -> tuple[Services, Principal]:
    """Key, kind, origin, then the project's token bucket for this route."""
    services: Services = request.app.state.services
    principal = await services.keys.authenticate(request.headers.get("authorization"))
    require_kind(principal, scopes.INGEST)
    require_origin(principal, request.headers.get("origin"))
    assert principal.project is not None  # ingest kinds are project keys
    await ratelimit.enforce(services.limiter, principal.project.id, route, principal.project.rate_limits)
    return services, principal


async def _json_body(request: Request, limit: int) -> bytes:
    require_json(request)
    return await read_body(request, limit)


async def _visit(request: Request, services: Services, principal: Principal) -> Visit:
    assert principal.project is not None  # ingest kinds are project keys
    return await services.visits.visit_async(
        principal.project,
        ip=client_ip(request, services.trusted_proxies),
        user_agent=request.headers.get("user-agent", ""),
        request_host=(request.headers.get("host") or "").split(":")[0].lower(),
        proxy_country=_proxy_country(request, services),
    )


def _proxy_country(request: Request, services: Services) -> str:
    if not services.settings.trust_cf_headers:
        return ""
    country = request.headers.get("cf-ipcountry", "").strip().upper()
    return country if len(country) == 2 and country.isalpha() and country != "XX" else ""


def _rows(
    base: Visit, services: Services, principal: Principal, events: list[schemas.TrackEvent], prefix: str | None
) -> list[EventRow]:
    # Server-side senders (sk_ only) forward their visitor's IP and User-Agent in `context`.
    trusted = principal.key.kind == "sk"
    visits = [base.with_context(event.context) if trusted else base for event in events]
    retention = principal.project.retention_days if principal.project else None
    kept, dropped = pipeline.accept(events, visits, retention, prefix, services.steps)
    services.count_dropped(base.project_id, dropped)
    return kept


async def track(request: Request) -> Response:
    services, principal = await _authorised(request, "/v1/track")
    event = schemas.decode_track(await _json_body(request, schemas.TRACK_BODY_LIMIT))
    base = await _visit(request, services, principal)
    await services.writer.write(_rows(base, services, principal, [event], None))
    return json_response({"ok": True, "event_id": event.event_id}, 202)


async def batch(request: Request) -> Response:
    services, principal = await _authorised(request, "/v1/batch")
    retention = principal.project.retention_days if principal.project else None
    body = schemas.decode_batch(await _json_body(request, schemas.BATCH_BODY_LIMIT), retention)
    base = await _visit(request, services, principal)
    await services.writer.write(_rows(base, services, principal, body.events, "events"))
    return json_response({"ok": True, "count": len(body.events)}, 202)


async def identify(request: Request) -> Response:
    services, principal = await _authorised(request, "/v1/identify")
    body = schemas.decode_identify(await _json_body(request, schemas.IDENTIFY_BODY_LIMIT))
    errors = schemas.FieldErrors()
    traits = schemas.encode_object(body.traits, "traits", errors)
    errors.raise_if_any()
    event = schemas.TrackEvent(event=schemas.IDENTIFY_EVENT, anonymous_id=body.anonymous_id, user_id=body.user_id)
    visit = await _visit(request, services, principal)
    kept, dropped = pipeline.run([(pipeline.new_row(event, traits, visit), visit)], services.steps)
    services.count_dropped(visit.project_id, dropped)
    await services.writer.write(kept)
    return json_response({"ok": True})
