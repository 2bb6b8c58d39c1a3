"""The ingest pipeline: an event passes through a named list of small steps, in order.

Each step takes the row being built and the request's `Visit`, fills what it owns, and returns
None to go on or a reason string to drop the event (the reason is counted, never an error).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from millimetric.events.model import EventRow
from millimetric.ingest import schemas
from millimetric.ingest.bots import drop_bots
from millimetric.ingest.classify import put_source
from millimetric.ingest.forgotten import drop_forgotten
from millimetric.ingest.geo import put_country
from millimetric.ingest.ids import derive_ids
from millimetric.ingest.schemas import TrackEvent, to_utc_naive
from millimetric.ingest.useragent import put_user_agent
from millimetric.ingest.visit import Visit
from millimetric.ingest.visitor_hash import put_ip_hash

Step = Callable[[EventRow, Visit], "str | None"]

STEPS: tuple[Step, ...] = (
    drop_forgotten,  # a forgotten user's events are accepted and dropped
    put_user_agent,
    drop_bots,
    put_ip_hash,
    derive_ids,  # anonymous_id falls back to the ip hash (the store derives session ids from it)
    put_source,
    put_country,
)

# With enrichment off (MILLIMETRIC_ENRICH=off) events are stored as sent, plus the ids uniques need.
REQUIRED_STEPS: tuple[Step, ...] = (drop_forgotten, derive_ids)


def new_row(event: TrackEvent, properties: str, visit: Visit) -> EventRow:
    """The row as the client sent it; server-derived columns start empty."""
    return EventRow(
        project_id=visit.project_id,
        timestamp=to_utc_naive(event.timestamp) if event.timestamp else visit.received_at,
        event_name=event.event,
        event_id=event.event_id,
        anonymous_id=event.anonymous_id or "",
        user_id=event.user_id,
        session_id=event.session_id,
        referrer=event.referrer,
        url=event.url,
        path=event.path,
        properties=properties,
    )


def run(items: list[tuple[EventRow, Visit]], steps: tuple[Step, ...] = STEPS) -> tuple[list[EventRow], Counter[str]]:
    """Rows that survived every step, and how many were dropped for which reason."""
    kept: list[EventRow] = []
    dropped: Counter[str] = Counter()
    for row, visit in items:
        for step in steps:
            reason = step(row, visit)
            if reason is not None:
                dropped[reason] += 1
                break
        else:
            kept.append(row)
    return kept, dropped


def accept(
    events: list[TrackEvent],
    visits: list[Visit],
    retention_days: int | None,
    field_prefix: str | None = None,
    steps: tuple[Step, ...] = STEPS,
) -> tuple[list[EventRow], Counter[str]]:
    """Validate every event first (all-or-nothing: ApiError invalid_payload), then run the steps.

    The one write path: the HTTP routes and `millimetric import` both come through here.
    """
    if not events:
        return [], Counter()
    now = visits[0].received_at
    errors = schemas.FieldErrors()
    properties = [
        schemas.check_event(event, f"{field_prefix}.{i}" if field_prefix else "", now, errors, retention_days)
        for i, event in enumerate(events)
    ]
    errors.raise_if_any()
    return run([(new_row(e, p, v), v) for e, p, v in zip(events, properties, visits)], steps)
