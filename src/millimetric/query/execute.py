"""Run a validated plan against the event store and shape the JSON answer of each read endpoint.

Blocking (they wait on the event store): the API calls these in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from millimetric.events.queries import ROW_FIELDS, UTC, RowsPlan, SourcesPlan, StatsPlan
from millimetric.query.cursor import CursorCodec
from millimetric.store.interface import EventStore

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


def events_page(store: EventStore, codec: CursorCodec, project_id: str, plan: RowsPlan) -> dict[str, Any]:
    page = store.rows(project_id, plan)
    next_cursor = codec.encode(project_id, plan, page.next) if page.next is not None else None
    answer = [dict(zip(ROW_FIELDS, (iso_utc(row[0]), *row[1:]))) for row in page.rows]
    return {"rows": answer, "next_cursor": next_cursor}


def stats(store: EventStore, project_id: str, plan: StatsPlan) -> dict[str, Any]:
    rows = store.stats(project_id, plan)
    names = [*plan.group_by, *(["bucket"] if plan.interval else []), "value"]
    answer = []
    for row in rows:
        item = dict(zip(names, row))
        if plan.interval:
            item["bucket"] = iso_local(item["bucket"], plan.tz)
        answer.append(item)
    return {"metric": plan.metric, "approximate": False, "rows": answer}


def sources(store: EventStore, project_id: str, plan: SourcesPlan) -> dict[str, Any]:
    answer = []
    for row in store.sources(project_id, plan):
        item: dict[str, Any] = {"source": row.source}
        if plan.breakdown == "source_medium":
            item["medium"] = row.medium
        item.update(events=row.events, uniques=row.uniques, paid_share=row.paid_events / row.events)
        answer.append(item)
    return {"breakdown": plan.breakdown, "rows": answer}
