"""Nothing blocks the event loop: salts are prepared ahead, unknown keys are cached, and the
bookkeeping counters are taken on the loop and written in a thread, with nothing lost."""

import asyncio
import datetime as dt
import sys
import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from millimetric.auth.guard import KeyResolver
from millimetric.auth.keys import mint_key, parse_key
from millimetric.errors import ApiError
from millimetric.ingest.visit import VisitFactory
from millimetric.store.control import ControlPlane, utcnow
from millimetric.store.schema import api_keys

from conftest import bearer, stored_events

UTC = dt.timezone.utc
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def control(tmp_path):
    plane = ControlPlane(f"sqlite:///{tmp_path / 'c.sqlite3'}", "pepper")
    plane.migrate()
    yield plane
    plane.close()


def record_salt_threads(control: ControlPlane) -> list[tuple[dt.date, int]]:
    """Wrap the real `salt_for_day` to record the day asked for and the thread it ran in."""
    calls: list[tuple[dt.date, int]] = []
    real = control.salt_for_day

    def salt_for_day(day):
        calls.append((day, threading.get_ident()))
        return real(day)

    control.salt_for_day = salt_for_day
    return calls


# salts -----------------------------------------------------------------------------------------
def test_the_chore_prepares_tomorrows_salt_and_drops_old_ones(control):
    clock = Clock(dt.datetime(2026, 5, 1, 9, tzinfo=UTC))
    factory = VisitFactory(control, clock)
    factory.prepare_salts()
    assert control.salt_days() == [dt.date(2026, 5, 1), dt.date(2026, 5, 2)]  # tomorrow's, before midnight
    clock.now = dt.datetime(2026, 5, 2, 0, 5, tzinfo=UTC)
    factory.prepare_salts()
    assert control.salt_days() == [dt.date(2026, 5, 2), dt.date(2026, 5, 3)]  # none outlives 48 h
    clock.now = dt.datetime(2026, 5, 2, 23, 59, tzinfo=UTC)
    factory.prepare_salts()
    assert control.salt_days() == [dt.date(2026, 5, 2), dt.date(2026, 5, 3)]


def test_a_new_day_is_served_from_prepared_salts_and_a_clock_jump_off_the_loop(control):
    project, _ = control.create_project("p")
    calls = record_salt_threads(control)
    clock = Clock(dt.datetime(2026, 5, 1, 23, 59, 59, tzinfo=UTC))

    async def main() -> int:
        factory = await asyncio.to_thread(VisitFactory, control, clock)  # as Services.open does
        await asyncio.to_thread(factory.prepare_salts)  # the chore
        asked = len(calls)
        clock.now = dt.datetime(2026, 5, 2, 0, 0, 1, tzinfo=UTC)  # the first request of a new day
        visit = await factory.visit_async(project, "198.51.100.7", "Mozilla/5.0", "shop.example.com")
        assert len(calls) == asked  # from memory: no control-plane call at all
        assert visit.salt == await asyncio.to_thread(control.salt_for_day, dt.date(2026, 5, 2))
        clock.now = dt.datetime(2026, 5, 9, 12, tzinfo=UTC)  # the clock jumps: nothing prepared
        visit = await factory.visit_async(project, "198.51.100.7", "Mozilla/5.0", "shop.example.com")
        assert calls[-1][0] == dt.date(2026, 5, 9)
        assert visit.salt == await asyncio.to_thread(control.salt_for_day, dt.date(2026, 5, 9))
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert calls and all(thread != loop_thread for _, thread in calls)


def test_requests_at_a_new_day_do_not_touch_the_control_plane_on_the_loop(client, keys, monkeypatch):
    services = client.app.state.services
    calls = record_salt_threads(services.control)
    loop_thread = client.portal.call(threading.get_ident)
    today = dt.datetime.now(UTC)
    headers = bearer(keys.sk)
    monkeypatch.setattr(services.visits, "_clock", lambda: today + dt.timedelta(days=1))  # prepared at start-up
    assert client.post("/v1/track", json={"event": "tomorrow"}, headers=headers).status_code == 202
    assert calls == []
    monkeypatch.setattr(services.visits, "_clock", lambda: today + dt.timedelta(days=5))  # not prepared
    assert client.post("/v1/track", json={"event": "jumped"}, headers=headers).status_code == 202
    assert [day for day, _ in calls] == [(today + dt.timedelta(days=5)).date()]
    assert all(thread != loop_thread for _, thread in calls)
    tomorrow, jumped = stored_events(client)
    assert (tomorrow["event_name"], jumped["event_name"]) == ("tomorrow", "jumped")
    assert tomorrow["ip_hash"] != jumped["ip_hash"]  # each day's own salt


