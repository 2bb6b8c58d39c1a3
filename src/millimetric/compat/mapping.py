"""What the compatible routes share: turning another vendor's fields into a `/v1/track` event,
and the route's end (authenticate, enrich, store through the one pipeline)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
from starlette.requests import Request

from millimetric.api.ingest import accepted_rows, authorised, store, visit
from millimetric.errors import ApiError
from millimetric.ingest import schemas

_encode = msgspec.json.Encoder().encode
_MAX_URL = 2048


def http_url(value: object) -> str | None:
    """An absolute http(s) URL within the URL limit, else None (dropped, not refused: other
    vendors' libraries send app URLs and the like that `/v1/track` would refuse)."""
    if not isinstance(value, str) or len(value) > _MAX_URL:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return value if parts.scheme in ("http", "https") and parts.netloc else None


def text(value: object, limit: int = _MAX_URL) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def with_campaign(url: str | None, campaign: dict[str, str]) -> str | None:
    """The URL with `utm_*` parameters from a campaign, unless it has its own: the attribution
    classifier reads campaigns from the URL."""
    if url is None or not campaign:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name.startswith("utm_") for name, _ in query):
        return url
    query += [(f"utm_{name}", value) for name, value in campaign.items() if value]
    tagged = urlunsplit(parts._replace(query=urlencode(query)))
    return tagged if len(tagged) <= _MAX_URL else url


def path_of(url: str | None) -> str | None:
    return urlsplit(url).path or "/" if url else None


def properties(value: dict[str, Any] | None) -> msgspec.Raw:
    return msgspec.Raw(_encode(value)) if value else msgspec.Raw()


def context(ip: object, user_agent: object) -> schemas.Context | None:
    """The visitor a server-side sender forwards (used for `sk_` keys only)."""
    ip, user_agent = text(ip, 64), text(user_agent, 1024)
    return schemas.Context(ip=ip, user_agent=user_agent) if ip or user_agent else None


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """Naive UTC; None when out of range (`check_event` refuses what is left out of range)."""
    if value is None:
        return None
    try:
        return schemas.to_utc_naive(value)
    except OverflowError:
        return None


async def ingest(
    request: Request,
    key: str | None,
    route: str,
    build: Callable[[dt.datetime], list[schemas.TrackEvent]],
    prefix: str,
    dropped: Counter[str] | None = None,
) -> int:
    """Authenticate `key` as for `route`, then validate, enrich and store the events that
    `build` makes (given the time of receipt, naive UTC), all or nothing; returns how many were
    duplicates of stored events. `dropped`: events the caller left out, by reason (counted)."""
    if not key:
        raise ApiError("missing_bearer_token", {"expected": "an API key as the write key or api_key"})
    services, principal = await authorised(request, route, f"Bearer {key}")
    base = await visit(request, services, principal)
    rows = accepted_rows(base, services, principal, build(base.received_at), prefix)
    if dropped:
        services.count_dropped(base.project_id, dropped)
    return await store(services, base.project_id, rows) if rows else 0
