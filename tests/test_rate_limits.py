"""Token buckets per (project, route): accuracy over real HTTP, in-process and shared through Redis."""

import asyncio
import time
import uuid

import httpx
import pytest
import redis

from millimetric.auth.ratelimit import InProcessLimiter, Limit, RedisLimiter, retry_after_seconds
from millimetric.store.control import ProjectChanges

from conftest import bearer, cli, cli_project, create_project

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_in_process_bucket_refills_at_the_rate():
    clock = Clock()
    limiter = InProcessLimiter(clock)
    limit = Limit(rate=5, burst=3)
    assert [asyncio.run(limiter.take("k", limit)) for _ in range(3)] == [0, 0, 0]
    wait = asyncio.run(limiter.take("k", limit))
    assert wait == pytest.approx(0.2)
    clock.now += 0.2
    assert asyncio.run(limiter.take("k", limit)) == 0
    clock.now += 100
    assert [asyncio.run(limiter.take("k", limit)) for _ in range(4)][:3] == [0, 0, 0]  # capped at the burst


def test_retry_after_is_whole_seconds_at_least_one():
    assert [retry_after_seconds(w) for w in (0.001, 0.5, 1.0, 1.2, 7.9)] == [1, 1, 1, 2, 8]


def test_429_carries_retry_after_and_buckets_are_per_project_and_route(client, keys):
    services = client.app.state.services
    services.control.update_project(
        keys.project_id, ProjectChanges(rate_limits={"/v1/track": {"rate": 0.5, "burst": 2}})
    )
    services.keys.invalidate()
    answers = [client.post("/v1/track", json={"event": "x"}, headers=bearer(keys.sk)) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[2].json() == {"error": "rate_limited", "retry_after_s": 2}
    assert answers[2].headers["retry-after"] == "2"
    other = create_project(client, "other")
    assert client.post("/v1/track", json={"event": "x"}, headers=bearer(other.sk)).status_code == 202
    batch = client.post("/v1/batch", json={"events": [{"event": "x"}]}, headers=bearer(keys.sk))
    assert batch.status_code == 202  # another route, another bucket


def test_a_route_can_be_switched_off_per_project(client, keys):
    services = client.app.state.services
    services.control.update_project(keys.project_id, ProjectChanges(rate_limits={"/v1/batch": "off"}))
    services.keys.invalidate()
    answers = [client.post("/v1/batch", json={"events": [{"event": "x"}]}, headers=bearer(keys.sk)) for _ in range(40)]
    assert {a.status_code for a in answers} == {202}


def drive(urls: list[str], token: str, rate: float, seconds: float) -> dict[int, int]:
    """Send /v1/track at `rate` requests/s spread over `urls` for `seconds`; count statuses."""

    async def run() -> dict[int, int]:
        counts: dict[int, int] = {}
        # Idle connections expire here before the server's 5 s keep-alive timeout closes them: a
        # request sent on a connection the server is closing at that moment fails with ReadError.
        limits = httpx.Limits(keepalive_expiry=2.0)
        async with httpx.AsyncClient(headers=bearer(token), timeout=10, limits=limits) as client:
            start = time.monotonic()
            tasks = []
            for n in range(int(rate * seconds)):
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(client.post(f"{urls[n % len(urls)]}/v1/track", json={"event": "x"})))
            for response in await asyncio.gather(*tasks):
                counts[response.status_code] = counts.get(response.status_code, 0) + 1
                if response.status_code == 429:
                    assert int(response.headers["retry-after"]) >= 1
                    assert response.json()["retry_after_s"] == int(response.headers["retry-after"])
        return counts

    return asyncio.run(run())


def expected_accepts(rate: float, burst: int, seconds: float) -> float:
    return burst + rate * seconds


def test_in_process_accuracy_at_twice_the_refill_rate(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    server = server_factory(data_dir, env={"MILLIMETRIC_RATE_LIMITS": "on"})
    counts = drive([server.url], keys.sk, rate=100, seconds=10)
    assert set(counts) <= {202, 429}
    assert counts[202] == pytest.approx(expected_accepts(50, 200, 10), rel=0.05)


@pytest.fixture
def redis_prefix():
    prefix = f"mm-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def test_redis_limiter_takes_tokens_atomically(redis_prefix):
    async def run() -> list[float]:
        limiter = RedisLimiter(REDIS_URL, redis_prefix)
        try:
            return await asyncio.gather(*(limiter.take("p:/v1/track", Limit(1, 10)) for _ in range(30)))
        finally:
            await limiter.close()

    waits = asyncio.run(run())
    assert sum(1 for w in waits if w == 0) == 10


def test_two_servers_share_one_budget_through_redis(server_factory, tmp_path, redis_prefix):
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    cli("projects", "create", "unused", data_dir=data_dir)
    env = {
        "MILLIMETRIC_RATE_LIMITS": "on",
        "MILLIMETRIC_REDIS_URL": REDIS_URL,
        "MILLIMETRIC_REDIS_PREFIX": redis_prefix,
    }
    first = server_factory(data_dir, env=env)
    # A second API process on another port and data directory, sharing the control plane (same
    # SQLite file through MILLIMETRIC_DATABASE_URL) and the Redis budget.
    shared_control = {
        "MILLIMETRIC_DATABASE_URL": f"sqlite:///{data_dir / 'control.sqlite3'}",
        "MILLIMETRIC_PEPPER": (data_dir / "pepper").read_text().strip(),
    }
    second = server_factory(tmp_path / "data2", env={**env, **shared_control})
    counts = drive([first.url, second.url], keys.sk, rate=100, seconds=10)
    assert set(counts) <= {202, 429}
    assert counts[202] == pytest.approx(expected_accepts(50, 200, 10), rel=0.05)


def test_unreachable_redis_fails_open(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    env = {"MILLIMETRIC_RATE_LIMITS": "on", "MILLIMETRIC_REDIS_URL": "redis://127.0.0.1:1/0"}
    server = server_factory(data_dir, env=env)
    statuses = {
        httpx.post(f"{server.url}/v1/track", json={"event": "x"}, headers=bearer(keys.sk)).status_code for _ in range(5)
    }
    assert statuses == {202}
    server.stop()
    assert "failing open" in server.log_path.read_text()
