"""Many nodes over one ClickHouse: two `millimetric serve` processes with their own data directories
(and spools), the same ClickHouse (the engine behind the stand-in, stopped and started like a
server), a fresh PostgreSQL database and a Redis prefix of their own.

"Exactly once" is checked in ClickHouse itself: every acknowledged event id once, nothing else.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import clickhouse_connect
import httpx
import psycopg
import pytest
import redis

from clickhouse_standin import StandInProcess
from millimetric.store.control import ControlPlane, ProjectChanges

from conftest import POSTGRES_ADMIN_URL, REAL_CLICKHOUSE_URL, Keys, ServerProcess, bearer, cli, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(REAL_CLICKHOUSE_URL), reason="stops and restarts ClickHouse: runs on the stand-in only"),
]
REDIS_URL = "redis://127.0.0.1:6379/0"
PEPPER = "a-pepper-every-node-shares"
RANGE = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
DEADLINE = 60.0  # generous: a shared 2-core machine


class Cluster:
    """The services and the two nodes of one test."""

    def __init__(self, root: Path, clickhouse: StandInProcess, database_url: str, redis_prefix: str) -> None:
        self.root, self.clickhouse = root, clickhouse
        self.database = f"mm_nodes_{uuid.uuid4().hex[:10]}"
        self.env = {
            "MILLIMETRIC_CLICKHOUSE_URL": f"{clickhouse.url}/{self.database}",
            "MILLIMETRIC_DATABASE_URL": database_url,
            "MILLIMETRIC_REDIS_URL": REDIS_URL,
            "MILLIMETRIC_REDIS_PREFIX": redis_prefix,
            "MILLIMETRIC_PEPPER": PEPPER,
            "MILLIMETRIC_KEY_CACHE_TTL": "1",
        }
        self.nodes: dict[str, ServerProcess] = {}
        self.keys = self._project()

    def _project(self) -> Keys:
        out = cli("projects", "create", "shop", "--json", data_dir=self.root / "cli", env=self.env).stdout
        doc = json.loads(out)
        p, k = doc["project"], doc["keys"]
        return Keys(p["id"], p["slug"], k["pk"], k["sk"], k["rk"])

    def start(self, name: str, env: dict[str, str] | None = None) -> ServerProcess:
        """Start (or restart) node `name`; it need not find ClickHouse up."""
        node = self.nodes.get(name) or ServerProcess(self.root / name, {**self.env, **(env or {})})
        self.nodes[name] = node
        node.start(60.0, healthy=False)
        return node

    def query(self, sql: str) -> list[tuple]:
        parts = urlsplit(self.clickhouse.url)
        client = clickhouse_connect.get_client(host=parts.hostname, port=parts.port, database=self.database)
        try:
            return client.query(sql).result_rows
        finally:
            client.close()

    def stored_ids(self) -> list[str]:
        return [event_id for (event_id,) in self.query("SELECT event_id FROM events ORDER BY event_id")]

    def wait_stored(self, acknowledged: list[str]) -> None:
        """Until ClickHouse holds every acknowledged event; then exactly those, once each."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                if len(self.stored_ids()) >= len(acknowledged):
                    break
            except Exception:  # the tables are created by the first node that reaches ClickHouse
                pass
            time.sleep(0.2)
        assert sorted(self.stored_ids()) == sorted(acknowledged)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    database = f"mm_nodes_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    prefix = f"mm-nodes-{uuid.uuid4().hex[:8]}:"
    clickhouse = StandInProcess(tmp_path / "clickhouse").start()
    cluster = None
    try:
        cluster = Cluster(tmp_path, clickhouse, f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{database}", prefix)
        yield cluster
    finally:
        if cluster is not None:
            for node in cluster.nodes.values():
                node.kill()
        clickhouse.stop()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


class Sender:
    """Sends batches of events with unique ids to the nodes in turn; keeps the acknowledged ids."""

    def __init__(self, cluster: Cluster, tag: str) -> None:
        self.cluster, self.tag = cluster, tag
        self.acknowledged: list[str] = []
        self.refused = 0
        self._n = 0

    def send(self, node: ServerProcess, events: int = 20, **fields: str) -> int:
        ids = [f"{self.tag}-{self._n + i}" for i in range(events)]
        self._n += events
        body = {"events": [{"event": "click", "event_id": i, "anonymous_id": f"v{i}", **fields} for i in ids]}
        try:
            answer = httpx.post(f"{node.url}/v1/batch", json=body, headers=bearer(self.cluster.keys.sk), timeout=30)
        except httpx.HTTPError:
            self.refused += 1
            return 0
        if answer.status_code == 202:
            self.acknowledged += ids
        else:
            self.refused += 1
        return answer.status_code


def count_from(node: ServerProcess, keys: Keys, **filters: str) -> int:
    answer = httpx.get(
        f"{node.url}/v1/stats", params={**RANGE, "metric": "count", **filters}, headers=bearer(keys.rk), timeout=30
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["approximate"] is False
    return body["rows"][0]["value"] if body["rows"] else 0


def wait_for(condition, what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_events_sent_to_both_nodes_read_equally_from_both(cluster: Cluster) -> None:
    a, b = cluster.start("a"), cluster.start("b")
    sender = Sender(cluster, "both")
    for _ in range(5):
        assert sender.send(a) == 202 and sender.send(b) == 202
    total = len(sender.acknowledged)
    for node in (a, b):  # within 5 s of the acknowledgement (more on a loaded machine)
        wait_for(lambda node=node: count_from(node, cluster.keys) == total, f"{total} events read from {node.url}")
    rows = {}
    for node in (a, b):
        answer = httpx.get(f"{node.url}/v1/query", params={**RANGE, "limit": 1000}, headers=bearer(cluster.keys.rk))
        rows[node.url] = answer.json()["rows"]
    assert rows[a.url] == rows[b.url] and len(rows[a.url]) == total
    # A cursor from one node pages on the other.
    first = httpx.get(f"{a.url}/v1/query", params={**RANGE, "limit": 30}, headers=bearer(cluster.keys.rk)).json()
    second = httpx.get(
        f"{b.url}/v1/query",
        params={**RANGE, "limit": 1000, "cursor": first["next_cursor"]},
        headers=bearer(cluster.keys.rk),
    ).json()
    assert first["rows"] + second["rows"] == rows[a.url]
    cluster.wait_stored(sender.acknowledged)


def test_clickhouse_stopped_mid_stream_then_restarted(cluster: Cluster) -> None:
    a, b = cluster.start("a"), cluster.start("b")
    sender = Sender(cluster, "outage")
    for _ in range(3):
        sender.send(a), sender.send(b)
    cluster.clickhouse.stop()
    for _ in range(5):  # accepted into the spools while ClickHouse is down
        assert sender.send(a) == 202 and sender.send(b) == 202
    health = httpx.get(f"{a.url}/healthz", timeout=10)
    assert health.status_code == 503 and health.json()["event_store"] != "ok", health.text
    cluster.clickhouse.start()
    for _ in range(3):
        sender.send(a), sender.send(b)
    assert sender.refused == 0
    cluster.wait_stored(sender.acknowledged)
    wait_for(lambda: httpx.get(f"{b.url}/healthz").status_code == 200, "healthy again")


def test_a_node_killed_while_clickhouse_is_down_loses_nothing(cluster: Cluster) -> None:
    a, b = cluster.start("a"), cluster.start("b")
    sender = Sender(cluster, "kill")
    sender.send(a), sender.send(b)
    cluster.clickhouse.stop()
    for _ in range(5):
        assert sender.send(a) == 202 and sender.send(b) == 202
    a.kill()  # SIGKILL: the spool on its disk is all that is left of those events
    cluster.clickhouse.start()
    cluster.start("a")  # restarted on its data directory: its spool ships
    cluster.wait_stored(sender.acknowledged)
    assert sender.refused == 0


def test_a_forget_sent_through_one_node_is_seen_from_the_other(cluster: Cluster) -> None:
    a, b = cluster.start("a"), cluster.start("b")
    sender = Sender(cluster, "forget")
    sender.send(a, 10, user_id="leaving")
    sender.send(b, 10, user_id="staying")
    wait_for(lambda: count_from(a, cluster.keys) == 20, "20 events")
    answer = httpx.post(f"{b.url}/v1/forget", json={"user_id": "leaving"}, headers=bearer(cluster.keys.sk))
    assert answer.status_code == 200 and answer.json()["queued"], answer.text
    job = answer.json()["job_id"]

    def done() -> bool:
        status = httpx.get(f"{b.url}/v1/forget/{job}", headers=bearer(cluster.keys.sk)).json()["status"]
        assert status != "failed"
        return status == "done"

    wait_for(done, "the forget job")
    assert count_from(a, cluster.keys, user_id="leaving") == 0  # done means gone, on every node
    assert count_from(a, cluster.keys) == 10
    assert len(cluster.stored_ids()) == 10


def test_the_rate_limit_budget_is_shared_across_nodes(cluster: Cluster) -> None:
    control = ControlPlane(cluster.env["MILLIMETRIC_DATABASE_URL"], PEPPER)
    changes = ProjectChanges(rate_limits={"/v1/track": {"rate": 0.01, "burst": 4}})
    assert control.update_project(cluster.keys.project_id, changes) is not None
    env = {"MILLIMETRIC_RATE_LIMITS": "on"}
    a, b = cluster.start("a", env), cluster.start("b", env)
    statuses = [
        httpx.post(f"{node.url}/v1/track", json={"event": "x"}, headers=bearer(cluster.keys.sk)).status_code
        for node in (a, b, a, b, a, b)
    ]
    assert statuses == [202, 202, 202, 202, 429, 429]


def test_the_spool_limit_answers_503_overloaded(cluster: Cluster) -> None:
    a = cluster.start("a", {"MILLIMETRIC_SPOOL_MAX_BYTES": "20000"})
    sender = Sender(cluster, "full")
    assert sender.send(a) == 202
    cluster.clickhouse.stop()
    statuses = [sender.send(a, 50) for _ in range(20)]
    assert 503 in statuses
    events = [{"event": "x", "event_id": f"over-{i}"} for i in range(50)]
    refused = httpx.post(f"{a.url}/v1/batch", json={"events": events}, headers=bearer(cluster.keys.sk))
    assert (refused.status_code, refused.json()["error"]) == (503, "overloaded"), refused.text
    cluster.clickhouse.start()
    cluster.wait_stored(sender.acknowledged)
    wait_for(lambda: sender.send(a) == 202, "accepting again")


def test_the_same_ids_through_both_nodes_at_once_are_stored_once(cluster: Cluster) -> None:
    """De-duplication across nodes: the claim in the shared Redis decides, whichever node wins."""
    a, b = cluster.start("a"), cluster.start("b")
    ids = [f"twice-{i}" for i in range(8)]
    body = {"events": [{"event": "x", "event_id": event_id, "anonymous_id": "v"} for event_id in ids]}
    requests = 24

    def send(n: int) -> dict:
        node = (a, b)[n % 2]
        answer = httpx.post(f"{node.url}/v1/batch", json=body, headers=bearer(cluster.keys.sk), timeout=30)
        assert answer.status_code == 202, answer.text
        return answer.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(requests)))
    assert sum(answer.get("duplicates", 0) for answer in answers) == len(ids) * (requests - 1)
    # A repeat within one batch is a duplicate too, and /v1/track says so on either node.
    again = httpx.post(
        f"{b.url}/v1/batch",
        json={"events": [{"event": "x", "event_id": "fresh"}, {"event": "x", "event_id": "fresh"}]},
        headers=bearer(cluster.keys.sk),
    )
    assert again.json() == {"ok": True, "count": 2, "duplicates": 1}, again.text
    repeat = httpx.post(f"{a.url}/v1/track", json={"event": "x", "event_id": "fresh"}, headers=bearer(cluster.keys.sk))
    assert repeat.json() == {"ok": True, "event_id": "fresh", "duplicate": True}, repeat.text
    cluster.wait_stored([*ids, "fresh"])


def test_with_redis_unreachable_events_with_an_id_are_refused_not_doubled(cluster: Cluster) -> None:
    """Without its claims the node cannot decide: 503, retry later; events without an id go in."""
    a = cluster.start("a", {"MILLIMETRIC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    with_id = httpx.post(
        f"{a.url}/v1/batch", json={"events": [{"event": "x", "event_id": "kept-out"}]}, headers=bearer(cluster.keys.sk)
    )
    assert (with_id.status_code, with_id.json()["error"]) == (503, "overloaded"), with_id.text
    without = httpx.post(f"{a.url}/v1/track", json={"event": "x"}, headers=bearer(cluster.keys.sk))
    assert without.status_code == 202, without.text
    wait_for(lambda: count_from(a, cluster.keys) == 1, "the event without an id")
    assert cluster.stored_ids() == [None]
