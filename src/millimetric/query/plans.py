"""Validated read requests ("plans"): what the store is asked, with every value already checked.

Plain data only, so an event store (DuckDB today, ClickHouse later) can import these types without
depending on the HTTP layer.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

METRICS = ("count", "uniques", "sessions", "users")
INTERVALS = ("hour", "day", "week", "month")
GROUP_BY = (
    "event_name", "source", "medium", "campaign", "country", "device_type", "browser", "os", "path", "referrer_host",
)
BREAKDOWNS = ("source_medium", "source")
FILTERS = ("event", "source", "medium", "user_id", "anonymous_id", "country", "session_id")
UTC = "UTC"


class TimeRange(NamedTuple):
    start: dt.datetime  # naive UTC, inclusive
    end: dt.datetime  # naive UTC, exclusive


class Filters(NamedTuple):
    """Equality filters; None means "not filtered". `user_id` also matches identify-linked events."""

    event: str | None = None
    source: str | None = None
    medium: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    country: str | None = None
    session_id: str | None = None


class Position(NamedTuple):
    """Where a page of raw rows ended: rows sort by (timestamp, seq), newest first."""

    timestamp_us: int
    seq: int


class RowsPlan(NamedTuple):
    range: TimeRange
    filters: Filters
    limit: int
    snapshot_seq: int | None = None  # None on the first page: the store pins the newest seq
    after: Position | None = None


class StatsPlan(NamedTuple):
    range: TimeRange
    filters: Filters
    metric: str
    group_by: tuple[str, ...]
    interval: str | None
    tz: str
    limit: int


class SourcesPlan(NamedTuple):
    range: TimeRange
    breakdown: str
    limit: int
