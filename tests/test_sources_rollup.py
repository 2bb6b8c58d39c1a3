"""GET /v1/sources against a plain-Python reference, whatever part of the data the sources rollup
holds: before any fold, after one, with newer events on top, across partial days at both ends of
the range, and after forget and retention deleted events."""

import datetime as dt
import random

import pytest
from starlette.testclient import TestClient

from millimetric.api.app import create_app
from millimetric.query.plans import TimeRange
from millimetric.store.duckdb_reads import rolled_up_days

from conftest import bearer, create_project, make_settings, stored_events

START = dt.datetime(2024, 3, 1)
SPAN_S = 12 * 86400
# url, referrer: the classifier turns these into google/organic, google/paid, facebook/social,
# facebook/paid, newsletter/email and direct/direct
ARRIVALS = [
    ("https://shop.example.com/", "https://www.google.com/"),
    ("https://shop.example.com/?gclid=1", None),
    ("https://shop.example.com/", "https://l.facebook.com/"),
    ("https://shop.example.com/?fbclid=2&utm_source=facebook&utm_medium=paid", None),
    ("https://shop.example.com/?utm_source=newsletter&utm_medium=email", None),
    ("https://shop.example.com/", None),
]
RANGES = [
    ("2024-03-01T00:00:00Z", "2024-03-13T00:00:00Z"),  # whole days only
    ("2024-03-01T07:30:00Z", "2024-03-11T18:15:00Z"),  # partial days at both ends
    ("2024-03-02T07:30:00Z", "2024-03-08T18:15:00Z"),  # too few whole days to use the rollup
    ("2024-03-04T01:00:00Z", "2024-03-04T23:00:00Z"),  # inside one day: no whole day at all
    ("2024-03-05T00:00:00Z", "2024-03-05T12:00:00Z"),  # starts on a day boundary, ends mid-day
    ("2024-03-06T12:00:00Z", "2024-03-08T00:00:00Z"),  # starts mid-day, ends on a boundary
]


def generated_events(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    events = []
    for _ in range(n):
        url, referrer = rng.choice(ARRIVALS)
        when = START + dt.timedelta(seconds=rng.randrange(SPAN_S))
        visitor = rng.randrange(150)  # visitors return on other days, by other sources
        event = {"event": "$pageview", "timestamp": when.isoformat() + "Z", "anonymous_id": f"v{visitor}", "url": url}
        if referrer:
            event["referrer"] = referrer
        if visitor % 10 == 0:
            event["user_id"] = f"u{visitor}"
        events.append(event)
    return events


def expected(rows: list[dict], start: str, end: str, breakdown: str) -> list[dict]:
    lo = dt.datetime.fromisoformat(start.replace("Z", ""))
    hi = dt.datetime.fromisoformat(end.replace("Z", ""))
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if lo <= row["timestamp"] < hi:
            key = (row["source"], row["medium"]) if breakdown == "source_medium" else (row["source"],)
            groups.setdefault(key, []).append(row)
    answer = []
    for key, members in groups.items():
        item = {"source": key[0]}
        if breakdown == "source_medium":
            item["medium"] = key[1]
        paid = sum(1 for m in members if m["medium"] == "paid")
        item.update(events=len(members), uniques=len({m["anonymous_id"] for m in members}),
                    paid_share=paid / len(members))
        answer.append(item)
    answer.sort(key=lambda r: (-r["events"], r["source"], r.get("medium", "")))
    return answer


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("rollup") / "data")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, create_project(client)


def send(client, sk, events):
    for i in range(0, len(events), 1000):
        r = client.post("/v1/batch", json={"events": events[i:i + 1000]}, headers=bearer(sk))
        assert r.status_code == 202, r.text


def assert_matches_reference(client, keys):
    rows = stored_events(client, "project_id = ?", (keys.project_id,))
    for start, end in RANGES:
        for breakdown in ("source_medium", "source"):
            r = client.get("/v1/sources", params={"from": start, "to": end, "breakdown": breakdown, "limit": 200},
                           headers=bearer(keys.rk))
            assert r.status_code == 200, r.text
            assert r.json()["rows"] == expected(rows, start, end, breakdown), (start, end, breakdown)


