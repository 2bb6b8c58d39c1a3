"""The store process: the only process that opens the DuckDB file; the server talks to it over pipes.

Why a process of its own: during an insert, DuckDB's Python binding takes the GIL back many times
(its Python-side Arrow scan, interrupt checks). On a writer thread inside the server that stalled
the event loop on every commit. Here the inserts run beside the server, and the server's side of a
write is encoding the rows and one round trip on a pipe.

One pipe carries appends, driven by the server's event loop (`_AppendSocket`); one carries
deletes and folds; a few more carry reads, so a long read never delays an append. The child
ignores SIGINT and SIGTERM: the server decides when it stops (after draining its queue) and closes
the store. If the server dies, the child sees its pipes close and exits at once; the next open
replays the journal and DuckDB's WAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from millimetric.query.plans import RowsPlan, SourcesPlan, StatsPlan
from millimetric.store.rows import EventRow, encode_rows

if TYPE_CHECKING:
    from millimetric.store.duckdb_events import DuckDBEventStore

log = logging.getLogger("millimetric.store")

# A fork server with the store's modules loaded starts each store process in milliseconds, without
# forking the (threaded) server itself.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["millimetric.store.duckdb_events"])
READ_CHANNELS = 4
OPEN_TIMEOUT_SECONDS = 5.0  # the store process of a killed server may still hold the file briefly
RESTART_BACKOFF_SECONDS = 2.0  # between two starts of a store process that keeps dying
_WRITE_METHODS = frozenset({"delete_user", "delete_before", "fold"})
_READ_METHODS = frozenset({"rows", "stats", "sources", "fetch", "ping"})
_LENGTH = struct.Struct("!I")  # the length prefix of a `Connection.send_bytes` message
_MAINTENANCE_SECONDS = 0.2
_SWITCH_INTERVAL_SECONDS = 0.0005


class StoreError(RuntimeError):
    """The store process refused an operation, or is gone."""


class _Channel:
    """One pipe to the store process; one call at a time."""

    def __init__(self, connection: multiprocessing.connection.Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def call(self, method: str, *args: Any) -> Any:
        with self._lock:
            try:
                self._connection.send((method, args))
                status, value = self._connection.recv()
            except (EOFError, OSError) as exc:
                raise StoreError("the event store process is not running") from exc
        if status != "ok":
            raise StoreError(value)
        return value

    def close(self) -> None:
        self._connection.close()


class _AppendSocket:
    """The pipe appends take, driven by the event loop: no thread, no lock, no GIL hand-over per
    commit. Its frames are those of `Connection.send_bytes` (a 4-byte big-endian length first), so
    the child reads them with `recv_bytes`. One call at a time: the writer has one commit in flight."""

    def __init__(self, connection: multiprocessing.connection.Connection) -> None:
        self._socket = socket.socket(fileno=os.dup(connection.fileno()))
        self._socket.setblocking(False)
        connection.close()

    async def call(self, count: int, payload: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(self._socket, _LENGTH.pack(4 + len(payload)) + _LENGTH.pack(count))
            await loop.sock_sendall(self._socket, payload)  # not joined to the header: no copy of it
            (length,) = _LENGTH.unpack(await self._receive(loop, _LENGTH.size))
            error = await self._receive(loop, length)
        except (EOFError, OSError) as exc:
            raise StoreError("the event store process is not running") from exc
        if error:
            raise StoreError(error.decode())

    async def _receive(self, loop: asyncio.AbstractEventLoop, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = await loop.sock_recv(self._socket, size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def close(self) -> None:
        self._socket.close()


Connections = list[multiprocessing.connection.Connection]  # one server process's ends: writes, appends, reads


class _Channels:
    """One server process's ends of the pipes to the store process."""

    def __init__(self, connections: Connections) -> None:
        writes, appends, *reads = connections
        self.writes = _Channel(writes)
        self.appends = _AppendSocket(appends)
        self._reads: queue.SimpleQueue[_Channel] = queue.SimpleQueue()
        self._read_channels = [_Channel(connection) for connection in reads]
        for channel in self._read_channels:
            self._reads.put(channel)

    def read(self, method: str, *args: Any) -> Any:
        channel = self._reads.get()
        try:
            return channel.call(method, *args)
        finally:
            self._reads.put(channel)

    def close(self) -> None:
        for channel in (self.writes, self.appends, *self._read_channels):
            channel.close()


