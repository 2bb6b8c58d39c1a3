"""`millimetric export` and `millimetric import --export`: a project's events leave one data
directory and arrive in a fresh one exactly as stored, so every read answers the same."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import test_store_contract as contract
from millimetric.events.model import EventRow, derived_session_id
from millimetric.events.queries import METRICS, Filters, RowsPlan, SourcesPlan
from millimetric.store.interface import EXPORT_SCHEMA

from conftest import ORIGIN, Keys, ServerProcess, bearer, cli, cli_project

pytestmark = pytest.mark.slow  # real server processes

START = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
WINDOW = {"from": "2026-02-20T00:00:00Z", "to": "2026-03-20T00:00:00Z"}
READS = [
    ("/v1/stats", {"metric": "count", "group_by": "event_name,source,medium", "interval": "day"}),
    ("/v1/stats", {"metric": "uniques", "group_by": "country,device_type,browser,os"}),
    ("/v1/stats", {"metric": "sessions", "group_by": "path,referrer_host,campaign"}),
    ("/v1/stats", {"metric": "users", "interval": "hour"}),
    ("/v1/query", {"limit": "1000"}),
    ("/v1/query", {"user_id": "u1", "limit": "1000"}),
    ("/v1/sources", {}),
    ("/v1/sources", {"breakdown": "source"}),
]


def _events() -> list[dict]:
    """Events that fill every stored column one way or another: campaigns, referrers, user ids,
    sent and derived session ids, event ids, user agents, properties, several days."""
    agents = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    ]
    events = []
    for i in range(60):
        event = {
            "event": ["$pageview", "signup", "purchase"][i % 3],
            "anonymous_id": f"visitor-{i % 11}",
            "timestamp": (START + dt.timedelta(hours=7 * i, seconds=i)).isoformat(),
            "url": f"https://shop.example.com/p/{i % 5}?utm_source={['google', 'newsletter', 'x'][i % 3]}"
            f"&utm_medium={['cpc', 'email', 'social'][i % 3]}&utm_campaign=c{i % 4}",
            "referrer": ["https://www.google.com/", "https://news.ycombinator.com/item?id=1", None][i % 3],
            "properties": {"i": i, "price": i * 1.5, "nested": {"ok": i % 2 == 0}},
            "context": {"ip": f"203.0.113.{i % 7}", "user_agent": agents[i % 2]},
        }
        if i % 4 == 0:
            event["user_id"] = f"u{i % 3}"
        if i % 5 == 0:
            event["session_id"] = f"sent-session-{i % 2}"
        if i % 2 == 0:
            event["event_id"] = f"evt-{i}"
        events.append(event)
    return events


def _answers(url: str, rk: str) -> list[dict]:
    """Every read's answer, minus what names a position in one store (the cursor)."""
    answers = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for path, params in READS:
            response = client.get(path, params={**WINDOW, **params}, headers=bearer(rk))
            assert response.status_code == 200, response.text
            body = response.json()
            body.pop("next_cursor", None)
            answers.append(body)
    return answers


def _export(data_dir: Path, keys: Keys, file_format: str, target: Path, *extra: str) -> dict:
    done = cli("export", "--project", keys.slug, "--format", file_format, "-o", str(target), "--json", *extra,
               data_dir=data_dir)  # fmt: skip
    return json.loads(done.stdout)


