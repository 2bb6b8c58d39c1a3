"""The query vocabulary and the validated read requests ("plans") every event store answers.

Plain data only: the HTTP layer builds plans from query strings (`millimetric.query.params`), each
backend maps every name below to its own query language, and a backend that lacks a mapping for
one of them fails at import (`require_mapping`), never silently ignores it.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable, NamedTuple

METRICS = ("count", "uniques", "sessions", "users")
INTERVALS = ("hour", "day", "week", "month")
GROUP_BY = (
    "event_name",
    "source",
    "medium",
    "campaign",
    "country",
    "device_type",
    "browser",
    "os",
    "path",
    "referrer_host",
)
BREAKDOWNS = ("source_medium", "source")
# Who a funnel follows: a visitor (anonymous_id), or a user stitched the way the user_id filter is.
FUNNEL_BY = ("anonymous", "user")
FILTERS = ("event", "source", "medium", "user_id", "anonymous_id", "country", "session_id")
# The fields of a raw row (GET /v1/query), in answer order.
ROW_FIELDS = (
    "timestamp",
    "event_id",
    "event_name",
    "anonymous_id",
    "user_id",
    "session_id",
    "source",
    "medium",
    "campaign",
    "source_confidence",
    "source_rule_id",
    "referrer",
    "url",
    "path",
    "country",
    "device_type",
    "browser",
    "os",
    "properties",
)
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


class RowsPlan(NamedTuple):
    """Raw rows, newest first. `after` is where the previous page ended: a position the store
    itself returned (`RowsPage.next`), opaque to every other layer."""

    range: TimeRange
    filters: Filters
    limit: int
    after: bytes | None = None


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


class FunnelPlan(NamedTuple):
    """Ordered steps (event names; one may repeat). A step counts for an actor when one of its
    events follows the previous step's event (later in time; at the same instant, stored later) no
    more than `window_seconds` after the event that started the chain (inclusive). Only events in
    `range` that pass `filters` take part."""

    range: TimeRange
    filters: Filters
    steps: tuple[str, ...]
    window_seconds: int
    by: str


class RowsPage(NamedTuple):
    """`rows`: tuples in ROW_FIELDS order, the timestamp as epoch microseconds (UTC), newest
    first. `next`: the position after the last row when more rows match, else None. Pages are
    stable: events stored after the first page never shift later ones."""

    rows: list[tuple]
    next: bytes | None


class SourceRow(NamedTuple):
    source: str
    medium: str | None  # None with breakdown=source
    events: int
    uniques: int
    paid_events: int


# A funnel answer: per step, in plan order, how many actors reached it (a non-increasing list).
FunnelCounts = list[int]

# A stats row: (*group values in plan.group_by order, [bucket start as epoch microseconds], value),
# sorted by bucket, then value descending, then the group values (nulls first).
StatRow = tuple

if len(set(GROUP_BY)) != len(GROUP_BY) or set(Filters._fields) != set(FILTERS):
    raise RuntimeError("the query vocabulary disagrees with itself")


def require_mapping(backend: str, kind: str, mapping: Iterable[str], vocabulary: Iterable[str]) -> None:
    """Raise at import when a backend maps other names than the vocabulary has."""
    missing = set(vocabulary) - set(mapping)
    extra = set(mapping) - set(vocabulary)
    if missing or extra:
        raise RuntimeError(
            f"{backend} maps {kind} {sorted(mapping)}: missing {sorted(missing)}, unknown {sorted(extra)}"
        )