class _Child:
    """One store process and the pipes of each server process that talks to it: the first set is
    this process's own, the others (`spare`) are for worker processes (`EventStoreProcess.attach`)."""

    def __init__(self, path: Path, read_channels: int, open_timeout: float, servers: int = 1) -> None:
        sets = [[_CONTEXT.Pipe() for _ in range(2 + read_channels)] for _ in range(servers)]
        self.process: multiprocessing.process.BaseProcess | None = _CONTEXT.Process(
            target=_serve, args=(path, [[child for _, child in pipes] for pipes in sets], open_timeout),
            name="millimetric-store", daemon=True,
        )
        self.process.start()
        for pipes in sets:
            for _, child in pipes:
                child.close()
        self.channels = _Channels([parent for parent, _ in sets[0]])
        self.spare: list[Connections] = [[parent for parent, _ in pipes] for pipes in sets[1:]]
        try:
            self.channels.writes.call("ready")
        except StoreError:
            self.process.join(5)
            raise

    @classmethod
    def attached(cls, connections: Connections) -> "_Child":
        """A store process that another process started, seen through the pipes it handed over."""
        child = cls.__new__(cls)
        child.process, child.channels, child.spare = None, _Channels(connections), []
        return child


class EventStoreProcess:
    """The event store, run in a child process. Blocking calls: use them off the event loop.

    If the child dies, the call that finds out fails (StoreError) and a new child is started in
    the background; it replays the journal, so every acknowledged event is there again.

    With `workers` the child also serves that many worker processes (`spare_connections`, taken
    by `attach` in each). Their pipes cannot be handed over again, so then a dead child is not
    restarted here: the supervisor of them all decides (`millimetric.api.workers`)."""

    def __init__(
        self, path: Path, read_channels: int = READ_CHANNELS, open_timeout: float = OPEN_TIMEOUT_SECONDS,
        workers: int = 0,
    ) -> None:
        self._spawn = functools.partial(_Child, path, read_channels, open_timeout, 1 + workers)
        self._child = self._spawn()
        self._restarts = not workers
        self._restart_lock = threading.Lock()
        self._restart_pending = False
        self._last_restart = -RESTART_BACKOFF_SECONDS
        self._closed = False

    @classmethod
    def attach(cls, connections: Connections) -> "EventStoreProcess":
        """A worker's side of the store process its supervisor started."""
        store = cls.__new__(cls)
        store._child = _Child.attached(connections)
        store._restarts = False
        store._restart_lock = threading.Lock()
        store._closed = False
        return store

    @property
    def spare_connections(self) -> list[Connections]:
        """The pipes for worker processes, one set each."""
        return self._child.spare

    @property
    def process(self) -> multiprocessing.process.BaseProcess | None:
        """The store process, if this process started it."""
        return self._child.process

    async def append(self, rows: list[EventRow]) -> None:
        """Returns once the rows are durable (in the store's journal). One call at a time."""
        if not rows:
            return
        child = self._child
        with self._watching(child):
            await child.channels.appends.call(len(rows), encode_rows(rows))

    def delete_user(self, project_id: str, user_id: str) -> int:
        return self._write("delete_user", project_id, user_id)

    def delete_before(self, project_id: str, cutoff: dt.datetime) -> int:
        return self._write("delete_before", project_id, cutoff)

    def fold(self) -> int:
        """Fold new events into the sources rollup now (the store process also does it by itself)."""
        return self._write("fold")

    def rows(self, project_id: str, plan: RowsPlan) -> tuple[list[tuple], int]:
        return self._read("rows", project_id, plan)

    def stats(self, project_id: str, plan: StatsPlan) -> list[tuple]:
        return self._read("stats", project_id, plan)

    def sources(self, project_id: str, plan: SourcesPlan) -> list[tuple]:
        return self._read("sources", project_id, plan)

    def fetch(self, sql: str, params: list | dict | None = None) -> tuple[list[str], list[tuple]]:
        return self._read("fetch", sql, params)

    def ping(self) -> None:
        self._read("ping")

    def close(self) -> None:
        """Checkpoint and stop the store process (call after the writer drained)."""
        with self._restart_lock:
            self._closed = True
        child = self._child
        if child.process is None:  # attached: the supervisor closes the store once every worker is gone
            child.channels.close()
            return
        try:
            child.channels.writes.call("close")
        except StoreError:
            log.warning("the event store process had already stopped")
        child.channels.close()
        child.process.join()

    def _write(self, method: str, *args: Any) -> Any:
        child = self._child
        with self._watching(child):
            return child.channels.writes.call(method, *args)

    def _read(self, method: str, *args: Any) -> Any:
        child = self._child
        with self._watching(child):
            return child.channels.read(method, *args)

    @contextlib.contextmanager
    def _watching(self, child: _Child) -> Iterator[None]:
        """A call that fails because `child` died starts its replacement."""
        try:
            yield
        except StoreError:
            if self._restarts and child.process is not None and not child.process.is_alive():
                self._restart_soon(child)
            raise

    def _restart_soon(self, dead: _Child) -> None:
        with self._restart_lock:
            if self._restart_pending or self._closed or self._child is not dead:
                return
            self._restart_pending = True
        threading.Thread(target=self._restart, args=(dead,), name="millimetric-store-restart", daemon=True).start()

    def _restart(self, dead: _Child) -> None:
        try:
            time.sleep(max(0.0, self._last_restart + RESTART_BACKOFF_SECONDS - time.monotonic()))
            self._last_restart = time.monotonic()
            dead.channels.close()
            dead.process.join(1)
            log.warning("the event store process exited (code %s); starting a new one", dead.process.exitcode)
            child = self._spawn()
            with self._restart_lock:
                stopped = self._closed  # the server stopped meanwhile
                if not stopped:
                    self._child = child
            if stopped:
                child.channels.writes.call("close")
                child.channels.close()
                child.process.join()
                return
            log.warning("the event store process is back (pid %s)", child.process.pid)
        except Exception:
            log.exception("could not restart the event store process")
        finally:
            with self._restart_lock:
                self._restart_pending = False


