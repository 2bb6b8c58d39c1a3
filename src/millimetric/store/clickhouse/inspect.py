"""A read-only look at a ClickHouse event store for `millimetric doctor`: never creates or migrates
tables, never ships or takes a spool (the keys are those of the embedded store's report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from millimetric.store import journal
from millimetric.store.clickhouse import schema
from millimetric.store.clickhouse.store import Target


def inspect(url: str, spool_root: Path) -> dict[str, Any]:
    """The database's format and event count, and the spool files left on this node."""
    target = Target.parse(url)
    files = sorted(spool_root.glob("*/journal/*.log")) if spool_root.exists() else []
    found: dict[str, Any] = {
        "path": target.describe(),
        "exists": False,
        "format_known": schema.VERSION,
        "served_by_server": False,
        "unflushed_journal_files": len(files),
        "newer_journal_files": [str(file) for file in files if _newer_journal(file)],
        "quarantined_files": 0,
        "quarantine": "",
    }
    try:
        client = clickhouse_connect.get_client(
            host=target.host,
            port=target.port,
            secure=target.secure,
            username=target.username,
            password=target.password,
            connect_timeout=3,
            send_receive_timeout=10,
            autogenerate_session_id=False,
        )
    except ClickHouseError as exc:
        found["error"] = f"unreachable: {exc}"
        return found
    try:
        database = {"database": target.database}
        tables = client.query(
            "SELECT name FROM system.tables WHERE database = {database:String}", parameters=database
        ).result_rows
        names = {name for (name,) in tables}
        found["exists"] = "events" in names
        if "millimetric_format" in names:
            found["format"] = _scalar(client, f"SELECT max(version) FROM `{target.database}`.millimetric_format")
        if found["exists"]:
            found["events"] = _scalar(client, f"SELECT count() FROM `{target.database}`.events")
    except ClickHouseError as exc:
        found["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return found


def _scalar(client: Client, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def _newer_journal(path: Path) -> bool:
    try:
        journal.read_file(path)
        return False
    except journal.JournalFormatError:
        return True
