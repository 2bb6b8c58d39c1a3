"""A node's spool: the journal its acknowledged events wait in until ClickHouse holds them.

One directory per server process (`<data dir>/spool/<n>`), claimed with an exclusive lock on its
`lock` file: workers of one node, a restarted process and the CLI each take the first free one,
and a process that claims a directory a dead one left ships what is in it.

Every spool has a node id of its own (`node`, made once). Each row has a sequence number in its
spool; a batch is shipped with the insert token `<node>:<first>-<last>`. Before a batch is sent,
its range is written down (`state`, `inflight`), so after a crash the same rows go again in the
same batch, with the same token, and ClickHouse drops the copy if the first try had landed.
`shipped` is the last sequence number ClickHouse has: the spool's next sequence numbers start
past it, so a token is never reused for other rows.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import NamedTuple

from millimetric.store.journal import Frame, Journal, sync_directory


class ShipState(NamedTuple):
    shipped: int  # every seq up to here is in ClickHouse
    inflight: tuple[int, int] | None  # a batch sent, maybe stored, not yet confirmed


def claim(root: Path) -> tuple[Path, int]:
    """The first spool directory under `root` no other process holds, and its lock (an fd)."""
    root.mkdir(parents=True, exist_ok=True)
    index = 0
    while True:
        directory = root / str(index)
        directory.mkdir(exist_ok=True)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return directory, fd
        except BlockingIOError:
            os.close(fd)
            index += 1


class Spool:
    """The journal, the node id and the shipping state of one claimed directory. Not thread-safe:
    the store serialises calls."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.journal = Journal(directory / "journal")
        node_file = directory / "node"
        if not node_file.exists():
            _write_durably(node_file, secrets.token_hex(8))
        self.node = node_file.read_text().strip()
        self._state_file = directory / "state"
        self.state = self._read_state()

    def _read_state(self) -> ShipState:
        try:
            raw = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return ShipState(0, None)
        inflight = raw.get("inflight")
        return ShipState(int(raw["shipped"]), (int(inflight[0]), int(inflight[1])) if inflight else None)

    def save_state(self, state: ShipState) -> None:
        """Durable on return."""
        _write_durably(self._state_file, json.dumps({"shipped": state.shipped, "inflight": state.inflight}))
        self.state = state

    def token(self, frames: list[Frame]) -> str:
        return f"{self.node}:{frames[0].first_seq}-{frames[-1].next_seq - 1}"


def _write_durably(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)
    sync_directory(path.parent)