def test_answers_are_exact_whatever_the_rollup_holds(app):
    client, keys = app
    store = client.app.state.services.events
    send(client, keys.sk, generated_events(1500, seed=1))
    assert store.fetch("SELECT covered_seq FROM rollup_state")[1] == [(0,)]
    assert_matches_reference(client, keys)  # nothing folded yet: every event is read raw
    store.fold()
    assert store.fetch("SELECT covered_seq FROM rollup_state")[1] == [(1500,)]
    assert store.fold() == 0
    assert_matches_reference(client, keys)  # all of it from the rollup, but the partial days
    send(client, keys.sk, generated_events(700, seed=2))
    assert_matches_reference(client, keys)  # newer events on top of the rollup
    store.fold()
    assert_matches_reference(client, keys)
    assert len({row["source"] for row in stored_events(client)}) >= 4  # the data is varied


def test_answers_stay_exact_after_forget_and_retention(app):
    client, keys = app
    store = client.app.state.services.events
    send(client, keys.sk, generated_events(500, seed=3))
    store.fold()
    for user in ("u0", "u20", "u70"):
        assert store.delete_user(keys.project_id, user) > 0
    assert_matches_reference(client, keys)
    # every event of v0 carried user u0: forgetting u0 leaves nothing of v0 in the rollup either
    _, rows = store.fetch("SELECT count(*) FROM rollup_visitors WHERE anonymous_id IN ('v0', 'v20', 'v70')")
    assert rows == [(0,)]
    _, rows = store.fetch("SELECT count(*) FROM rollup_visitors WHERE anonymous_id = 'v1'")
    assert rows == [(1,)]
    send(client, keys.sk, generated_events(300, seed=4))  # unfolded rows, then a retention cut mid-day
    assert store.delete_before(keys.project_id, dt.datetime(2024, 3, 5, 13, 30)) > 0
    assert_matches_reference(client, keys)
    store.fold()
    assert_matches_reference(client, keys)
    assert min(row["timestamp"] for row in stored_events(client)) >= dt.datetime(2024, 3, 5, 13, 30)


def test_the_rollup_holds_one_row_per_visitor_and_way_in(app):
    client, keys = app
    store = client.app.state.services.events
    store.fold()
    _, rows = store.fetch(
        "SELECT count(*), count(DISTINCT (way, vid)) FROM source_medium_visitors WHERE project_id = ?",
        [keys.project_id])
    assert rows[0][0] == rows[0][1] > 0
    for table in ("source_medium_visitors", "source_visitors"):
        _, rows = store.fetch(f"SELECT count(*) FROM {table} WHERE list_sort(days) != days OR len(days) = 0")
        assert rows == [(0,)]
    _, rows = store.fetch("SELECT count(*), count(DISTINCT vid), count(DISTINCT anonymous_id) FROM rollup_visitors")
    assert rows[0][0] == rows[0][1] == rows[0][2] > 0


@pytest.mark.parametrize(("start", "end", "days"), [
    (dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 8), (dt.date(2024, 3, 1), dt.date(2024, 3, 8))),
    (dt.datetime(2024, 3, 1, 0, 0, 1), dt.datetime(2024, 3, 9, 5), (dt.date(2024, 3, 2), dt.date(2024, 3, 9))),
    (dt.datetime(2024, 3, 1, 0, 0, 1), dt.datetime(2024, 3, 8, 5), (dt.date(2024, 3, 2), dt.date(2024, 3, 2))),
    (dt.datetime(2024, 3, 1, 6), dt.datetime(2024, 3, 1, 9), (dt.date(2024, 3, 2), dt.date(2024, 3, 2))),
])
def test_the_rollup_answers_for_the_whole_days_of_a_week_or_more(start, end, days):
    assert rolled_up_days(TimeRange(start, end)) == days
