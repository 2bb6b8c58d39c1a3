"""`millimetric doctor`: check the configuration, the stores, their versions and the services, and
say what is wrong in plain words. Read-only: it changes nothing it looks at."""

from __future__ import annotations

import ipaddress
import os
import shutil
import sqlite3
from typing import Callable, NamedTuple

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from millimetric.settings import CONTROL_FILE, PEPPER_FILE, Settings
from millimetric.store.control import MIGRATIONS, create_control_engine
from millimetric.store.factory import inspect_event_store

LOW_DISK_BYTES = 1024**3


class Finding(NamedTuple):
    level: str  # ok | warn | fail
    check: str
    message: str


def diagnose(settings: Settings) -> list[Finding]:
    """Every check, in order; a check that crashes is reported as failed, never raised."""
    findings: list[Finding] = []
    checks: list[tuple[str, Callable[[Settings], list[Finding]]]] = [
        ("data directory", _data_directory),
        ("pepper", _pepper),
        ("network", _network),
        ("control plane", _control_plane),
        ("event store", _event_store),
        ("redis", _redis),
    ]
    for name, check in checks:
        try:
            findings += check(settings)
        except Exception as exc:
            findings.append(Finding("fail", name, f"could not be checked: {type(exc).__name__}: {exc}"))
    return findings


def _data_directory(settings: Settings) -> list[Finding]:
    directory = settings.data_dir
    if not directory.exists():
        return [Finding("ok", "data directory", f"{directory} does not exist yet; `millimetric serve` creates it")]
    if not os.access(directory, os.W_OK):
        return [Finding("fail", "data directory", f"{directory} is not writable by this user")]
    free = shutil.disk_usage(directory).free
    if free < LOW_DISK_BYTES:
        return [Finding("warn", "data directory", f"{directory}: only {free / 1024**2:.0f} MiB free on its disk")]
    return [Finding("ok", "data directory", f"{directory} ({free / 1024**3:.1f} GiB free)")]


def _pepper(settings: Settings) -> list[Finding]:
    if settings.pepper:
        return [Finding("ok", "pepper", "configured (MILLIMETRIC_PEPPER)")]
    if (settings.data_dir / PEPPER_FILE).exists():
        return [Finding("ok", "pepper", f"kept in {settings.data_dir / PEPPER_FILE}")]
    return [Finding("ok", "pepper", "none yet: the first start generates one into the data directory")]


def _network(settings: Settings) -> list[Finding]:
    for cidr in settings.trusted_proxies:
        ipaddress.ip_network(cidr, strict=False)
    findings = [Finding("ok", "network", f"configured to listen on {settings.host}:{settings.port}")]
    if settings.workers > 1 and settings.rate_limits and not settings.redis_url:
        findings.append(
            Finding(
                "warn",
                "network",
                f"{settings.workers} workers keep separate rate-limit budgets: set MILLIMETRIC_REDIS_URL to share them",
            )
        )
    return findings


def _control_plane(settings: Settings) -> list[Finding]:
    if settings.database_url:
        engine = create_control_engine(settings.database_url)
    else:
        path = settings.data_dir / CONTROL_FILE
        if not path.exists():
            return [Finding("ok", "control plane", f"{path} does not exist yet; the first start creates it")]
        # read-only, and no WAL checkpoint on close: looking changes nothing
        engine = sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True))
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except sa.exc.OperationalError as exc:
        return [Finding("fail", "control plane", f"cannot connect: {exc.orig}")]
    finally:
        engine.dispose()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    if current is None:
        return [Finding("ok", "control plane", "empty: the first start creates its tables")]
    known = {revision.revision for revision in script.walk_revisions()}
    if current not in known:
        return [
            Finding(
                "fail",
                "control plane",
                f"at revision {current}, unknown to this build (newest {head}): "
                "it was written by a newer millimetric; run that version",
            )
        ]
    if current != head:
        return [Finding("ok", "control plane", f"at revision {current}; the next start migrates it to {head}")]
    return [Finding("ok", "control plane", f"reachable, schema current ({head})")]


def _event_store(settings: Settings) -> list[Finding]:
    found = inspect_event_store(settings)
    name = "event store"
    if "error" in found:
        return [Finding("fail", name, f"{found['path']} cannot be read: {found['error']}")]
    findings = []
    if found.get("served_by_server"):
        findings.append(
            Finding(
                "ok",
                name,
                f"served by a running server ({found['unflushed_events']} events waiting for their bulk insert)",
            )
        )
    elif not found["exists"]:
        findings.append(Finding("ok", name, f"{found['path']} does not exist yet; the first start creates it"))
    else:
        findings.append(Finding("ok", name, f"{found['path']}: {found.get('events', 0):,} events, not in use"))
    fmt, known = found.get("format"), found["format_known"]
    if isinstance(fmt, int) and isinstance(known, int) and fmt > known:
        findings.append(
            Finding(
                "fail",
                name,
                f"format {fmt} is newer than this build knows ({known}): it was "
                "written by a newer millimetric; run that version",
            )
        )
    elif isinstance(fmt, int) and isinstance(known, int) and fmt < known:
        findings.append(Finding("ok", name, f"format {fmt}; the next start migrates it to {known}"))
    if found["newer_journal_files"]:
        newer = found["newer_journal_files"]
        assert isinstance(newer, list)
        findings.append(Finding("fail", name, "journal files of a newer millimetric: " + ", ".join(newer)))
    elif found["unflushed_journal_files"] and not found.get("served_by_server"):
        findings.append(
            Finding(
                "ok",
                name,
                f"{found['unflushed_journal_files']} journal files left by a stop or "
                "crash: the next start replays them",
            )
        )
    if found["quarantined_files"]:
        findings.append(
            Finding(
                "warn",
                name,
                f"{found['quarantined_files']} quarantined journal files (events "
                f"that could not be stored) in {found['quarantine']}",
            )
        )
    return findings


def _redis(settings: Settings) -> list[Finding]:
    if not settings.redis_url:
        return [Finding("ok", "redis", "not configured (rate limits are kept in each server process)")]
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        return [Finding("fail", "redis", f"{settings.redis_url.split('@')[-1]} does not answer: {exc}")]
    finally:
        client.close()
    return [Finding("ok", "redis", "reachable")]
