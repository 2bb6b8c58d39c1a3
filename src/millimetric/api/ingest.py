"""POST /v1/track, /v1/batch, /v1/identify: authenticate, read, validate, enrich, write durably."""

from __future__ import annotations

from collections import Counter

from starlette.requests import Request
from starlette.responses import Response

from millimetric.api.body import read_body, require_json
from millimetric.api.client import client_ip
from millimetric.api.responses import json_response
from millimetric.api.services import Services
from millimetric.auth import ratelimit, scopes
from millimetric.auth.guard import Principal, require_kind, require_origin
from millimetric.events.model import DUPLICATE, IDENTIFY_EVENT, EventRow
from millimetric.ingest import pipeline, schemas
from millimetric.ingest.visit import Visit


async def authorised(request: Request, route: str, authorization: str | None = None) -> tuple[Services, Principal]:
    """Key, kind, origin, then the project's token bucket for this route. `authorization`: the
    `Bearer` credentials when they come from elsewhere than the header (compatible ingest)."""
    services: Services = request.app.state.services
    principal = await services.keys.authenticate(authorization or request.headers.get("authorization"))
    require_kind(principal, scopes.INGEST)
    require_origin(principal, request.headers.get("origin"))
    assert principal.project is not None  # ingest kinds are project keys
    await ratelimit.enforce(services.limiter, principal.project.id, route, principal.project.rate_limits)
    return services, principal


async def _json_body(request: Request, limit: int) -> bytes:
    require_json(request)
    return await read_body(request, limit)


async def visit(request: Request, services: Services, principal: Principal) -> Visit:
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


def accepted_rows(
    base: Visit, services: Services, principal: Principal, events: list[schemas.TrackEvent], prefix: str | None
) -> list[EventRow]:
    # Server-side senders (sk_ only) forward their visitor's IP and User-Agent in `context`.
    trusted = principal.key.kind == "sk"
    visits = [base.with_context(event.context) if trusted else base for event in events]
    retention = principal.project.retention_days if principal.project else None
    kept, dropped = pipeline.accept(events, visits, retention, prefix, services.steps)
    services.count_dropped(base.project_id, dropped)
    return kept


async def store(services: Services, project_id: str, rows: list[EventRow]) -> int:
    """Write durably; returns how many rows were repeats of stored events (counted as
    `duplicate`, not stored)."""
    duplicates = await services.writer.write(rows)
    if duplicates:
        services.count_dropped(project_id, Counter({DUPLICATE: duplicates}))
    return duplicates


async def track(request: Request) -> Response:
    services, principal = await authorised(request, "/v1/track")
    event = schemas.decode_track(await _json_body(request, schemas.TRACK_BODY_LIMIT))
    base = await visit(request, services, principal)
    if await store(services, base.project_id, accepted_rows(base, services, principal, [event], None)):
        return json_response({"ok": True, "event_id": event.event_id, "duplicate": True}, 202)
    return json_response({"ok": True, "event_id": event.event_id}, 202)


async def batch(request: Request) -> Response:
    services, principal = await authorised(request, "/v1/batch")
    retention = principal.project.retention_days if principal.project else None
    body = schemas.decode_batch(await _json_body(request, schemas.BATCH_BODY_LIMIT), retention)
    base = await visit(request, services, principal)
    duplicates = await store(services, base.project_id, accepted_rows(base, services, principal, body.events, "events"))
    if duplicates:
        return json_response({"ok": True, "count": len(body.events), "duplicates": duplicates}, 202)
    return json_response({"ok": True, "count": len(body.events)}, 202)


async def identify(request: Request) -> Response:
    services, principal = await authorised(request, "/v1/identify")
    body = schemas.decode_identify(await _json_body(request, schemas.IDENTIFY_BODY_LIMIT))
    errors = schemas.FieldErrors()
    traits = schemas.encode_object(body.traits, "traits", errors)
    errors.raise_if_any()
    event = schemas.TrackEvent(event=IDENTIFY_EVENT, anonymous_id=body.anonymous_id, user_id=body.user_id)
    base = await visit(request, services, principal)
    kept, dropped = pipeline.run([(pipeline.new_row(event, traits, base), base)], services.steps)
    services.count_dropped(base.project_id, dropped)
    await store(services, base.project_id, kept)
    return json_response({"ok": True})
