"""Pipeline step: fill anonymous_id when the client sent none."""

from __future__ import annotations

import uuid

from millimetric.events.model import EventRow
from millimetric.ingest.visit import Visit


def derive_ids(row: EventRow, visit: Visit) -> str | None:
    """anonymous_id falls back to the daily visitor hash (or a fresh id when there is none).

    A session id the client did not send is `{anonymous_id}-{floor(unix_seconds/1800)}` (SPEC
    section 3): stateless, so the event store computes it when read (`store/duckdb_events.py`)."""
    if not row.anonymous_id:
        row.anonymous_id = row.ip_hash or uuid.uuid4().hex
    return None
