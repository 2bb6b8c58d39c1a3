"""Pipeline step: events of a user who asked to be forgotten are accepted and dropped (counted)."""

from __future__ import annotations

from millimetric.events.model import EventRow
from millimetric.ingest.visit import Visit


def drop_forgotten(row: EventRow, visit: Visit) -> str | None:
    if row.user_id is not None and visit.is_forgotten(row.user_id):
        return "forgotten_user"
    return None
