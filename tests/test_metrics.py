"""GET /metrics: Prometheus text summed over every worker process, optionally behind a token."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from millimetric.store.control import ProjectChanges

from conftest import Keys, bearer, cli_project

TOKEN = "metrics-token-for-tests"


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample (0 when absent), its labels matched in any order."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        found = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if not found or found.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(2) or ""))
        if have == labels:
            return float(found.group(3))
    return 0.0


def test_in_one_process_requests_events_and_stores_are_counted(client: TestClient, keys: Keys) -> None:
    before = client.get("/metrics").text
    event = {"event": "signup", "anonymous_id": "a1"}
    for _ in range(3):
        assert client.post("/v1/track", json=event, headers=bearer(keys.sk)).status_code == 202
    bot = {"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}
    assert client.post("/v1/track", json=event, headers=bearer(keys.sk, **bot)).status_code == 202
    assert client.post("/v1/track", json=event, headers=bearer("sk_live_00000000_nope")).status_code == 401
    assert client.post("/v1/forget", json={"user_id": "u9"}, headers=bearer(keys.sk)).status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text

    def grew(name: str, **labels: str) -> float:
        return _sample(text, name, **labels) - _sample(before, name, **labels)

    assert grew("millimetric_http_requests_total", route="/v1/track", method="POST", status="202") == 4
    assert grew("millimetric_http_requests_total", route="/v1/track", method="POST", status="401") == 1
    assert grew("millimetric_http_request_duration_seconds_count", route="/v1/track") == 5
    assert grew("millimetric_http_request_duration_seconds_bucket", route="/v1/track", le="+Inf") == 5
    assert grew("millimetric_events_accepted_total") == 3
    assert grew("millimetric_events_dropped_total", reason="bot") == 1
    assert _sample(text, "millimetric_forget_jobs", state="queued") + _sample(text, "millimetric_forget_jobs", state="done") + _sample(text, "millimetric_forget_jobs", state="running") == 1  # fmt: skip
    for gauge in ("millimetric_spool_events", "millimetric_spool_bytes", "millimetric_spool_oldest_seconds"):
        assert f"\n{gauge} " in text
    assert _sample(text, "millimetric_scrape_errors", store="event_store") == 0
    assert "# TYPE millimetric_clickhouse_insert_duration_seconds histogram" in text
    assert "# TYPE millimetric_store_flush_duration_seconds histogram" in text


def test_rate_limited_requests_are_counted(client: TestClient, keys: Keys) -> None:
    before = _sample(client.get("/metrics").text, "millimetric_rate_limited_requests_total", route="/v1/track")
    services = client.app.state.services
    services.control.update_project(
        keys.project_id, ProjectChanges(rate_limits={"/v1/track": {"rate": 0.001, "burst": 1}})
    )
    services.keys.invalidate()
    statuses = [
        client.post("/v1/track", json={"event": "e", "anonymous_id": "a"}, headers=bearer(keys.sk)).status_code
        for _ in range(3)
    ]
    assert statuses == [202, 429, 429]
    after = _sample(client.get("/metrics").text, "millimetric_rate_limited_requests_total", route="/v1/track")
    assert after - before == 2


def _served_by(log: Path, route: str) -> set[int]:
    """The worker processes whose access lines show `route` (JSON log lines)."""
    pids = set()
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("route") == route:
                pids.add(entry["pid"])
    return pids


@pytest.mark.slow
def test_two_workers_are_summed_and_the_token_is_required(server_factory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    env = {
        "MILLIMETRIC_WORKERS": "2",
        "MILLIMETRIC_METRICS_TOKEN": TOKEN,
        "MILLIMETRIC_LOG_FORMAT": "json",
        "MILLIMETRIC_LOG_LEVEL": "info",
    }
    server = server_factory(data_dir, env=env)
    token = {"Authorization": f"Bearer {TOKEN}"}
    sent = 0
    # A new connection per request: the kernel hands each to one worker. Go on until both served some.
    while sent < 400 and (sent < 20 or len(_served_by(server.log_path, "/v1/track")) < 2):
        response = httpx.post(
            f"{server.url}/v1/track",
            json={"event": "e", "anonymous_id": f"a{sent}"},
            headers=bearer(keys.sk),
            timeout=30,
        )
        assert response.status_code == 202
        sent += 1
    assert len(_served_by(server.log_path, "/v1/track")) == 2, "the requests never reached the second worker"
    assert httpx.get(f"{server.url}/metrics", timeout=30).json()["error"] == "missing_bearer_token"
    wrong = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer not-it"}, timeout=30)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_api_key"

    # Each worker publishes its request counts every second: within a few, a scrape sums both.
    def counted(text: str) -> tuple[float, float]:
        requests = _sample(text, "millimetric_http_requests_total", route="/v1/track", method="POST", status="202")
        return requests, _sample(text, "millimetric_events_accepted_total")

    deadline = time.monotonic() + 30
    while counted(httpx.get(f"{server.url}/metrics", headers=token, timeout=30).text) != (sent, sent):
        assert time.monotonic() < deadline, "the scrapes never summed both workers' requests"
        time.sleep(0.5)
    # From then on, whichever worker answers a scrape reports both workers' counts.
    scrapes = 0
    while scrapes < 6 or (len(_served_by(server.log_path, "/metrics")) < 2 and scrapes < 60):
        response = httpx.get(f"{server.url}/metrics", headers=token, timeout=30)
        assert response.status_code == 200
        assert counted(response.text) == (sent, sent)
        scrapes += 1
    assert len(_served_by(server.log_path, "/metrics")) == 2, "no scrape reached the second worker"
    # Queue depth is a gauge each worker refreshes every second: summed, it is back to 0 when idle.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics", headers=token, timeout=30).text
        if "\nmillimetric_ingest_queue_events 0.0" in text:
            break
        time.sleep(0.5)
    else:
        pytest.fail("millimetric_ingest_queue_events never read 0 on an idle server")
