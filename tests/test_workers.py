"""`millimetric serve --workers N`: N server processes, one store process, nothing acknowledged lost."""

import datetime as dt
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from conftest import bearer, cli_project
from test_durability import outcomes, start_sender, stored_event_ids

pytestmark = pytest.mark.slow  # real server processes or long waits: `-m "not slow"` skips them


def worker_pids(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def wait_for_acks(out: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("202") < count):
        time.sleep(0.05)


def test_workers_share_one_store_and_stop_cleanly(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    server = server_factory(data_dir, env={"MILLIMETRIC_WORKERS": "2"})
    workers = worker_pids(server.proc.pid)
    assert len(workers) == 2
    out = tmp_path / "sent.txt"
    start_sender(server, keys.sk, out, requests=400, concurrency=16, batch=5, tag="w").wait(120)
    acked = outcomes(out)["202"]
    assert len(acked) == 400 * 5
    # Every worker reads what any worker acknowledged: one store behind them all.
    now = dt.datetime.now(dt.timezone.utc)
    window = {
        "from": f"{now - dt.timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}",
        "to": f"{now + dt.timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}",
    }
    for _ in range(4):  # each request on a new connection, which lands on either worker
        response = httpx.get(f"{server.url}/v1/stats", params={**window, "metric": "count"}, headers=bearer(keys.rk))
        assert response.status_code == 200, response.text
        assert sum(row["value"] for row in response.json()["rows"]) == len(acked)
    assert server.stop() == 0
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
    assert not list((data_dir / "events.journal").iterdir()), "the store checkpointed and emptied its journal"
    assert acked <= stored_event_ids(data_dir)


def test_a_dead_worker_stops_the_server_and_loses_nothing_acknowledged(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    server = server_factory(data_dir, env={"MILLIMETRIC_WORKERS": "2"})
    out = tmp_path / "sent.txt"
    sender = start_sender(server, keys.sk, out, requests=1_000_000, concurrency=32, batch=5, tag="k")
    wait_for_acks(out, 300)
    os.kill(worker_pids(server.proc.pid)[0], signal.SIGKILL)
    assert server.proc.wait(60) == 1, "the supervisor stops the other worker and the store, and says it failed"
    sender.wait(60)
    acked = outcomes(out).get("202", set())
    assert len(acked) >= 300 * 5
    server = server_factory(data_dir, env={"MILLIMETRIC_WORKERS": "2"})  # a process manager's restart
    assert server.stop() == 0
    missing = acked - stored_event_ids(data_dir)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
