"""`millimetric backup DIR`: a consistent copy of an embedded data directory, made while the
server runs. The copy is itself a data directory: restoring is serving from it."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from pathlib import Path
from typing import Callable

from millimetric.settings import CONTROL_FILE, JWT_SECRET_FILE, PEPPER_FILE, Settings
from millimetric.store.factory import open_event_store


class BackupError(RuntimeError):
    """The backup cannot be made as asked (the message says why and what to do)."""


@dataclasses.dataclass
class BackupSummary:
    target: str
    events: int
    control_plane: str  # "copied" or why not
    pepper: str  # "copied" or why not
    quarantined_files: int
    jwt_secret: str  # "copied" or why not (signs the admin tokens the server issued)


def backup(settings: Settings, target: Path, note: Callable[[str], None] = lambda _: None) -> BackupSummary:
    """Copy the control plane, the pepper, the JWT secret and every stored event into `target`
    (new or empty)."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} exists and is not an empty directory: choose a new one")
    if target.resolve() == settings.data_dir.resolve():
        raise BackupError("the backup directory is the data directory itself")
    target.mkdir(parents=True, exist_ok=True)
    note("copying the control plane")
    control = _copy_control_plane(settings, target)
    pepper = _copy_secret(settings, target, PEPPER_FILE, settings.pepper, "MILLIMETRIC_PEPPER")
    jwt_secret = _copy_secret(settings, target, JWT_SECRET_FILE, settings.jwt_secret, "MILLIMETRIC_JWT_SECRET")
    note("copying the events (a consistent snapshot; ingest goes on meanwhile)")
    store = open_event_store(settings, attach=True)
    try:
        events = store.backup(target)
    finally:
        store.close()
    quarantined = _copy_quarantine(settings, target)
    return BackupSummary(str(target), events, control, pepper, quarantined, jwt_secret)


def _copy_control_plane(settings: Settings, target: Path) -> str:
    if settings.database_url:
        return "not copied: it is an external database (back it up with its own tools, e.g. pg_dump)"
    source = settings.data_dir / CONTROL_FILE
    if not source.exists():
        return "not copied: the data directory has none yet"
    # SQLite's online backup: a consistent copy while the server writes (WAL mode).
    with sqlite3.connect(source) as src, sqlite3.connect(target / CONTROL_FILE) as dst:
        src.backup(dst)
    return "copied"


def _copy_secret(settings: Settings, target: Path, name: str, configured: str | None, variable: str) -> str:
    """A secret the server generated into the data directory; the copy keeps its 0600 mode."""
    if configured:
        return f"not copied: it is configured ({variable}); serve the copy with the same value"
    source = settings.data_dir / name
    if not source.exists():
        return "not copied: the data directory has none yet"
    shutil.copy2(source, target / name)
    return "copied"


def _copy_quarantine(settings: Settings, target: Path) -> int:
    """Quarantined journal frames are kept for an operator to look at: they travel with the copy."""
    source = settings.event_store_path.with_suffix(".quarantine")
    if not source.exists():
        return 0
    shutil.copytree(source, target / source.name)
    return len(list(source.glob("*.log")))
