"""Pipeline step: fill anonymous_id and session_id when the client sent none."""

from __future__ import annotations

import datetime as dt
import uuid
from functools import lru_cache

from millimetric.ingest.visit import Visit
from millimetric.store.rows import EventRow

SESSION_SECONDS = 1800
_EPOCH = dt.datetime(1970, 1, 1)


def derive_ids(row: EventRow, visit: Visit) -> str | None:
    """anonymous_id falls back to the daily visitor hash (or a fresh id when there is none);
    session_id is `{anonymous_id}-{floor(unix_seconds/1800)}`, stateless and replayable."""
    if not row.anonymous_id:
        row.anonymous_id = row.ip_hash or uuid.uuid4().hex
    if not row.session_id:
        row.session_id = f"{row.anonymous_id}-{_session_window(row.timestamp)}"
    return None


@lru_cache(maxsize=4096)  # the events of a batch without timestamps share their request's time
def _session_window(timestamp: dt.datetime) -> int:
    return int((timestamp - _EPOCH).total_seconds()) // SESSION_SECONDS
