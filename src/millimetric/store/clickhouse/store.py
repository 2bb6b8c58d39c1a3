"""`ClickHouseEventStore`: events in ClickHouse, acknowledged from this node's spool.

An append returns once its rows are in the spool on this node's disk (a 202 means that); a
shipper thread sends spooled rows to ClickHouse in batches, each with an idempotent insert token,
in order. ClickHouse down or slow: the spool grows up to `spool_max_bytes`, then appends are
refused (`StoreOverloaded`: 503 overloaded) until it drains. A node starts without ClickHouse;
the schema is created or migrated by the first connection that succeeds.

Reads and deletes first wait (briefly) for what this node acknowledged before them to be
shipped, so a node reads its own writes at once; other nodes' events arrive within a shipping
interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import unquote, urlsplit

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, OperationalError

from millimetric.events.model import IDENTIFY_EVENT, EventRow
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
from millimetric.operations import metrics
from millimetric.store.clickhouse import dedup, funnel, reads, schema
from millimetric.store.clickhouse.spool import ShipState, Spool, claim
from millimetric.store.interface import StoreError, StoreOverloaded, StoreTimeout
from millimetric.store.journal import Frame
from millimetric.store.rows import PAYLOAD_FORMAT, decode_rows, encode_rows

log = logging.getLogger("millimetric.store")
# The HTTP driver logs a warning with a traceback for every failed request; the store says once
# that ClickHouse is unreachable and once that it ships again, and raises the error to its caller.
logging.getLogger("clickhouse_connect.driver._backend.http_sync").setLevel(logging.ERROR)

# A batch waits this long for more rows (fewer, larger inserts: ClickHouse merges parts), unless
# it is full or a read or delete waits for it.
SHIP_SECONDS = 0.2
BATCH_EVENTS = 200_000
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0)
# A read waits at most this long for this node's acknowledged events to be shipped, then reads
# what ClickHouse has.
SYNC_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class Timeouts:
    connect: float = 3.0
    ping: float = 2.0
    read: float = 60.0
    ship: float = 30.0
    delete: float = 3600.0


@dataclasses.dataclass(frozen=True)
class Target:
    """Where ClickHouse is: `http[s]://user:password@host:8123/database`."""

    host: str
    port: int
    secure: bool
    username: str
    password: str
    database: str

    @classmethod
    def parse(cls, url: str) -> "Target":
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreError(
                f"MILLIMETRIC_CLICKHOUSE_URL must look like http[s]://user:password@host:8123/database, not {url!r}"
            )
        database = parts.path.strip("/") or "default"
        if not database.replace("_", "").isalnum():
            raise StoreError(f"ClickHouse database name {database!r}: use letters, digits and _ only")
        return cls(
            host=parts.hostname,
            port=parts.port or (8443 if parts.scheme == "https" else 8123),
            secure=parts.scheme == "https",
            username=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            database=database,
        )

    def describe(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}/{self.database}"


_ROWS_SCHEMA_RENAMES = {"session_id": "session_sent"}
_LOW_CARDINALITY = {
    "project_id",
    "event_name",
    "source",
    "medium",
    "campaign",
    "source_confidence",
    "source_rule_id",
    "country",
    "device_type",
    "browser",
    "os",
}


class ClickHouseEventStore:
    def __init__(
        self,
        url: str,
        spool_root: Path,
        spool_max_bytes: int,
        timeouts: Timeouts = Timeouts(),
        redis_url: str | None = None,
        redis_prefix: str = "",
    ) -> None:
        self.target = Target.parse(url)
        self._timeouts = timeouts
        self._max_bytes = spool_max_bytes
        directory, self._lock_fd = claim(spool_root)
        self._spool = Spool(directory)
        self._cond = threading.Condition(threading.Lock())
        # Frames not in ClickHouse yet, oldest first; the journal files holding only such frames.
        self._pending: list[Frame] = []
        self._pending_events = 0
        self._pending_bytes = 0
        self._oldest = 0.0  # when the rows of the next batch started waiting
        self._acknowledged_at: list[float] = []  # per pending frame
        self._urgent = 0  # callers waiting for the spool to drain
        self._shipped = self._spool.state.shipped
        self._last_error: str | None = None
        self._stopping = False
        self._clients: dict[str, Client] = {}
        self._client_lock = threading.Lock()
        self._ready = False
        frames = [frame for frame in self._spool.journal.replay() if frame.first_seq > self._shipped]
        self._next_seq = max(self._shipped, frames[-1].next_seq - 1 if frames else 0) + 1
        if frames:
            log.info(
                "spool %s: %d events from seq %d wait for ClickHouse",
                directory,
                sum(f.events for f in frames),
                frames[0].first_seq,
            )
            self._queue(frames)
        self._files = self._spool.journal.take_closed()
        self._dedup: dedup.Deduplicator = (
            dedup.RedisClaims(redis_url, redis_prefix, self._spool.node)
            if redis_url
            else dedup.SeenOnThisNode(self._read, self._pending_frames)
        )
        self._shipper = threading.Thread(target=self._ship_loop, name="millimetric-clickhouse-shipper", daemon=True)
        self._shipper.start()

    # connections ----------------------------------------------------------------------------
    def _client(self, role: str, timeout: float) -> Client:
        """One client per role (shipping, reads, pings): a slow insert holds up no read."""
        with self._client_lock:
            client = self._clients.get(role)
            if client is None:
                client = self._connect(self.target.database if self._ready else None, timeout)
                if not self._ready:
                    self._prepare(client)
                    client.close()
                    client = self._connect(self.target.database, timeout)
                self._clients[role] = client
            return client

    def _connect(self, database: str | None, timeout: float) -> Client:
        target = self.target
        try:
            return clickhouse_connect.get_client(
                host=target.host,
                port=target.port,
                secure=target.secure,
                username=target.username,
                password=target.password,
                database=database,
                compress="lz4",
                connect_timeout=self._timeouts.connect,
                send_receive_timeout=timeout,
                query_retries=0,
                autogenerate_session_id=False,
            )
        except ClickHouseError as exc:
            raise StoreError(f"ClickHouse at {target.describe()} is unreachable: {exc}") from exc

    def _prepare(self, client: Client) -> None:
        """Create the database and apply missing migrations (the first connection of a process)."""
        client.command(f"CREATE DATABASE IF NOT EXISTS `{self.target.database}`")
        scoped = self._connect(self.target.database, self._timeouts.delete)
        try:
            scoped.command(schema.FORMAT_DDL)
            found = int(scoped.query("SELECT max(version) FROM millimetric_format").result_rows[0][0])
            schema.migrate(lambda sql: scoped.command(sql), found, self.target.describe())
        finally:
            scoped.close()
        self._ready = True

    def _drop_client(self, role: str) -> None:
        with self._client_lock:
            client = self._clients.pop(role, None)
        if client is not None:
            client.close()

    def _query(
        self, role: str, timeout: float, sql: str, params: dict[str, Any], settings: dict | None = None
    ) -> list[tuple]:
        try:
            return [
                tuple(row)
                for row in self._client(role, timeout).query(sql, parameters=params, settings=settings).result_rows
            ]
        except DatabaseError as exc:
            raise StoreError(f"ClickHouse refused a query: {exc}") from exc
        except OperationalError as exc:
            self._drop_client(role)
            if "timed out" in str(exc).lower() or "timeout" in str(exc).lower():
                raise StoreTimeout(f"ClickHouse did not answer within {timeout:g} s") from exc
            raise StoreError(f"ClickHouse at {self.target.describe()} is unreachable: {exc}") from exc

    def _read(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        return self._query("read", self._timeouts.read, sql, params)

    # writes ---------------------------------------------------------------------------------
    async def append(self, rows: Sequence[EventRow]) -> list[int]:
        return await asyncio.to_thread(self._admit, list(rows)) if rows else []

    def _admit(self, rows: list[EventRow]) -> list[int]:
        """Spool the rows that are no duplicates (`dedup`); returns the positions of the others."""
        with self._dedup.admit(rows) as duplicates:
            if duplicates:
                skipped = set(duplicates)
                rows = [row for position, row in enumerate(rows) if position not in skipped]
            if rows:
                self._spool_frame(encode_rows(rows), len(rows))
        return duplicates

    def _pending_frames(self) -> list[Frame]:
        with self._cond:
            return list(self._pending)

    def _spool_frame(self, payload: bytes, count: int) -> None:
        """Durable on return: the rows are in this node's spool."""
        with self._cond:
            if self._pending_bytes + len(payload) > self._max_bytes:
                raise StoreOverloaded(
                    f"the spool holds {self._pending_bytes} bytes ({self._pending_events} events) ClickHouse "
                    f"has not taken yet ({self._last_error or 'shipping'}); limit {self._max_bytes}"
                )
            frame = Frame(self._next_seq, count, payload, PAYLOAD_FORMAT)
            self._next_seq = frame.next_seq  # taken even if the write fails: a seq is never used twice
            self._spool.journal.write(frame)
            self._queue([frame])
            self._cond.notify_all()

    def _queue(self, frames: list[Frame]) -> None:
        if not self._pending:
            self._oldest = time.monotonic()
        self._pending.extend(frames)
        self._acknowledged_at.extend(time.monotonic() for _ in frames)
        self._pending_events += sum(frame.events for frame in frames)
        self._pending_bytes += sum(len(frame.payload) for frame in frames)

    def _ship_loop(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._stopping and not self._ship_due():
                    self._cond.wait(SHIP_SECONDS if self._pending else 1.0)
                if self._stopping:
                    return
            try:
                self._ship_pending()
            except Exception as exc:  # ClickHouse down, slow or refusing: keep the spool, try again
                if self._last_error is None:
                    log.warning("ClickHouse at %s: cannot ship the spool (%s); retrying", self.target.describe(), exc)
                self._last_error = f"{type(exc).__name__}: {exc}"
                self._drop_client("ship")
                with self._cond:
                    self._cond.wait(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1
            else:
                if self._last_error is not None:
                    log.warning("ClickHouse at %s: shipping again", self.target.describe())
                self._last_error, failures = None, 0

    def _ship_due(self) -> bool:
        if not self._pending:
            return False
        return (
            self._urgent > 0 or self._pending_events >= BATCH_EVENTS or time.monotonic() - self._oldest >= SHIP_SECONDS
        )

    def _ship_pending(self) -> None:
        """Ship every pending frame, in batches, in order; then delete the journal files."""
        with self._cond:
            self._spool.journal.rotate()
            frames = list(self._pending)
            files = self._files + self._spool.journal.take_closed()
            self._files = []
        try:
            while frames:
                batch = self._next_batch(frames)
                self._ship(batch)
                frames = frames[len(batch) :]
                with self._cond:
                    del self._pending[: len(batch)]
                    del self._acknowledged_at[: len(batch)]
                    self._pending_events -= sum(frame.events for frame in batch)
                    self._pending_bytes -= sum(len(frame.payload) for frame in batch)
                    self._oldest = time.monotonic()
                    self._cond.notify_all()
        except BaseException:
            with self._cond:
                self._files = files + self._files
            raise
        self._spool.journal.discard(files)

    def _next_batch(self, frames: list[Frame]) -> list[Frame]:
        """The frames of the next insert: the batch in flight when a try failed (or the process
        died), exactly as it was, else up to BATCH_EVENTS events."""
        inflight = self._spool.state.inflight
        if inflight is not None:
            batch = [frame for frame in frames if frame.next_seq - 1 <= inflight[1]]
            if batch and batch[0].first_seq == inflight[0] and batch[-1].next_seq - 1 == inflight[1]:
                return batch
            log.error("spool %s: the batch in flight (%s) no longer matches the spool", self._spool.directory, inflight)
        batch, events = [], 0
        for frame in frames:
            if batch and events + frame.events > BATCH_EVENTS:
                break
            batch.append(frame)
            events += frame.events
        return batch

    def _ship(self, batch: list[Frame]) -> None:
        first, last = batch[0].first_seq, batch[-1].next_seq - 1
        if self._spool.state.inflight != (first, last):
            self._spool.save_state(ShipState(self._shipped, (first, last)))
        table = self._arrow(batch)
        started = time.perf_counter()
        client = self._client("ship", self._timeouts.ship)
        client.insert_arrow("events", table, settings={"insert_deduplication_token": self._spool.token(batch)})
        metrics.CLICKHOUSE_INSERT_SECONDS.observe(time.perf_counter() - started)
        self._spool.save_state(ShipState(last, None))
        with self._cond:
            self._shipped = last

    def _arrow(self, frames: list[Frame]) -> pa.Table:
        rows = decode_rows((frame.payload, frame.payload_format) for frame in frames)
        rows = rows.rename_columns([_ROWS_SCHEMA_RENAMES.get(name, name) for name in rows.column_names])
        seqs = pa.array([seq for frame in frames for seq in range(frame.first_seq, frame.next_seq)], pa.uint64())
        if len(seqs) != rows.num_rows:
            raise ValueError(f"spool frames announce {len(seqs)} rows but hold {rows.num_rows}")
        node = pa.repeat(pa.scalar(self._spool.node), rows.num_rows)
        return rows.append_column("node", node).append_column("seq", seqs)

    def sync(self, timeout: float = SYNC_SECONDS) -> bool:
        """Wait until every event this node acknowledged before the call is in ClickHouse;
        False if that took longer than `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._next_seq - 1
            self._urgent += 1
            self._cond.notify_all()
            try:
                while self._shipped < target:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
            finally:
                self._urgent -= 1
        return True

    # reads ----------------------------------------------------------------------------------
    def rows(self, project_id: str, plan: RowsPlan) -> RowsPage:
        self.sync()
        return reads.select_rows(self._read, project_id, plan)

    def stats(self, project_id: str, plan: StatsPlan) -> list[StatRow]:
        self.sync()
        return reads.select_stats(self._read, project_id, plan)

    def sources(self, project_id: str, plan: SourcesPlan) -> list[SourceRow]:
        self.sync()
        return reads.select_sources(self._read, project_id, plan)

    def funnel(self, project_id: str, plan: FunnelPlan) -> FunnelCounts:
        self.sync()
        return funnel.select_funnel(self._read, project_id, plan)

    # deletes --------------------------------------------------------------------------------
    def delete_user(self, project_id: str, user_id: str) -> int:
        """The user's events, their identifies and the events of every anonymous_id those linked."""
        self._sync_for_delete()
        params = {"project_id": project_id, "user_id": user_id, "identify": IDENTIFY_EVENT}
        linked = [anon for (anon,) in self._query("write", self._timeouts.delete, reads.LINKED, params)]
        condition = f"{reads.PROJECT} AND (user_id = {{user_id:String}} OR anonymous_id IN {{linked:Array(String)}})"
        return self._delete(condition, {**params, "linked": linked})

    def delete_before(self, project_id: str, cutoff: dt.datetime) -> int:
        self._sync_for_delete()
        condition = f"{reads.PROJECT} AND timestamp < {{cutoff:DateTime64(6, 'UTC')}}"
        return self._delete(condition, {"project_id": project_id, "cutoff": reads.timestamp_param(cutoff)})

    def _sync_for_delete(self) -> None:
        if not self.sync(self._timeouts.delete):
            raise StoreTimeout("events acknowledged before the delete did not reach ClickHouse in time")

    def _delete(self, condition: str, params: dict[str, Any]) -> int:
        """Count, delete (a lightweight delete that returns once the rows are gone), then rebuild
        the rollup's rows of the days the deleted events were on.

        Known race: an event of a touched day inserted while the rollup is rebuilt may be counted
        twice or not at all in /v1/sources until that day is rebuilt again."""
        timeout = self._timeouts.delete
        found = self._query(
            "write", timeout, f"SELECT count(), groupUniqArray(toDate(timestamp)) FROM events WHERE {condition}", params
        )
        count, days = found[0]
        if not count:
            return 0
        sync = {"lightweight_deletes_sync": 2, "mutations_sync": 2}
        self._query("write", timeout, f"DELETE FROM events WHERE {condition}", params, sync)
        day_params = {"project_id": params["project_id"], "days": [day.isoformat() for day in days]}
        in_days = f"{reads.PROJECT} AND day IN {{days:Array(Date)}}"
        self._query("write", timeout, f"ALTER TABLE source_days DELETE WHERE {in_days}", day_params, sync)
        self._query(
            "write",
            timeout,
            f"""INSERT INTO source_days {schema.SOURCE_DAYS_SELECT}
            WHERE {reads.PROJECT} AND toDate(timestamp) IN {{days:Array(Date)}}
            GROUP BY project_id, day, source, medium""",
            day_params,
        )
        return int(count)

    # operations -----------------------------------------------------------------------------
    def export(self, project_id: str, time_range: TimeRange, batch_rows: int = 50_000) -> Iterator[pa.RecordBatch]:
        """The project's events in the range, oldest first, a keyset page per batch (ordered by
        timestamp, node, seq; each page starts after the last row of the one before)."""
        from millimetric.store.interface import EXPORT_SCHEMA

        self.sync()
        columns = ", ".join(
            f"toString({name}) AS {name}" if name in _LOW_CARDINALITY else name for name in EXPORT_SCHEMA.names
        )
        after: tuple[int, str, int] | None = None
        while True:
            params: dict[str, Any] = {
                "project_id": project_id,
                "start": reads.timestamp_param(time_range.start),
                "end": reads.timestamp_param(time_range.end),
                "limit": batch_rows,
            }
            keyset = ""
            if after is not None:
                keyset = (
                    " AND (timestamp, node, seq) > (fromUnixTimestamp64Micro({after_us:Int64}, 'UTC'),"
                    " {after_node:String}, {after_seq:UInt64})"
                )
                params.update(after_us=after[0], after_node=after[1], after_seq=after[2])
            sql = f"""SELECT {columns}, toUnixTimestamp64Micro(timestamp) AS _us, toString(node) AS _node, seq AS _seq
                FROM events WHERE {reads.PROJECT} AND timestamp >= {{start:DateTime64(6, 'UTC')}}
                    AND timestamp < {{end:DateTime64(6, 'UTC')}}{keyset}
                ORDER BY timestamp, node, seq
                LIMIT {{limit:UInt32}}"""
            try:
                table = self._client("read", self._timeouts.read).query_arrow(sql, parameters=params)
            except ClickHouseError as exc:
                raise StoreError(f"ClickHouse: export failed: {exc}") from exc
            if table.num_rows:
                last = table.slice(table.num_rows - 1).to_pylist()[0]
                after = (last["_us"], last["_node"], last["_seq"])
                rows = table.select(EXPORT_SCHEMA.names)
                yield from pa.Table.from_arrays(
                    [rows.column(i).cast(EXPORT_SCHEMA.field(i).type) for i in range(len(EXPORT_SCHEMA))],
                    schema=EXPORT_SCHEMA,
                ).to_batches()
            if table.num_rows < batch_rows:
                return

    def ping(self) -> None:
        self._query("ping", self._timeouts.ping, "SELECT 1", {})

    def status(self) -> dict[str, Any]:
        with self._cond:
            waiting, waiting_bytes, shipped = self._pending_events, self._pending_bytes, self._shipped
            age = time.monotonic() - self._acknowledged_at[0] if self._acknowledged_at else 0.0
        return {
            "backend": "clickhouse",
            "clickhouse": self.target.describe(),
            "format": schema.VERSION,
            "node": self._spool.node,
            "spool": str(self._spool.directory),
            "unflushed_events": waiting,
            "unflushed_bytes": waiting_bytes,
            "unflushed_seconds": age,
            "spool_max_bytes": self._max_bytes,
            "shipped_seq": shipped,
            "clickhouse_error": self._last_error,
            "quarantined_files": 0,
        }

    def backup(self, directory: Path) -> int:
        raise StoreError(
            "millimetric backup copies an embedded data directory; back up ClickHouse with its own BACKUP "
            "statement, or use millimetric export"
        )

    def close(self, stall_seconds: float = 10.0) -> None:
        """Ship what the spool holds while ClickHouse takes it; once `stall_seconds` pass without
        progress (ClickHouse down), stop: what is left stays in the spool for the next start."""
        while self._pending_events:
            shipped = self._shipped
            if not self.sync(stall_seconds) and self._shipped == shipped:
                log.warning("ClickHouse: %d events stay in the spool for the next start", self._pending_events)
                break
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._shipper.join()
        with self._cond:
            self._spool.journal.rotate()
        with self._client_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
        self._dedup.close()
        os.close(self._lock_fd)
