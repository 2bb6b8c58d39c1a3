"""Query-string parameters of the read endpoints -> validated plans (SPEC section 5).

Every failure is a 400 `invalid_params` whose details name the parameter and the reason, or
`invalid_group_by` with the allowed columns. Nothing here touches the store.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from functools import cache
from typing import Mapping

from millimetric.errors import ApiError
from millimetric.events.queries import (
    BREAKDOWNS,
    FILTERS,
    GROUP_BY,
    INTERVALS,
    METRICS,
    UTC,
    Filters,
    RowsPlan,
    SourcesPlan,
    StatsPlan,
    TimeRange,
)

QUERY_LIMIT = (1, 1000, 100)  # min, max, default
STATS_LIMIT = (1, 1000, 100)
SOURCES_LIMIT = (1, 200, 50)
FILTER_MAX_LENGTH = 2048
_DIGITS = re.compile(r"^[0-9]{1,9}$")

Query = Mapping[str, str]


def invalid(param: str, reason: str) -> ApiError:
    return ApiError("invalid_params", {"param": param, "reason": reason})


def _instant(query: Query, name: str) -> dt.datetime:
    raw = query.get(name)
    if raw is None or not raw.strip():
        raise invalid(name, "required (ISO 8601 date-time)")
    try:
        value = dt.datetime.fromisoformat(raw.strip())
        if value.tzinfo is not None:  # naive means UTC
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except ValueError:
        raise invalid(name, "not an ISO 8601 date-time") from None
    except OverflowError:  # an offset pushes it past year 1 or 9999
        raise invalid(name, "out of range") from None
    return value


def time_range(query: Query, retention_days: int | None) -> TimeRange:
    """`from` inclusive, `to` exclusive; the span may not exceed the project's retention."""
    start, end = _instant(query, "from"), _instant(query, "to")
    if start >= end:
        raise invalid("to", "must be after from")
    if retention_days is not None and end - start > dt.timedelta(days=retention_days):
        raise invalid("from", f"range longer than the project's retention of {retention_days} days")
    return TimeRange(start, end)


def limit(query: Query, bounds: tuple[int, int, int]) -> int:
    low, high, default = bounds
    raw = query.get("limit")
    if raw is None:
        return default
    if not _DIGITS.match(raw.strip()) or not low <= int(raw) <= high:
        raise invalid("limit", f"must be an integer from {low} to {high}")
    return int(raw)


def _choice(query: Query, name: str, allowed: tuple[str, ...]) -> str | None:
    """The parameter's value from `allowed`, or None when absent."""
    raw = query.get(name)
    if raw is None:
        return None
    if raw not in allowed:
        raise ApiError("invalid_params", {"param": name, "reason": "unknown value", "allowed": list(allowed)})
    return raw


def filters(query: Query) -> Filters:
    values: dict[str, str] = {}
    for name in FILTERS:
        raw = query.get(name)
        if raw is None:
            continue
        if not raw or len(raw) > FILTER_MAX_LENGTH:
            raise invalid(name, f"must be 1 to {FILTER_MAX_LENGTH} characters")
        values[name] = raw
    return Filters(**values)


def group_by(query: Query) -> tuple[str, ...]:
    """Comma list from the allow-list, in the order given, duplicates dropped."""
    raw = query.get("group_by")
    if raw is None:
        return ()
    columns = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    rejected = [column for column in columns if column not in GROUP_BY]
    if rejected:
        raise ApiError("invalid_group_by", {"allowed": list(GROUP_BY), "rejected": rejected})
    return columns


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


def timezone(query: Query) -> str:
    raw = query.get("tz")
    if raw is None or raw == UTC:
        return UTC
    if raw not in _zones():
        raise invalid("tz", "not an IANA time zone name (e.g. Europe/Berlin)")
    return raw


def rows_plan(query: Query, retention_days: int | None) -> RowsPlan:
    """The first page's plan; a `cursor` is applied by `query.cursor`."""
    return RowsPlan(time_range(query, retention_days), filters(query), limit(query, QUERY_LIMIT))


def stats_plan(query: Query, retention_days: int | None) -> StatsPlan:
    return StatsPlan(
        range=time_range(query, retention_days),
        filters=filters(query),
        metric=_choice(query, "metric", METRICS) or "count",
        group_by=group_by(query),
        interval=_choice(query, "interval", INTERVALS),
        tz=timezone(query),
        limit=limit(query, STATS_LIMIT),
    )


def sources_plan(query: Query, retention_days: int | None) -> SourcesPlan:
    return SourcesPlan(
        range=time_range(query, retention_days),
        breakdown=_choice(query, "breakdown", BREAKDOWNS) or "source_medium",
        limit=limit(query, SOURCES_LIMIT),
    )
