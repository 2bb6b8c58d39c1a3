"""A plain-Python event store over a list of `EventRow`s: the semantics every backend must match
(`tests/test_store_contract.py`). Written for obviousness, not speed; no database.

- rows: newest first by (timestamp, insertion order); a page cursor is (timestamp, seq, snapshot):
  rows stored after the first page of a walk never show up in (or shift) its later pages.
- stats: count(*), distinct anonymous_id / session_id / user_id (NULLs not counted) per group and
  bucket; buckets start at the wall-clock truncation in `tz` (weeks on Monday), mapped back to an
  instant; sorted by bucket, value descending, then group values ascending with NULLs first.
- the user_id filter stitches identities: the user's own events, plus every event of an
  anonymous_id that an `$identify` row (in any time range) linked to the user.
- sources: events, distinct anonymous_ids and events with medium 'paid' per source (and medium),
  most events first, then source, medium.
- funnel: per actor (anonymous_id, or with by=user each user the event belongs to under the user_id
  filter's stitching), events in (timestamp, insertion order); from every event of the first step,
  take the earliest later event of each next step no more than the window after that first event;
  an actor reached step k when some start gets that far.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import struct
import zoneinfo
from typing import Iterable, Iterator

from millimetric.events.model import IDENTIFY_EVENT, EventRow, derived_session_id
from millimetric.events.queries import (
    ROW_FIELDS,
    Filters,
    FunnelPlan,
    RowsPage,
    RowsPlan,
    SourceRow,
    SourcesPlan,
    StatsPlan,
    TimeRange,
)

EPOCH = dt.datetime(1970, 1, 1)
_CURSOR = struct.Struct(">qqq")  # timestamp_us, seq, snapshot seq
# The host of a referrer URL: scheme "://", optional userinfo, then a [bracketed] host or up to the
# first ':', '/', '?' or '#'; lower-cased; None when there is none (the DuckDB backend's regex).
_REFERRER_HOST = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(\[[^\]/?#]*\]|[^:/?#]*)")


def epoch_us(timestamp: dt.datetime) -> int:
    return (timestamp - EPOCH) // dt.timedelta(microseconds=1)


def session_id(row: EventRow) -> str:
    """The session id a read sees: as sent, or derived from anonymous_id and time."""
    return row.session_id if row.session_id is not None else derived_session_id(row.anonymous_id, row.timestamp)


def referrer_host(referrer: str | None) -> str | None:
    match = _REFERRER_HOST.match(referrer) if referrer is not None else None
    return (match.group(1).lower() or None) if match else None


@functools.lru_cache(maxsize=None)
def bucket_us(timestamp: dt.datetime, interval: str, tz: str) -> int:
    """Epoch microseconds of the start of the bucket holding `timestamp` (naive UTC) in `tz`."""
    zone = zoneinfo.ZoneInfo(tz)
    local = timestamp.replace(tzinfo=dt.timezone.utc).astimezone(zone).replace(tzinfo=None)  # wall clock
    if interval == "hour":  # the instant, less the minutes past the local hour: a repeated hour stays two
        return epoch_us(timestamp) - epoch_us(local) + epoch_us(local.replace(minute=0, second=0, microsecond=0))
    day = local.date()
    if interval == "week":
        day -= dt.timedelta(days=day.weekday())
    elif interval == "month":
        day = day.replace(day=1)
    elif interval != "day":
        raise ValueError(interval)
    midnight = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    return epoch_us(midnight.astimezone(dt.timezone.utc).replace(tzinfo=None))


def group_value(row: EventRow, column: str) -> str | None:
    return referrer_host(row.referrer) if column == "referrer_host" else getattr(row, column)


def row_tuple(row: EventRow) -> tuple:
    """The row as a read returns it: ROW_FIELDS order, timestamp in epoch microseconds."""
    values = {"timestamp": epoch_us(row.timestamp), "session_id": session_id(row)}
    return tuple(values[f] if f in values else getattr(row, f) for f in ROW_FIELDS)


def _nulls_first(value: str | None) -> tuple:
    return (value is not None, value or "")


class ReferenceStore:
    """The `EventStore` semantics, synchronously, in memory (append is a plain method here)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, EventRow]] = []  # (seq, row) in insertion order
        self._next_seq = 1
        self._ids: set[tuple[str, str]] = set()

    def append(self, rows: Iterable[EventRow]) -> list[int]:
        """Positions of the rows not stored: their (project_id, event_id) is stored already (every
        append here is within the de-duplication window) or came earlier in the same call."""
        duplicates = []
        for position, row in enumerate(rows):
            if row.event_id is not None and (row.project_id, row.event_id) in self._ids:
                duplicates.append(position)
                continue
            if row.event_id is not None:
                self._ids.add((row.project_id, row.event_id))
            self.events.append((self._next_seq, row))
            self._next_seq += 1
        return duplicates

    # Selection --------------------------------------------------------------------------------
    def _linked(self, project_id: str, user_id: str) -> set[str]:
        return {
            r.anonymous_id
            for _, r in self.events
            if r.project_id == project_id and r.event_name == IDENTIFY_EVENT and r.user_id == user_id
        }

    def selected(self, project_id: str, time_range: TimeRange, filters: Filters) -> Iterator[tuple[int, EventRow]]:
        linked = self._linked(project_id, filters.user_id) if filters.user_id is not None else set()
        plain = {
            "event": "event_name",
            "source": "source",
            "medium": "medium",
            "anonymous_id": "anonymous_id",
            "country": "country",
        }
        for seq, row in self.events:
            if row.project_id != project_id or not time_range.start <= row.timestamp < time_range.end:
                continue
            if any(
                getattr(filters, f) is not None and getattr(row, c) != getattr(filters, f) for f, c in plain.items()
            ):
                continue
            if filters.session_id is not None and session_id(row) != filters.session_id:
                continue
            if filters.user_id is not None and not (row.user_id == filters.user_id or row.anonymous_id in linked):
                continue
            yield seq, row

    # Reads ------------------------------------------------------------------------------------
    def rows(self, project_id: str, plan: RowsPlan) -> RowsPage:
        if plan.after is None:
            snapshot = self._next_seq - 1
            matching = list(self.selected(project_id, plan.range, plan.filters))
        else:
            after_us, after_seq, snapshot = _CURSOR.unpack(plan.after)
            matching = [
                (seq, r)
                for seq, r in self.selected(project_id, plan.range, plan.filters)
                if seq <= snapshot and (epoch_us(r.timestamp), seq) < (after_us, after_seq)
            ]
        matching.sort(key=lambda item: (item[1].timestamp, item[0]), reverse=True)
        page = matching[: plan.limit]
        more = len(matching) > plan.limit
        after = _CURSOR.pack(epoch_us(page[-1][1].timestamp), page[-1][0], snapshot) if more else None
        return RowsPage([row_tuple(r) for _, r in page], after)

    def all_rows(self, project_id: str, time_range: TimeRange, filters: Filters) -> list[tuple]:
        """Every matching row, newest first (what a full paging walk concatenates to)."""
        return self.rows(project_id, RowsPlan(time_range, filters, limit=10**9)).rows

    def stats(self, project_id: str, plan: StatsPlan) -> list[tuple]:
        groups: dict[tuple, list[EventRow]] = {}
        for _, row in self.selected(project_id, plan.range, plan.filters):
            key = tuple(group_value(row, c) for c in plan.group_by)
            if plan.interval is not None:
                key += (bucket_us(row.timestamp, plan.interval, plan.tz),)
            groups.setdefault(key, []).append(row)
        if not groups and not plan.group_by and plan.interval is None:
            groups[()] = []  # an aggregate without groups answers one row, even over nothing

        def value(members: list[EventRow]) -> int:
            if plan.metric == "count":
                return len(members)
            values = {"uniques": lambda r: r.anonymous_id, "sessions": session_id, "users": lambda r: r.user_id}
            return len({v for v in map(values[plan.metric], members) if v is not None})

        answer = [key + (value(members),) for key, members in groups.items()]
        n = len(plan.group_by)
        answer.sort(key=lambda r: (r[n] if plan.interval is not None else 0, -r[-1], *map(_nulls_first, r[:n])))
        return answer[: plan.limit]

    def sources(self, project_id: str, plan: SourcesPlan) -> list[SourceRow]:
        groups: dict[tuple, list[EventRow]] = {}
        for _, row in self.selected(project_id, plan.range, Filters()):
            medium = row.medium if plan.breakdown == "source_medium" else None
            groups.setdefault((row.source, medium), []).append(row)
        answer = [
            SourceRow(
                source,
                medium,
                len(members),
                len({r.anonymous_id for r in members}),
                sum(r.medium == "paid" for r in members),
            )
            for (source, medium), members in groups.items()
        ]
        answer.sort(key=lambda s: (-s.events, s.source, s.medium or ""))
        return answer[: plan.limit]

    def funnel(self, project_id: str, plan: FunnelPlan) -> list[int]:
        links: dict[str, set[str]] = {}
        for _, r in self.events:
            if r.project_id == project_id and r.event_name == IDENTIFY_EVENT and r.user_id is not None:
                links.setdefault(r.anonymous_id, set()).add(r.user_id)
        timelines: dict[str, list[tuple[dt.datetime, int, str]]] = {}
        for seq, row in self.selected(project_id, plan.range, plan.filters):
            if plan.by == "anonymous":
                actors = {row.anonymous_id}
            else:
                actors = links.get(row.anonymous_id, set()) | ({row.user_id} if row.user_id is not None else set())
            for actor in actors:
                timelines.setdefault(actor, []).append((row.timestamp, seq, row.event_name))
        window = dt.timedelta(seconds=plan.window_seconds)
        counts = [0] * len(plan.steps)
        for timeline in timelines.values():
            timeline.sort()
            furthest = 0
            for first, (start, _, name) in enumerate(timeline):
                if name != plan.steps[0]:
                    continue
                reached, at = 1, first
                for step in plan.steps[1:]:
                    at = next(
                        (
                            i
                            for i in range(at + 1, len(timeline))
                            if timeline[i][2] == step and timeline[i][0] - start <= window
                        ),
                        -1,
                    )
                    if at < 0:
                        break
                    reached += 1
                furthest = max(furthest, reached)
            for k in range(furthest):
                counts[k] += 1
        return counts

    # Deletes ----------------------------------------------------------------------------------
    def _delete(self, gone) -> int:
        before = len(self.events)
        self.events = [(seq, r) for seq, r in self.events if not gone(r)]
        return before - len(self.events)

    def delete_user(self, project_id: str, user_id: str) -> int:
        linked = self._linked(project_id, user_id)
        return self._delete(lambda r: r.project_id == project_id and (r.user_id == user_id or r.anonymous_id in linked))

    def delete_before(self, project_id: str, cutoff: dt.datetime) -> int:
        return self._delete(lambda r: r.project_id == project_id and r.timestamp < cutoff)
