"""A 202 means durable: kill -9 the server mid-stream, restart it, find every acknowledged event."""

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from conftest import bearer, cli_project

pytestmark = pytest.mark.slow  # real server processes or long waits: `-m "not slow"` skips them

SENDER = Path(__file__).parent / "tools" / "sender.py"


def outcomes(path: Path) -> dict[str, set[str]]:
    by_status: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        status, ids = line.split()[:2]
        by_status.setdefault(status, set()).update(ids.split(","))
    return by_status


def stored_event_ids(data_dir: Path) -> set[str]:
    with duckdb.connect(str(data_dir / "events.duckdb"), read_only=True) as con:
        return {row[0] for row in con.execute("SELECT event_id FROM events").fetchall()}


def start_sender(server, token: str, out: Path, **options) -> subprocess.Popen:
    args = [sys.executable, str(SENDER), server.url, token, str(out)]
    for name, value in options.items():
        args += [f"--{name}", str(value)]
    return subprocess.Popen(args)


def test_acknowledged_events_survive_sigkill(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    acked: set[str] = set()
    for round_ in range(3):
        server = server_factory(data_dir)
        out = tmp_path / f"round-{round_}.txt"
        sender = start_sender(
            server, keys.sk, out, requests=1_000_000, concurrency=32, batch=round_ * 5, tag=f"r{round_}"
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("202") < 300):
            time.sleep(0.05)
        server.kill()  # SIGKILL, mid-stream
        sender.wait(60)
        got = outcomes(out)
        assert len(got.get("202", ())) >= 300, "the sender should have had events acknowledged before the kill"
        acked |= got["202"]
    server = server_factory(data_dir)  # restart on the same data directory
    assert httpx.post(f"{server.url}/v1/track", json={"event": "after"}, headers=bearer(keys.sk)).status_code == 202
    server.stop()
    missing = acked - stored_event_ids(data_dir)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"


def test_full_queue_answers_503_and_recovers(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    server = server_factory(data_dir, env={"MILLIMETRIC_QUEUE_LIMIT": "30"})
    out = tmp_path / "flood.txt"
    start_sender(server, keys.sk, out, requests=3000, concurrency=100, batch=10, tag="flood").wait(300)
    got = outcomes(out)
    assert got.get("503"), "a burst over the queue limit must get 503 overloaded"
    assert got.get("202"), "events that fit in the queue are still accepted"
    assert set(got) <= {"202", "503"}
    retry_after = {line.split()[2] for line in out.read_text().splitlines() if line.startswith("503")}
    assert retry_after and all(value.isdigit() and int(value) >= 1 for value in retry_after)
    response = httpx.post(
        f"{server.url}/v1/track", json={"event": "load", "event_id": "after"}, headers=bearer(keys.sk)
    )
    assert response.status_code == 202
    server.stop()
    stored = stored_event_ids(data_dir)
    assert got["202"] <= stored, "an event answered 202 is missing"
    assert not (got["503"] & stored), "an event answered 503 was stored"
