"""The read statements of the ClickHouse event store: one statement per request, parameterised
server-side (`{name:Type}`), filtered by project first and then by time (the sorting key).

Column names and expressions come only from the fixed fragments below, chosen by allow-listed plan
values; every user value is a bound parameter. The answers equal the embedded store's
(`tests/test_store_contract.py`): exact distinct counts (`uniqExact`), the same bucket starts, the
same order.
"""

from __future__ import annotations

import datetime as dt
import struct
from typing import Any, Callable

from millimetric.events.model import IDENTIFY_EVENT
from millimetric.events.queries import (
    BREAKDOWNS,
    FILTERS,
    GROUP_BY,
    INTERVALS,
    METRICS,
    ROW_FIELDS,
    Filters,
    RowsPage,
    RowsPlan,
    SourceRow,
    SourcesPlan,
    StatRow,
    StatsPlan,
    TimeRange,
    require_mapping,
)

# Run one statement with its parameters; returns its rows as tuples.
Query = Callable[[str, dict[str, Any]], list[tuple]]

_REFERRER_HOST = (
    r"nullIf(lower(extract(referrer, "
    r"'^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(\\[[^\\]/?#]*\\]|[^:/?#]*)')), '')"
)
GROUP_SQL: dict[str, str] = {
    "event_name": "toString(event_name)",
    "source": "toString(source)",
    "medium": "toString(medium)",
    "campaign": "toNullable(toString(campaign))",
    "country": "toString(country)",
    "device_type": "toString(device_type)",
    "browser": "toString(browser)",
    "os": "toString(os)",
    "path": "path",
    "referrer_host": _REFERRER_HOST,
}
METRIC_SQL: dict[str, str] = {
    "count": "count()",
    "uniques": "uniqExact(anonymous_id)",
    "sessions": "uniqExact(session_id)",
    "users": "uniqExact(user_id)",
}
# The bucket's start instant in `tz` (weeks on Monday), as a DateTime of that zone.
_BUCKET_SQL = {
    "hour": "toStartOfHour(timestamp, {tz:String})",
    "day": "toStartOfDay(timestamp, {tz:String})",
    "week": "toDateTime(toMonday(timestamp, {tz:String}), {tz:String})",
    "month": "toDateTime(toStartOfMonth(timestamp, {tz:String}), {tz:String})",
}
_FILTER_SQL = {
    "event": "event_name = {event:String}",
    "source": "source = {source:String}",
    "medium": "medium = {medium:String}",
    "anonymous_id": "anonymous_id = {anonymous_id:String}",
    "country": "country = {country:String}",
    "session_id": "session_id = {session_id:String}",
}
_STITCHED_FILTER = "user_id"  # applied through `_STITCHED` below, not a plain equality
require_mapping("ClickHouse", "group_by columns", GROUP_SQL, GROUP_BY)
require_mapping("ClickHouse", "metrics", METRIC_SQL, METRICS)
require_mapping("ClickHouse", "intervals", _BUCKET_SQL, INTERVALS)
require_mapping("ClickHouse", "filters", [*_FILTER_SQL, _STITCHED_FILTER], FILTERS)
require_mapping("ClickHouse", "breakdowns", ["source_medium", "source"], BREAKDOWNS)

PROJECT = "project_id = {project_id:String}"
_IN_RANGE = f"{PROJECT} AND timestamp >= {{start:DateTime64(6, 'UTC')}} AND timestamp < {{end:DateTime64(6, 'UTC')}}"
# The user's own events, plus every event whose anonymous_id an `$identify` linked to the user (in
# any time range).
LINKED = f"""SELECT anonymous_id FROM events
    WHERE {PROJECT} AND event_name = {{identify:String}} AND user_id = {{user_id:String}}"""
_STITCHED = f"(user_id = {{user_id:String}} OR anonymous_id IN ({LINKED}))"


