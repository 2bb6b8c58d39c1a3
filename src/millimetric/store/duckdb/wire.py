"""The wire between the store process and its clients (server processes, workers, the CLI).

The store process listens on a Unix socket in the abstract namespace, named after the data file,
so a restarted store process is found at the same address. Each client connection serves one
role, chosen in its first message (the hello: the store's secret key and the role):

- `append`: length-prefixed frames of encoded rows; each answered by an empty frame (durable),
  `D` and the positions of rows not stored as duplicates (the others are durable), or a
  one-letter kind and a message (`O` overloaded, `E` error);
- `write`, `read`: pickled `(method, args)` calls answered by `("ok", value)` or
  `("error", (kind, message))`.

Every client call has a timeout: a wedged store makes its callers fail fast, not hang.
The address and key are published in a file beside the database (`<name>.store`, mode 0600), so
a CLI command finds the store process of a running server and hands it its rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import socket
import struct
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

from millimetric.store.interface import StoreError, StoreOverloaded, StoreTimeout

APPEND, WRITE, READ = "append", "write", "read"
WRITE_METHODS = frozenset({"delete_user", "delete_before", "backup"})
READ_METHODS = frozenset({"rows", "stats", "sources", "funnel", "export_page", "ping", "status"})
LENGTH = struct.Struct("!I")  # the length prefix of a `Connection.send_bytes` message
OVERLOADED, ERROR, DUPLICATES = "O", "E", "D"
_KEY_BYTES = 32


class Address(NamedTuple):
    """Where a store process listens, and the key a client proves it may talk to it with."""

    name: str
    key: bytes


def new_address(path: Path) -> Address:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return Address(f"\0millimetric-store-{digest}", secrets.token_bytes(_KEY_BYTES))


def address_file(path: Path) -> Path:
    return path.with_suffix(".store")


def publish(address: Address, path: Path) -> None:
    """Write the address file for CLI commands (atomically, readable by this user only)."""
    target = address_file(path)
    partial = target.with_name(target.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"name": address.name, "key": address.key.hex(), "pid": os.getpid()}, f)
    os.replace(partial, target)


def unpublish(path: Path) -> None:
    address_file(path).unlink(missing_ok=True)


def discover(path: Path) -> Address | None:
    """The address a running server published for `path`, if any (it may be stale)."""
    try:
        found = json.loads(address_file(path).read_text())
        return Address(found["name"], bytes.fromhex(found["key"]))
    except (OSError, ValueError, KeyError):
        return None


def hello(address: Address, role: str) -> bytes:
    return address.key + role.encode()


def check_hello(address: Address, message: bytes) -> str | None:
    """The role a client asks for, or None when its key is wrong."""
    if len(message) <= _KEY_BYTES or not hmac.compare_digest(message[:_KEY_BYTES], address.key):
        return None
    role = message[_KEY_BYTES:].decode(errors="replace")
    return role if role in (APPEND, WRITE, READ) else None


def connect(address: Address, role: str, timeout: float) -> Connection:
    """A blocking connection for one role; StoreError if the store process does not answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address.name)
        sock.settimeout(None)
    except OSError as exc:
        sock.close()
        raise StoreError("the event store process is not running") from exc
    connection = Connection(sock.detach())
    try:
        connection.send_bytes(hello(address, role))
        if not connection.poll(timeout):
            raise StoreTimeout(f"the event store process did not answer within {timeout:g} s")
        reply = connection.recv_bytes()
    except StoreError:
        connection.close()
        raise
    except (OSError, EOFError) as exc:
        connection.close()
        raise StoreError("the event store process closed the connection") from exc
    if reply != b"ok":
        connection.close()
        raise StoreError(reply.decode(errors="replace"))
    return connection


async def connect_async(address: Address, role: str, timeout: float) -> socket.socket:
    """A non-blocking socket for one role, connected from the event loop."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, address.name)
            message = hello(address, role)
            await loop.sock_sendall(sock, LENGTH.pack(len(message)) + message)
            (length,) = LENGTH.unpack(await receive(loop, sock, LENGTH.size))
            reply = await receive(loop, sock, length)
    except TimeoutError:
        sock.close()
        raise StoreTimeout(f"the event store process did not answer within {timeout:g} s") from None
    except (OSError, EOFError) as exc:
        sock.close()
        raise StoreError("the event store process is not running") from exc
    if reply != b"ok":
        sock.close()
        raise StoreError(reply.decode(errors="replace"))
    return sock


async def receive(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def remote_error(kind: str, message: str) -> StoreError:
    """The client-side exception for an error the store process reported."""
    return StoreOverloaded(message) if kind == OVERLOADED else StoreError(message)


def error_kind(exc: BaseException) -> str:
    return OVERLOADED if isinstance(exc, StoreOverloaded) else ERROR
