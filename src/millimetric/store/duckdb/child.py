"""The store process: the only process that opens the DuckDB file. Clients reach it over `wire`.

Why a process of its own: during an insert, DuckDB's Python binding takes the GIL back many times
(its Python-side Arrow scan, interrupt checks). On a writer thread inside the server that stalled
the event loop on every commit. Here the inserts run beside the server, and the server's side of a
write is encoding the rows and one round trip on a socket.

Each client connection gets a thread, so a long read or delete never delays an append. The
process ignores SIGINT and SIGTERM: its supervisor decides when it stops (after the servers
drained their queues). If the supervisor dies, the process sees its owner pipe close and exits at
once; the next start replays the journal and DuckDB's WAL.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from millimetric.store.duckdb import wire
from millimetric.store.duckdb.database import EventDatabase
from millimetric.store.duckdb.dedup import encode_positions

log = logging.getLogger("millimetric.store")

_MAINTENANCE_SECONDS = 0.2
_SWITCH_INTERVAL_SECONDS = 0.0005
_HELLO_SECONDS = 5.0
_PEER_CREDENTIALS = struct.Struct("3i")  # pid, uid, gid


def serve(path: Path, address: wire.Address, owner: Connection, open_timeout: float) -> None:
    """The store process's main: open the database, listen, serve until the owner says close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Flushes and folds take the GIL back often (DuckDB's bindings) while appends wait for it: with
    # the default 5 ms switch interval each wait could last 5 ms. bench/ingest.py, same VM, two runs
    # each: /v1/track p99 32-33 ms (5 ms) against 27 ms (0.5 ms).
    sys.setswitchinterval(_SWITCH_INTERVAL_SECONDS)
    try:
        database = _open(path, open_timeout)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address.name)
        listener.listen(128)
    except Exception as exc:
        _send(owner, ("error", f"cannot open the event store {path}: {exc}"))
        return
    _send(owner, ("ok", None))
    threading.Thread(target=_accept, args=(database, listener, address), daemon=True).start()
    threading.Thread(target=_maintain, args=(database,), daemon=True).start()
    try:
        request = owner.recv()
    except (EOFError, OSError):
        # The supervisor is gone (killed): go at once, so a restarted server can open the file. Every
        # acknowledged write is already in the journal or DuckDB's WAL, which the next open replays.
        os._exit(0)
    listener.close()
    reply: tuple[str, Any] = ("ok", None)
    if request != "close":
        reply = ("error", f"unknown owner request {request!r}")
    try:
        database.close()
    except Exception as exc:
        log.exception("closing the event store failed")
        reply = ("error", f"{type(exc).__name__}: {exc}")
    _send(owner, reply)


def _open(path: Path, timeout: float) -> EventDatabase:
    """Wait a little for the lock: the store process of a killed server may still hold the file."""
    import duckdb

    deadline = time.monotonic() + timeout
    while True:
        try:
            return EventDatabase(path)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _send(connection: Connection, message: Any) -> None:
    try:
        connection.send(message)
    except OSError:
        pass


def _maintain(database: EventDatabase) -> None:
    """Flush the journal into DuckDB and fold the sources rollup when each is due."""
    while True:
        time.sleep(_MAINTENANCE_SECONDS)
        try:
            if database.flush_due():
                database.flush()
            if database.fold_due():
                database.fold()
        except Exception:
            log.exception("event store maintenance (journal flush or rollup fold) failed")


def _accept(database: EventDatabase, listener: socket.socket, address: wire.Address) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except OSError:
            return  # closed: the store is stopping
        threading.Thread(target=_greet, args=(database, sock, address), daemon=True).start()


def _greet(database: EventDatabase, sock: socket.socket, address: wire.Address) -> None:
    """Check who connects (same user, right key) and serve the role it asks for."""
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER_CREDENTIALS.size)
    _, uid, _ = _PEER_CREDENTIALS.unpack(credentials)
    connection = Connection(sock.detach())
    try:
        role = None
        if uid == os.getuid() and connection.poll(_HELLO_SECONDS):
            role = wire.check_hello(address, connection.recv_bytes(1024))
        if role is None:
            connection.send_bytes(b"refused: not a client of this event store")
            return
        connection.send_bytes(b"ok")
        if role == wire.APPEND:
            _answer_appends(database, connection)
        else:
            _answer(database, connection, wire.WRITE_METHODS if role == wire.WRITE else wire.READ_METHODS)
    except (EOFError, OSError):
        pass
    finally:
        connection.close()


def _answer_appends(database: EventDatabase, connection: Connection) -> None:
    """Journal each group of rows, then answer: empty for done, `D` and the positions of the rows
    not stored as duplicates (`dedup.encode_positions`), else the error's kind and text."""
    while True:
        message = connection.recv_bytes()
        (count,) = wire.LENGTH.unpack_from(message)
        try:
            duplicates = database.append(message[wire.LENGTH.size :], count)
            reply = wire.DUPLICATES.encode() + encode_positions(duplicates) if duplicates else b""
        except Exception as exc:
            log.exception("event store append of %d rows failed", count)
            reply = f"{wire.error_kind(exc)}{type(exc).__name__}: {exc}".encode()
        connection.send_bytes(reply)


def _answer(database: EventDatabase, connection: Connection, methods: frozenset[str]) -> None:
    """Serve calls until the client closes its end."""
    while True:
        method, args = connection.recv()
        if method not in methods:
            reply: tuple[str, Any] = ("error", (wire.ERROR, f"unknown store call {method!r}"))
        else:
            try:
                reply = ("ok", getattr(database, method)(*args))
            except Exception as exc:
                log.exception("event store call %s failed", method)
                reply = ("error", (wire.error_kind(exc), f"{type(exc).__name__}: {exc}"))
        connection.send(reply)