def _import(data_dir: Path, export: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "millimetric", "import", "--export", str(export), "--json", *extra,
         "--data-dir", str(data_dir)],
        capture_output=True, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory):
    """A data directory with events, its keys, its read answers, and its exports in both formats
    (taken while its server runs, through the server's own event store)."""
    root = tmp_path_factory.mktemp("export")
    data_dir = root / "source"
    keys = cli_project(data_dir)
    server = ServerProcess(data_dir).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            response = client.post("/v1/batch", json={"events": _events()}, headers=bearer(keys.sk))
            assert response.status_code == 202, response.text
            identify = {"anonymous_id": "visitor-3", "user_id": "u1"}
            assert client.post("/v1/identify", json=identify, headers=bearer(keys.sk)).status_code == 200
        answers = _answers(server.url, keys.rk)
        exports = {fmt: root / f"shop.{fmt}" for fmt in ("ndjson", "parquet")}
        for fmt, path in exports.items():
            assert _export(data_dir, keys, fmt, path) == {"events": 61, "file": str(path), "format": fmt}
        yield data_dir, keys, answers, exports
    finally:
        server.kill()


def test_an_export_loads_into_a_fresh_data_directory_with_the_same_answers(source, tmp_path: Path) -> None:
    """Each format into a project of its own in one fresh data directory (another control plane,
    other project ids): every read answers as it did at the source."""
    _, _, answers, exports = source
    fresh = tmp_path / "fresh"
    targets = {fmt: cli_project(fresh, name=f"moved {fmt}", origin=ORIGIN) for fmt in exports}
    for fmt, target in targets.items():
        done = _import(fresh, exports[fmt], "--project", target.slug)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"events": 61, "project": target.slug, "format": fmt}
    # Loaded again into the same project, an export would double every event: refused.
    again = _import(fresh, exports["parquet"], "--project", targets["ndjson"].slug)
    assert again.returncode == 1 and "already holds events" in again.stderr
    server = ServerProcess(fresh).start()
    try:
        for target in targets.values():
            assert _answers(server.url, target.rk) == answers
    finally:
        server.kill()


def test_the_ndjson_export_holds_every_stored_column(source) -> None:
    _, keys, _, exports = source
    lines = exports["ndjson"].read_text().splitlines()
    header = json.loads(lines[0])
    assert header["millimetric_export"] == 1
    assert header["project_id"] == keys.project_id and header["project_slug"] == keys.slug
    rows = [json.loads(line) for line in lines[1:]]
    assert len(rows) == 61 and all(list(row) == header["columns"] for row in rows)
    assert [row["timestamp"] for row in rows] == sorted(row["timestamp"] for row in rows)
    first = rows[0]
    assert first["session_id"] == "sent-session-0" and first["event_id"] == "evt-0"
    assert first["source"] == "google" and first["medium"] == "paid" and first["campaign"] == "c0"
    assert first["browser"] == "chrome" and first["country"] is not None and len(first["ip_hash"]) > 8
    assert json.loads(first["properties"]) == {"i": 0, "price": 0.0, "nested": {"ok": True}}
    assert not any("203.0.113." in line for line in lines)  # the raw IP was never stored


def test_an_export_window_keeps_only_its_events(source, tmp_path: Path) -> None:
    data_dir, keys, _, _ = source
    target = tmp_path / "window.ndjson"
    summary = _export(data_dir, keys, "ndjson", target, "--from", "2026-03-02", "--to", "2026-03-03T00:00:00Z")
    rows = [json.loads(line) for line in target.read_text().splitlines()[1:]]
    assert summary["events"] == len(rows) > 0
    assert all(row["timestamp"].startswith("2026-03-02") for row in rows)


def _stored_count(data_dir: Path, slug: str, tmp_path: Path) -> int:
    out = tmp_path / "count.ndjson"
    done = cli("export", "--project", slug, "-o", str(out), "--json", data_dir=data_dir)
    return json.loads(done.stdout)["events"]


def _damaged_ndjson(good: Path, target: Path) -> Path:
    lines = good.read_text().splitlines()
    row = json.loads(lines[40])
    row["timestamp"] = "yesterday"
    target.write_text("\n".join([*lines[:40], json.dumps(row), *lines[41:]]) + "\n")
    return target


def _foreign_columns(good: Path, target: Path) -> Path:
    lines = good.read_text().splitlines()
    header = json.loads(lines[0])
    header["columns"] = header["columns"][:-1]
    target.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    return target


