"""The event-store interface: every write, read and delete the API, the CLI and the chores make.

Backends (`millimetric.store.duckdb` today) implement `EventStore`; `millimetric.store.factory`
picks one from the settings. Nothing above `store/` names a backend. One contract test suite
(`tests/test_store_contract.py`) holds every backend to the same answers.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import pyarrow as pa

from millimetric.events.model import COLUMNS, EventRow
from millimetric.events.queries import (
    FunnelCounts,
    FunnelPlan,
    RowsPage,
    RowsPlan,
    SourceRow,
    SourcesPlan,
    StatRow,
    StatsPlan,
    TimeRange,
)

# What `EventStore.export` yields: every column of `EventRow`, in its order, as stored (naive UTC
# microsecond timestamps; `session_id` the event's session, sent or derived). The same shape
# `millimetric export` writes and `millimetric import --export` appends back.
EXPORT_SCHEMA = pa.schema([(name, pa.timestamp("us") if name == "timestamp" else pa.string()) for name in COLUMNS])
EXPORT_BATCH_ROWS = 50_000

# How long an event id keeps a repeat of it out of the store.
DEDUP_WINDOW = dt.timedelta(days=7)


class StoreError(RuntimeError):
    """The store refused an operation or cannot be reached (the API answers 502)."""


class StoreTimeout(StoreError):
    """The store did not answer in time: it is wedged or overloaded (ingest answers 503)."""


class StoreOverloaded(StoreError):
    """The store refuses new events until it has written the ones it holds (ingest answers 503)."""


class EventStore(Protocol):
    """Blocking calls, except `append`: call them off the event loop. Each has a timeout and
    raises `StoreError` (or a subclass) instead of hanging."""

    async def append(self, rows: Sequence[EventRow]) -> list[int]:
        """Return once every row is durable (a crash after it loses none). One call at a time.

        De-duplication: a row whose (project_id, event_id) the store accepted within the last
        `DEDUP_WINDOW` (from any process, across restarts), or that repeats an earlier row of
        the same call, is not stored; the positions of such rows in `rows` are returned (in
        order; empty when every row was stored). Rows without an event id are always stored."""

    def rows(self, project_id: str, plan: RowsPlan) -> RowsPage:
        """Raw rows newest first, `plan.limit` at most, after `plan.after` when set."""

    def stats(self, project_id: str, plan: StatsPlan) -> list[StatRow]:
        """The metric per group (and bucket); see `StatRow` for order."""

    def sources(self, project_id: str, plan: SourcesPlan) -> list[SourceRow]:
        """Events, unique visitors and paid events per source (and medium), most events first."""

    def funnel(self, project_id: str, plan: FunnelPlan) -> FunnelCounts:
        """How many actors reached each step, in step order; see `FunnelPlan` for the rules."""

    def delete_user(self, project_id: str, user_id: str) -> int:
        """Delete the user's events, their `$identify` rows and every event of an anonymous_id an
        identify linked to them; returns how many rows went. Every event acknowledged before the
        call is covered."""

    def delete_before(self, project_id: str, cutoff: dt.datetime) -> int:
        """Delete the project's events older than `cutoff` (naive UTC); returns how many."""

    def export(
        self, project_id: str, time_range: TimeRange, batch_rows: int = EXPORT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        """Every stored event of the project in `time_range`, oldest first, in batches of at most
        `batch_rows` rows of `EXPORT_SCHEMA`: memory stays bounded whatever the project's size.
        Events appended while it runs may or may not be included."""

    def ping(self) -> None:
        """Raise unless the store answers within a few seconds."""

    def backup(self, directory: Path) -> int:
        """Copy every stored event, as one consistent snapshot taken while writes go on, into
        `directory` the way an embedded data directory holds them; returns how many."""

    def status(self) -> dict[str, Any]:
        """What an operator wants to know: backend, format version, events waiting to be written,
        quarantined data (`millimetric doctor`, `/healthz`). `GET /metrics` reads the spool from
        `unflushed_events`, `unflushed_bytes` and `unflushed_seconds` (age of the oldest)."""

    def close(self) -> None:
        """Make every acknowledged event durable in the store proper and release it."""
