"""Operator commands against a running server: `millimetric backup` and `millimetric doctor`."""

import json
import subprocess
import sys
import threading

import duckdb
import httpx
import pytest

from millimetric.store.duckdb.database import EventDatabase

from conftest import ServerProcess, bearer, cli_project, free_port
from sessions import mint_session

pytestmark = pytest.mark.slow  # real server processes or long waits: `-m "not slow"` skips them

STATS = {"from": "2024-01-01", "to": "2024-02-01", "group_by": "event_name,source", "metric": "uniques"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "millimetric", *args], capture_output=True, text=True)


def _events(n: int, day: int) -> list[dict]:
    return [
        {
            "event": f"e{i % 3}",
            "anonymous_id": f"v{i % 17}",
            "timestamp": f"2024-01-{day:02d}T10:{i % 60:02d}:00Z",
            "url": f"https://shop.example.com/?utm_source=s{i % 4}",
        }
        for i in range(n)
    ]


def test_a_backup_taken_while_the_server_ingests_serves_the_same_answers(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    server = server_factory(data_dir)
    for day in (3, 4):
        response = httpx.post(f"{server.url}/v1/batch", json={"events": _events(400, day)}, headers=bearer(keys.sk))
        assert response.status_code == 202
    stop = threading.Event()

    def keep_ingesting() -> None:  # live traffic, outside the compared range
        with httpx.Client() as client:
            while not stop.is_set():
                client.post(
                    f"{server.url}/v1/track",
                    json={"event": "live", "timestamp": "2024-03-01T00:00:00Z"},
                    headers=bearer(keys.sk),
                )

    sender = threading.Thread(target=keep_ingesting)
    sender.start()
    try:
        result = run_cli("backup", str(tmp_path / "copy"), "--data-dir", str(data_dir), "--json")
    finally:
        stop.set()
        sender.join()
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["events"] >= 800 and summary["control_plane"] == "copied" and summary["pepper"] == "copied"
    assert summary["jwt_secret"] == "copied"
    assert (tmp_path / "copy" / "jwt-secret").stat().st_mode & 0o777 == 0o600
    # A session the original server would accept is accepted by the restored one.
    session = bearer(mint_session((data_dir / "jwt-secret").read_text().strip(), "restored-user"))
    expected = httpx.get(f"{server.url}/v1/stats", params=STATS, headers=bearer(keys.rk)).json()
    assert expected["rows"]
    server.stop()
    restored = ServerProcess(tmp_path / "copy", env=server.env, port=free_port()).start()
    try:
        answer = httpx.get(f"{restored.url}/v1/stats", params=STATS, headers=bearer(keys.rk)).json()
        assert answer == expected
        assert httpx.get(f"{restored.url}/admin/me", headers=session).status_code == 200
        live = httpx.get(
            f"{restored.url}/v1/stats", params={"from": "2024-03-01", "to": "2024-03-02"}, headers=bearer(keys.rk)
        ).json()
        assert live["rows"][0]["value"] == summary["events"] - 800  # the copy is one snapshot
    finally:
        restored.kill()


def test_a_backup_never_writes_into_a_directory_that_holds_something(tmp_path):
    target = tmp_path / "copy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    result = run_cli("backup", str(target), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert "not an empty directory" in result.stderr
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_doctor_reports_a_healthy_running_installation(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    cli_project(data_dir)
    server_factory(data_dir)
    result = run_cli("doctor", "--data-dir", str(data_dir), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert any(c["check"] == "event store" and "running server" in c["message"] for c in report["checks"])


def test_doctor_says_what_is_wrong_in_plain_words(tmp_path):
    data_dir = tmp_path / "data"
    cli_project(data_dir)
    path = data_dir / "events.duckdb"
    EventDatabase(path).close()
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE store_format SET version = version + 5")
    result = subprocess.run(
        [sys.executable, "-m", "millimetric", "doctor", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "MILLIMETRIC_REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.returncode == 1
    assert "written by a newer millimetric" in result.stderr
    assert "redis" in result.stderr and "does not answer" in result.stderr