def _truncated_parquet(good: Path, target: Path) -> Path:
    data = good.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def _not_an_export(_good: Path, target: Path) -> Path:
    target.write_text('{"event": "signup"}\n')
    return target


BAD_FILES = {
    "not an export": (_not_an_export, "not a millimetric export"),
    "a bad row": (_damaged_ndjson, "line 41: Invalid RFC3339"),
    "other columns": (_foreign_columns, "holds columns"),
    "a cut Parquet file": (_truncated_parquet, "Parquet"),
}


def test_bad_files_are_refused_and_nothing_is_written(source, tmp_path: Path) -> None:
    _, _, _, exports = source
    fresh = tmp_path / "fresh"
    target = cli_project(fresh, name="moved", origin=ORIGIN)
    for case, (make, message) in BAD_FILES.items():
        good = exports["parquet" if "Parquet" in case else "ndjson"]
        bad = make(good, tmp_path / f"bad{good.suffix}")
        done = _import(fresh, bad, "--project", target.slug)
        assert done.returncode == 1, case
        assert message in done.stderr and "Traceback" not in done.stderr, (case, done.stderr)
    # A good export of a project this control plane does not know, with no --project to say where.
    done = _import(fresh, exports["ndjson"])
    assert done.returncode == 1 and "does not exist here" in done.stderr and "--project" in done.stderr
    assert _stored_count(fresh, target.slug, tmp_path) == 0


# Every backend's EventStore.export ------------------------------------------------------------
@pytest.fixture(params=list(contract.BACKENDS))
def backend_store(request: pytest.FixtureRequest, tmp_path: Path):
    environ = {}
    if request.param == "clickhouse":
        environ["MILLIMETRIC_CLICKHOUSE_URL"] = request.getfixturevalue("clickhouse_database")
    manager = contract.Stores(request.param, tmp_path / "data", environ)
    yield manager.open()
    for store in manager.opened[::-1]:
        store.close()


def _as_stored(row: EventRow) -> tuple:
    session_id = row.session_id or derived_session_id(row.anonymous_id, row.timestamp)
    return tuple({**contract._fields(row), "session_id": session_id}.values())


def test_every_backend_exports_what_it_stores_and_takes_it_back(backend_store) -> None:
    store = backend_store
    batches = contract.dataset()
    for batch in batches:
        asyncio.run(store.append(list(batch)))
    exported = list(store.export(contract.MAIN, contract.RANGE, 97))
    assert exported and all(b.schema == EXPORT_SCHEMA and 0 < b.num_rows <= 97 for b in exported)
    got = [tuple(row.values()) for b in exported for row in b.to_pylist()]
    start, end = contract.RANGE
    want = [
        _as_stored(row)
        for batch in batches
        for row in batch
        if row.project_id == contract.MAIN and start <= row.timestamp < end
    ]
    assert sorted(got, key=repr) == sorted(want, key=repr)
    times = [row[1] for row in got]
    assert times == sorted(times)  # oldest first
    # Appended back as another project, the copy answers every read as the original does.
    copy = [EventRow(**{**row, "project_id": "proj_copy"}) for b in exported for row in b.to_pylist()]
    asyncio.run(store.append(copy))
    for metric in METRICS:
        for group_by, interval in (((), None), (("source", "medium"), "day"), (("country", "browser"), "week")):
            plan = contract.stats_plan(metric, group_by, interval)
            assert store.stats("proj_copy", plan) == store.stats(contract.MAIN, plan), plan
    for breakdown in ("source_medium", "source"):
        plan = SourcesPlan(contract.RANGE, breakdown, 1000)
        assert store.sources("proj_copy", plan) == store.sources(contract.MAIN, plan)
    page = RowsPlan(contract.RANGE, Filters(), 1000)
    assert store.rows("proj_copy", page).rows == store.rows(contract.MAIN, page).rows