# unknown keys ----------------------------------------------------------------------------------
class Monotonic:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_an_unknown_key_costs_one_lookup_per_ttl_and_a_new_key_works_after_it(control):
    project, _ = control.create_project("p")
    minted = mint_key("sk", "live", control.pepper)  # well-formed, not stored (yet)
    lookups = Counter()
    real_find_key = control.find_key

    def find_key(prefix):
        lookups[prefix] += 1
        return real_find_key(prefix)

    control.find_key = find_key
    clock = Monotonic()
    resolver = KeyResolver(control, ttl=60.0, clock=clock, unknown_ttl=5.0)
    authorization = f"Bearer {minted.token}"

    async def attempt() -> str:
        try:
            await resolver.authenticate(authorization)
        except ApiError as error:
            return error.code
        return "ok"

    async def main() -> None:
        assert await asyncio.gather(*(attempt() for _ in range(50))) == ["invalid_api_key"] * 50
        assert lookups[minted.prefix] == 1  # concurrent lookups of one prefix: one query
        for _ in range(50):
            clock.now += 0.05
            assert await attempt() == "invalid_api_key"
        assert lookups[minted.prefix] == 1  # remembered as unknown for the TTL
        with control.engine.begin() as conn:  # the key is created meanwhile
            conn.execute(
                api_keys.insert().values(
                    prefix=minted.prefix,
                    account_id=project.account_id,
                    project_id=project.id,
                    kind="sk",
                    env="live",
                    name=None,
                    secret_hash=minted.secret_hash,
                    created_at=utcnow(),
                )
            )
        assert await attempt() == "invalid_api_key"  # still within the TTL
        clock.now += 5.0
        assert await attempt() == "ok"  # the negative entry expired
        assert lookups[minted.prefix] == 2
        assert [await attempt() for _ in range(10)] == ["ok"] * 10
        assert lookups[minted.prefix] == 2

    asyncio.run(main())


def test_unknown_keys_are_remembered_within_a_bound_oldest_first(control):
    resolver = KeyResolver(control, ttl=60.0, clock=Monotonic(), unknown_max_entries=3)
    lookups = Counter()
    real_find_key = control.find_key
    control.find_key = lambda prefix: (lookups.update([prefix]), real_find_key(prefix))[1]
    tokens = [mint_key("sk", "live", "pepper").token for _ in range(5)]

    async def main() -> None:
        for token in tokens + tokens[::-1]:  # the newest three are remembered, the oldest two not
            with pytest.raises(ApiError):
                await resolver.authenticate(f"Bearer {token}")

    asyncio.run(main())
    assert [lookups[parse_key(t).prefix] for t in tokens] == [2, 2, 1, 1, 1]


# counters --------------------------------------------------------------------------------------
def slow_writes(services, monkeypatch, seconds=0.002):
    """Make the control-plane writes of a flush slow, so the loop keeps writing while they run."""
    touch_keys, add_dropped = services.control.touch_keys, services.control.add_dropped

    def slow_touch(pending):
        for _ in pending.items():  # iterates what it was given, as the real write does
            threading.Event().wait(seconds)
        touch_keys(pending)

    def slow_add(counts):
        threading.Event().wait(seconds)
        add_dropped(counts)

    monkeypatch.setattr(services.control, "touch_keys", slow_touch)
    monkeypatch.setattr(services.control, "add_dropped", slow_add)


def test_writes_during_flushes_are_never_lost(client, keys, monkeypatch):
    services = client.app.state.services
    slow_writes(services, monkeypatch)
    prefixes = [parse_key(token).prefix for token in (keys.pk, keys.sk, keys.rk)]
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over often: a swap in a thread would race the loop
    written = 0

    async def drive() -> dt.datetime:
        nonlocal written
        done = asyncio.Event()
        flushes = [0, 0]

        async def flusher(n: int) -> None:
            while not done.is_set():
                await services.record_counters()
                flushes[n] += 1
                await asyncio.sleep(0)

        flushers = [asyncio.create_task(flusher(n)) for n in range(2)]
        last = start
        deadline = time.monotonic() + 20
        while written < 2000 or min(flushes) < 20:  # many writes, while many flushes run
            if time.monotonic() > deadline or any(task.done() for task in flushers):
                break
            last = start + dt.timedelta(microseconds=written)
            for prefix in prefixes:
                services.keys._last_used[prefix] = last
            services.count_dropped(keys.project_id, Counter({"bot": 1, "forgotten_user": 2}))
            written += 1
            if written % 5 == 0:
                await asyncio.sleep(0)
        done.set()
        await asyncio.gather(*flushers)
        assert min(flushes) >= 20
        await services.record_counters()
        return last

    try:
        last = client.portal.call(drive)
    finally:
        sys.setswitchinterval(switch_interval)
    assert services.control.dropped_counts(keys.project_id) == {"bot": written, "forgotten_user": 2 * written}
    assert [services.control.find_key(p).last_used_at for p in prefixes] == [last] * 3


def test_a_failed_write_keeps_the_counters_for_the_next_one(client, keys, monkeypatch):
    services = client.app.state.services
    add_dropped = services.control.add_dropped
    failures = iter([True])

    def failing_once(counts):
        if next(failures, False):
            raise sa.exc.OperationalError("UPDATE", {}, Exception("database is locked"))
        add_dropped(counts)

    monkeypatch.setattr(services.control, "add_dropped", failing_once)

    async def run() -> None:
        services.count_dropped(keys.project_id, Counter({"bot": 2}))
        with pytest.raises(sa.exc.OperationalError):
            await services.record_counters()
        services.count_dropped(keys.project_id, Counter({"bot": 1}))
        await services.record_counters()

    client.portal.call(run)
    assert services.control.dropped_counts(keys.project_id) == {"bot": 3}


def test_counters_left_at_shutdown_are_written(settings):
    from starlette.testclient import TestClient

    from millimetric.api.app import create_app

    with TestClient(create_app(settings)) as client:
        services = client.app.state.services
        project, tokens = services.control.create_project("p")
        for _ in range(3):
            client.post("/v1/track", json={"event": "x"}, headers=bearer(tokens["sk"], **{"User-Agent": GOOGLEBOT}))
    control = ControlPlane(settings.control_plane_url, settings.resolved_pepper())
    try:
        assert control.dropped_counts(project.id) == {"bot": 3}
        assert control.find_key(parse_key(tokens["sk"]).prefix).last_used_at is not None
    finally:
        control.close()
