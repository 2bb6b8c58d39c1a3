"""The ingest pipeline: an event passes through a named list of small steps, in order.

Each step takes the row being built and the request's `Visit`, fills what it owns, and returns
None to go on or a reason string to drop the event (the reason is counted, never an error).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from millimetric.ingest.ids import derive_ids
from millimetric.ingest.schemas import TrackEvent, to_utc_naive
from millimetric.ingest.visit import Visit
from millimetric.store.rows import EventRow

Step = Callable[[EventRow, Visit], "str | None"]

STEPS: tuple[Step, ...] = (
    derive_ids,
)


def new_row(event: TrackEvent, properties: str, visit: Visit) -> EventRow:
    """The row as the client sent it; server-derived columns start empty."""
    return EventRow(
        project_id=visit.project_id,
        timestamp=to_utc_naive(event.timestamp) if event.timestamp else visit.received_at,
        event_name=event.event,
        event_id=event.event_id,
        anonymous_id=event.anonymous_id or "",
        user_id=event.user_id,
        session_id=event.session_id or "",
        referrer=event.referrer,
        url=event.url,
        path=event.path,
        properties=properties,
    )


def run(
    items: list[tuple[EventRow, Visit]], steps: tuple[Step, ...] = STEPS
) -> tuple[list[EventRow], Counter[str]]:
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
