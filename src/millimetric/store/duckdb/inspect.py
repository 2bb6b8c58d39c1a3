"""A read-only look at an embedded event store for `millimetric doctor`: never migrates, never
replays, never takes the file from a running server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from millimetric.store import journal
from millimetric.store.duckdb import migrations, wire
from millimetric.store.duckdb.client import DuckDBEventStore
from millimetric.store.interface import StoreError


def inspect(path: Path) -> dict[str, Any]:
    """What the store at `path` holds and who serves it. Keys: `served_by_server` (bool),
    `format`, `format_known` (this build's), `unflushed_journal_files`, `newer_journal_files`,
    `quarantined_files`, `events` (when the file could be read), `error` (when it could not)."""
    found: dict[str, Any] = {
        "path": str(path),
        "exists": path.exists(),
        "format_known": migrations.VERSION,
        "served_by_server": False,
    }
    journal_files = sorted(path.with_suffix(".journal").glob("*.log"))
    found["unflushed_journal_files"] = len(journal_files)
    found["newer_journal_files"] = [str(file) for file in journal_files if _newer_journal(file)]
    quarantine = path.with_suffix(".quarantine")
    found["quarantined_files"] = len(list(quarantine.glob("*.log"))) if quarantine.exists() else 0
    found["quarantine"] = str(quarantine)
    address = wire.discover(path)
    if address is not None:
        store = DuckDBEventStore(address)
        try:
            status = store.status()
            found.update(served_by_server=True, format=status["format"], unflushed_events=status["unflushed_events"])
            return found
        except StoreError:
            pass  # a stale address: the server that wrote it is gone
        finally:
            store.close()
    if not found["exists"]:
        return found
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            found["format"] = migrations.version(con)
            found["events"] = con.execute("SELECT count(*) FROM events").fetchall()[0][0] if found["format"] else 0
    except duckdb.Error as exc:
        found["error"] = f"{type(exc).__name__}: {exc}"
    return found


def _newer_journal(path: Path) -> bool:
    try:
        journal.read_file(path)
        return False
    except journal.JournalFormatError:
        return True