# The child -----------------------------------------------------------------------------------
def _serve(path: Path, connection_sets: list[Connections], open_timeout: float) -> None:
    """Serve each server process's pipes; the first set is the owner's, which alone closes the store."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Flushes and folds take the GIL back often (DuckDB's bindings) while appends wait for it: with
    # the default 5 ms switch interval each wait could last 5 ms. bench/ingest.py, same VM, two runs
    # each, before rows travelled as JSON: /v1/track p99 32-33 ms (5 ms) against 27 ms (0.5 ms).
    sys.setswitchinterval(_SWITCH_INTERVAL_SECONDS)
    owner_writes = connection_sets[0][0]
    try:
        store = _open(path, open_timeout)
    except Exception as exc:
        _reply_to_ready(owner_writes, "error", f"cannot open the event store {path}: {exc}")
        return
    _reply_to_ready(owner_writes, "ok", None)
    for index, (writes, appends, *reads) in enumerate(connection_sets):
        for connection in reads:
            threading.Thread(target=_answer, args=(store, connection, _READ_METHODS), daemon=True).start()
        threading.Thread(target=_answer_appends, args=(store, appends), daemon=True).start()
        if index:  # a worker's: it ends when the worker closes it or dies
            threading.Thread(target=_answer, args=(store, writes, _WRITE_METHODS), daemon=True).start()
    threading.Thread(target=_maintain, args=(store,), daemon=True).start()
    if not _answer(store, owner_writes, _WRITE_METHODS):
        # The owner is gone (killed): go at once, so a restarted server can open the file. Every
        # acknowledged write is already in the journal or DuckDB's WAL, which the next open replays.
        os._exit(0)
    store.close()
    try:
        owner_writes.send(("ok", None))  # the reply to "close", once the checkpoint is done
    except OSError:
        pass


def _open(path: Path, timeout: float) -> "DuckDBEventStore":
    """Imported here: only the store process loads DuckDB."""
    import duckdb

    from millimetric.store.duckdb_events import DuckDBEventStore

    deadline = time.monotonic() + timeout
    while True:
        try:
            return DuckDBEventStore(path)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _maintain(store: "DuckDBEventStore") -> None:
    """Flush the journal into DuckDB and fold the sources rollup when each is due."""
    while True:
        time.sleep(_MAINTENANCE_SECONDS)
        try:
            if store.flush_due():
                store.flush()
            if store.fold_due():
                store.fold()
        except Exception:
            log.exception("event store maintenance (journal flush or rollup fold) failed")


def _reply_to_ready(connection: multiprocessing.connection.Connection, status: str, value: Any) -> None:
    try:
        connection.recv()
        connection.send((status, value))
    except (EOFError, OSError):
        pass


def _answer_appends(store: "DuckDBEventStore", connection: multiprocessing.connection.Connection) -> None:
    """Journal each group of rows, then answer: empty for done, else the error."""
    while True:
        try:
            message = connection.recv_bytes()
        except (EOFError, OSError):
            return
        (count,) = _LENGTH.unpack_from(message)
        try:
            store.append(message[_LENGTH.size :], count)
            reply = b""
        except Exception as exc:
            log.exception("event store append of %d rows failed", count)
            reply = f"{type(exc).__name__}: {exc}".encode()
        try:
            connection.send_bytes(reply)
        except OSError:
            return


def _answer(
    store: "DuckDBEventStore", connection: multiprocessing.connection.Connection, methods: frozenset[str]
) -> bool:
    """Serve calls until the server asks to close (True) or its end of the pipe closes (False)."""
    while True:
        try:
            method, args = connection.recv()
        except (EOFError, OSError):
            return False
        if method == "close":
            return True
        if method not in methods:
            reply = ("error", f"unknown store call {method!r}")
        else:
            try:
                reply = ("ok", getattr(store, method)(*args))
            except Exception as exc:
                log.exception("event store call %s failed", method)
                reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            connection.send(reply)
        except OSError:
            return False