def timestamp_param(value: dt.datetime) -> str:
    """A naive UTC datetime as a DateTime64(6) parameter (microseconds kept)."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def selection(project_id: str, time_range: TimeRange, filters: Filters) -> tuple[str, dict[str, Any]]:
    """The WHERE clause of a range and filters (project first, then time: the sorting key) and its
    parameters; every read of events selects through it, so all reads agree on what a filter means."""
    params: dict[str, Any] = {
        "project_id": project_id,
        "start": timestamp_param(time_range.start),
        "end": timestamp_param(time_range.end),
    }
    conditions = [_IN_RANGE]
    for name, condition in _FILTER_SQL.items():
        value = getattr(filters, name)
        if value is not None:
            conditions.append(condition)
            params[name] = value
    if filters.user_id is not None:
        conditions.append(_STITCHED)
        params.update(user_id=filters.user_id, identify=IDENTIFY_EVENT)
    return " AND ".join(conditions), params


# A page position: the instant the walk began (rows inserted later are not part of it), then
# where the previous page ended: (timestamp, node, seq), the order of rows with equal timestamps.
_POSITION = struct.Struct(">BqqQ")
_POSITION_VERSION = 1


def _position(snapshot_us: int, timestamp_us: int, node: str, seq: int) -> bytes:
    return _POSITION.pack(_POSITION_VERSION, snapshot_us, timestamp_us, seq) + node.encode()


def _read_position(position: bytes) -> tuple[int, int, str, int]:
    if len(position) < _POSITION.size or position[0] != _POSITION_VERSION:
        raise ValueError("not a page position of this event store")
    _, snapshot_us, timestamp_us, seq = _POSITION.unpack_from(position)
    return snapshot_us, timestamp_us, position[_POSITION.size :].decode(), seq


_ROW_COLUMNS = ", ".join(
    "toString(" + name + ")" if name in ("event_name", "source", "medium", "country") else name
    for name in ROW_FIELDS[1:]
)


def select_rows(query: Query, project_id: str, plan: RowsPlan) -> RowsPage:
    """Up to `limit` rows, newest first by (timestamp, node, seq), and the position after the last.

    The first page takes the server's clock as the walk's snapshot; later pages see only rows
    inserted until then, so events stored during a walk never shift its pages.
    """
    where, params = selection(project_id, plan.range, plan.filters)
    params["limit"] = plan.limit + 1  # the extra row says whether a next page exists
    if plan.after is None:
        snapshot = "toUnixTimestamp64Micro(now64(6))"
    else:
        snapshot_us, after_us, after_node, after_seq = _read_position(plan.after)
        snapshot = "{snapshot:Int64}"
        where += (
            " AND inserted_at <= fromUnixTimestamp64Micro({snapshot:Int64}, 'UTC')"
            " AND timestamp <= fromUnixTimestamp64Micro({after_us:Int64}, 'UTC')"  # the sorting key prunes parts
            " AND (timestamp, node, seq) < (fromUnixTimestamp64Micro({after_us:Int64}, 'UTC'),"
            " {after_node:String}, {after_seq:UInt64})"
        )
        params.update(snapshot=snapshot_us, after_us=after_us, after_node=after_node, after_seq=after_seq)
    sql = f"""SELECT toUnixTimestamp64Micro(timestamp), {_ROW_COLUMNS}, toString(node), seq, {snapshot}
        FROM events WHERE {where}
        ORDER BY timestamp DESC, node DESC, seq DESC
        LIMIT {{limit:UInt32}}"""
    result = query(sql, params)
    page = result[: plan.limit]
    position = None
    if len(result) > plan.limit:
        last = page[-1]
        position = _position(last[-1], last[0], last[-3], last[-2])
    return RowsPage([tuple(row[:-3]) for row in page], position)


def select_stats(query: Query, project_id: str, plan: StatsPlan) -> list[StatRow]:
    """Rows of (*group values, [bucket_us], value), sorted by bucket, value desc, then groups."""
    where, params = selection(project_id, plan.range, plan.filters)
    params["limit"] = plan.limit
    selected = [f"{GROUP_SQL[column]} AS g{i}" for i, column in enumerate(plan.group_by)]
    groups = [f"g{i}" for i in range(len(plan.group_by))]
    order = ["value DESC"] + [f"{g} ASC NULLS FIRST" for g in groups]
    if plan.interval is not None:
        selected.append(f"toInt64(toUnixTimestamp({_BUCKET_SQL[plan.interval]})) * 1000000 AS bucket")
        groups.append("bucket")
        order.insert(0, "bucket ASC")
        params["tz"] = plan.tz
    selected.append(f"{METRIC_SQL[plan.metric]} AS value")
    group_clause = f"GROUP BY {', '.join(groups)}" if groups else ""
    sql = f"""SELECT {", ".join(selected)}
        FROM events WHERE {where}
        {group_clause}
        ORDER BY {", ".join(order)}
        LIMIT {{limit:UInt32}}"""
    return [tuple(row) for row in query(sql, params)]


def rolled_up_days(time_range: TimeRange) -> tuple[dt.date, dt.date]:
    """[first, end) of the whole UTC days inside the range, read from the rollup (first == end:
    none)."""
    first = time_range.start.date()
    if time_range.start != dt.datetime.combine(first, dt.time()):
        first += dt.timedelta(days=1)
    end = max(first, time_range.end.date())
    return first, end


def select_sources(query: Query, project_id: str, plan: SourcesPlan) -> list[SourceRow]:
    """Events, visitors and paid events per source (and medium), most events first.

    Whole UTC days come from `source_days` (ClickHouse keeps it at every insert); the partial days
    at the range's ends from the events. Visitor sets of both are merged (`uniqExactMerge`), so a
    visitor seen on many days counts once.
    """
    first_day, end_day = rolled_up_days(plan.range)
    groups = "source, medium" if plan.breakdown == "source_medium" else "source"
    sql = f"""SELECT {groups}, sum(events) AS n, uniqExactMerge(visitors), sumIf(events, medium = 'paid')
        FROM (
            SELECT toString(source) AS source, toString(medium) AS medium, events, visitors FROM source_days
            WHERE {PROJECT} AND day >= {{first_day:Date}} AND day < {{end_day:Date}}
            UNION ALL
            SELECT toString(source) AS source, toString(medium) AS medium, count() AS events,
                uniqExactState(anonymous_id) AS visitors
            FROM events
            WHERE {_IN_RANGE} AND (timestamp < {{first_day:Date}} OR timestamp >= {{end_day:Date}})
            GROUP BY source, medium
        )
        GROUP BY {groups}
        ORDER BY n DESC, {groups}
        LIMIT {{limit:UInt32}}"""
    params = {
        "project_id": project_id,
        "start": timestamp_param(plan.range.start),
        "end": timestamp_param(plan.range.end),
        "first_day": first_day.isoformat(),
        "end_day": end_day.isoformat(),
        "limit": plan.limit,
    }
    rows = query(sql, params)
    if plan.breakdown == "source_medium":
        return [SourceRow(*row) for row in rows]
    return [SourceRow(source, None, events, uniques, paid) for source, events, uniques, paid in rows]
