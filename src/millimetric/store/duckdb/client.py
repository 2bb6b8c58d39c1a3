"""`DuckDBEventStore`: the `EventStore` a server process uses, a client of the store process.

Appends travel on one socket driven by the event loop (no thread, no lock, no GIL hand-over per
commit); reads share a few blocking connections, deletes and backups use one of their own. Every
call has a timeout; a connection that timed out or broke is dropped and a new one is made on the
next call (after a store process restart, too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import queue
import socket
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator, Sequence

import pyarrow as pa

from millimetric.events.model import EventRow
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
from millimetric.settings import EVENTS_FILE
from millimetric.store.duckdb import export, wire
from millimetric.store.duckdb.dedup import decode_positions
from millimetric.store.duckdb.supervisor import StoreProcess
from millimetric.store.interface import EXPORT_BATCH_ROWS, StoreError, StoreTimeout
from millimetric.store.rows import encode_rows

READ_CONNECTIONS = 4


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds each kind of call may take before the caller hears `StoreTimeout`."""

    connect: float = 5.0
    append: float = 5.0  # ingest answers 503 rather than hold a request longer
    ping: float = 2.0  # /healthz names a wedged store within 5 s
    read: float = 60.0
    delete: float = 3600.0  # a forget or retention delete of millions of rows
    backup: float = 3600.0


class _Channel:
    """One blocking connection of one role; one call at a time."""

    def __init__(self, address: wire.Address, role: str, timeouts: Timeouts) -> None:
        self._address, self._role, self._timeouts = address, role, timeouts
        self._connection: Connection | None = None
        self._lock = threading.Lock()

    def call(self, timeout: float, method: str, *args: Any) -> Any:
        with self._lock:
            if self._connection is None:
                self._connection = wire.connect(self._address, self._role, self._timeouts.connect)
            connection = self._connection
            try:
                connection.send((method, args))
                if not connection.poll(timeout):
                    raise StoreTimeout(f"the event store did not answer {method} within {timeout:g} s")
                status, value = connection.recv()
            except StoreTimeout:
                self._drop()
                raise
            except (EOFError, OSError) as exc:
                self._drop()
                raise StoreError("the event store process is not running") from exc
        if status != "ok":
            raise wire.remote_error(*value)
        return value

    def _drop(self) -> None:
        """Forget a connection whose stream may hold a late answer; the store sees it close."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        with self._lock:
            self._drop()


class _AppendChannel:
    """The append connection, driven by the event loop. Its frames are those of
    `Connection.send_bytes` (a 4-byte big-endian length first), so the store reads them with
    `recv_bytes`. One call at a time: the writer has one commit in flight."""

    def __init__(self, address: wire.Address, timeouts: Timeouts) -> None:
        self._address, self._timeouts = address, timeouts
        self._socket: socket.socket | None = None

    async def call(self, count: int, payload: bytes) -> list[int]:
        loop = asyncio.get_running_loop()
        timeout = self._timeouts.append
        if self._socket is None:
            self._socket = await wire.connect_async(self._address, wire.APPEND, self._timeouts.connect)
        sock = self._socket
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_sendall(
                    sock, wire.LENGTH.pack(wire.LENGTH.size + len(payload)) + wire.LENGTH.pack(count)
                )
                await loop.sock_sendall(sock, payload)  # not joined to the header: no copy of it
                (length,) = wire.LENGTH.unpack(await wire.receive(loop, sock, wire.LENGTH.size))
                error = await wire.receive(loop, sock, length)
        except TimeoutError:
            self.close()
            raise StoreTimeout(f"the event store did not journal {count} events within {timeout:g} s") from None
        except (EOFError, OSError) as exc:
            self.close()
            raise StoreError("the event store process is not running") from exc
        if not error:
            return []
        if error[:1] == wire.DUPLICATES.encode():
            return decode_positions(error[1:])
        text = error.decode(errors="replace")
        raise wire.remote_error(text[:1], text[1:])

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class DuckDBEventStore:
    """The embedded event store, seen from a server process, a worker or the CLI.

    `process`: the store process this client started and stops on `close` (None when it attaches
    to one that a supervisor or a running server owns)."""

    def __init__(
        self, address: wire.Address, process: StoreProcess | None = None, timeouts: Timeouts = Timeouts()
    ) -> None:
        self.address = address
        self.process = process
        self._timeouts = timeouts
        self._appends = _AppendChannel(address, timeouts)
        self._writes = _Channel(address, wire.WRITE, timeouts)
        self._read_channels = [_Channel(address, wire.READ, timeouts) for _ in range(READ_CONNECTIONS)]
        self._reads: queue.SimpleQueue[_Channel] = queue.SimpleQueue()
        for channel in self._read_channels:
            self._reads.put(channel)

    @classmethod
    def start(cls, path: Path, timeouts: Timeouts = Timeouts()) -> "DuckDBEventStore":
        """Start a store process for `path` and connect to it."""
        process = StoreProcess(path)
        return cls(process.address, process, timeouts)

    async def append(self, rows: Sequence[EventRow]) -> list[int]:
        if not rows:
            return []
        return await self._appends.call(len(rows), encode_rows(list(rows)))

    def rows(self, project_id: str, plan: RowsPlan) -> RowsPage:
        return RowsPage(*self._read(self._timeouts.read, "rows", project_id, plan))

    def stats(self, project_id: str, plan: StatsPlan) -> list[StatRow]:
        return self._read(self._timeouts.read, "stats", project_id, plan)

    def sources(self, project_id: str, plan: SourcesPlan) -> list[SourceRow]:
        return [SourceRow(*row) for row in self._read(self._timeouts.read, "sources", project_id, plan)]

    def funnel(self, project_id: str, plan: FunnelPlan) -> FunnelCounts:
        return self._read(self._timeouts.read, "funnel", project_id, plan)

    def export(
        self, project_id: str, time_range: TimeRange, batch_rows: int = EXPORT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        after: export.Position | None = None
        while True:
            payload, after = self._read(self._timeouts.read, "export_page", project_id, time_range, after, batch_rows)
            yield from export.read_page(payload).to_batches()
            if after is None:
                return

    def delete_user(self, project_id: str, user_id: str) -> int:
        return self._writes.call(self._timeouts.delete, "delete_user", project_id, user_id)

    def delete_before(self, project_id: str, cutoff: dt.datetime) -> int:
        return self._writes.call(self._timeouts.delete, "delete_before", project_id, cutoff)

    def ping(self) -> None:
        self._read(self._timeouts.ping, "ping")

    def status(self) -> dict[str, Any]:
        return self._read(self._timeouts.ping, "status")

    def backup(self, directory: Path) -> int:
        return self._writes.call(self._timeouts.backup, "backup", (directory / EVENTS_FILE).resolve())

    def _read(self, timeout: float, method: str, *args: Any) -> Any:
        try:
            channel = self._reads.get(timeout=timeout)
        except queue.Empty:
            raise StoreTimeout(f"every read connection to the event store is busy for {timeout:g} s") from None
        try:
            return channel.call(timeout, method, *args)
        finally:
            self._reads.put(channel)

    def close(self) -> None:
        """Close the connections, then the store process if this client started it."""
        self._appends.close()
        for channel in (self._writes, *self._read_channels):
            channel.close()
        if self.process is not None:
            self.process.close()
