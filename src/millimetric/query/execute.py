"""Run a validated plan against the event store and shape the JSON answer of each read endpoint.

Blocking (they wait on the store process): the API calls these in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from millimetric.query.cursor import CursorCodec
from millimetric.query.plans import UTC, Position, RowsPlan, SourcesPlan, StatsPlan
from millimetric.store import duckdb_reads
from millimetric.store.process import EventStoreProcess

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def iso_utc(timestamp_us: int) -> str:
    """`2024-05-01T12:00:00.000Z`, as JavaScript's toISOString() writes it (microseconds if any)."""
    value = _EPOCH + dt.timedelta(microseconds=timestamp_us)
    spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    return value.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def iso_local(timestamp_us: int, tz: str) -> str:
    """A bucket start as ISO 8601 with the zone's offset at that instant (`Z` for UTC)."""
    value = _EPOCH + dt.timedelta(microseconds=timestamp_us)
    if tz == UTC:
        return value.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    return value.astimezone(zoneinfo.ZoneInfo(tz)).isoformat(timespec="seconds")


def events_page(store: EventStoreProcess, codec: CursorCodec, project_id: str, plan: RowsPlan) -> dict[str, Any]:
    rows, snapshot = store.rows(project_id, plan)
    page = rows[: plan.limit]
    next_cursor = None
    if len(rows) > plan.limit:
        last = page[-1]
        next_cursor = codec.encode(project_id, plan, snapshot, Position(last[0], last[1]))
    fields = duckdb_reads.ROW_FIELDS
    answer = [dict(zip(fields, (iso_utc(row[0]), *row[2:]))) for row in page]
    return {"rows": answer, "next_cursor": next_cursor}


def stats(store: EventStoreProcess, project_id: str, plan: StatsPlan) -> dict[str, Any]:
    rows = store.stats(project_id, plan)
    names = [*plan.group_by, *(["bucket"] if plan.interval else []), "value"]
    answer = []
    for row in rows:
        item = dict(zip(names, row))
        if plan.interval:
            item["bucket"] = iso_local(item["bucket"], plan.tz)
        answer.append(item)
    return {"metric": plan.metric, "approximate": False, "rows": answer}


def sources(store: EventStoreProcess, project_id: str, plan: SourcesPlan) -> dict[str, Any]:
    rows = store.sources(project_id, plan)
    answer = []
    for row in rows:
        *groups, events, uniques, paid = row
        item: dict[str, Any] = {"source": groups[0]}
        if plan.breakdown == "source_medium":
            item["medium"] = groups[1]
        item.update(events=events, uniques=uniques, paid_share=paid / events)
        answer.append(item)
    return {"breakdown": plan.breakdown, "rows": answer}
