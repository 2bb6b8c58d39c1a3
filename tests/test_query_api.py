"""GET /v1/query end to end: scopes, row shape, order, filters, identity stitching, cursors."""

import datetime as dt
import json
import uuid

import pytest

from millimetric.store.control import utcnow
from millimetric.store.schema import accounts

from conftest import bearer, create_project

RANGE = {"from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"}
SPEC_ROW_FIELDS = [
    "timestamp",
    "event_id",
    "event_name",
    "anonymous_id",
    "user_id",
    "session_id",
    "source",
    "medium",
    "campaign",
    "source_confidence",
    "source_rule_id",
    "referrer",
    "url",
    "path",
    "country",
    "device_type",
    "browser",
    "os",
    "properties",
]


def send(client, sk, *events):
    r = client.post("/v1/batch", json={"events": list(events)}, headers=bearer(sk))
    assert r.status_code == 202, r.text


def query(client, token, **params):
    r = client.get("/v1/query", params={**RANGE, **params}, headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


def foreign_project(client):
    """A project of another account."""
    control = client.app.state.services.control
    account_id = str(uuid.uuid4())
    with control.engine.begin() as conn:
        conn.execute(accounts.insert().values(id=account_id, name="someone else", created_at=utcnow()))
    project, tokens = control.create_project("theirs", [], account_id=account_id)
    return project, tokens


# scopes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/query", "/v1/stats", "/v1/sources"])
def test_read_scopes(client, keys, path):
    def status(token, **params):
        return client.get(path, params={**RANGE, **params}, headers=bearer(token)).status_code

    assert status(keys.rk) == 200 and status(keys.sk) == 200
    r = client.get(path, params=RANGE, headers=bearer(keys.pk, Origin="https://shop.example.com"))
    assert (r.status_code, r.json()) == (403, {"error": "insufficient_scope"})
    assert client.get(path, params=RANGE).json() == {"error": "missing_bearer_token"}
    # a project key reads its own project; naming it (id or slug) is allowed, naming another is not found
    assert status(keys.rk, project_id=keys.project_id) == 200 and status(keys.rk, project_id=keys.slug) == 200
    other = create_project(client, "other")
    r = client.get(path, params={**RANGE, "project_id": other.project_id}, headers=bearer(keys.rk))
    assert (r.status_code, r.json()["error"]) == (404, "not_found")


@pytest.mark.parametrize("path", ["/v1/query", "/v1/stats", "/v1/sources"])
def test_account_keys_read_any_project_of_their_account_only(client, keys, path):
    control = client.app.state.services.control
    ak = control.create_key(control.get_project(keys.project_id), "ak")
    send(client, keys.sk, {"event": "mine", "timestamp": "2024-01-05T00:00:00Z"})
    sibling = create_project(client, "sibling")  # same (local) account
    theirs, their_tokens = foreign_project(client)
    send(client, their_tokens["sk"], {"event": "theirs", "timestamp": "2024-01-05T00:00:00Z"})

    def get(**params):
        return client.get(path, params={**RANGE, **params}, headers=bearer(ak))

    assert get(project_id=keys.project_id).status_code == 200
    assert get(project_id=sibling.project_id).status_code == 200
    r = get()
    assert (r.status_code, r.json()["error"], r.json()["details"]["param"]) == (400, "invalid_params", "project_id")
    for unreadable in (theirs.id, theirs.slug, str(uuid.uuid4()), "nope"):
        r = get(project_id=unreadable)
        assert (r.status_code, r.json()) == (404, {"error": "not_found"})


def test_account_key_reads_the_named_projects_rows(client, keys):
    control = client.app.state.services.control
    ak = control.create_key(control.get_project(keys.project_id), "ak")
    sibling = create_project(client, "sibling")
    send(client, keys.sk, {"event": "mine", "timestamp": "2024-01-05T00:00:00Z"})
    send(client, sibling.sk, {"event": "sibling", "timestamp": "2024-01-05T00:00:00Z"})
    assert [r["event_name"] for r in query(client, ak, project_id=sibling.project_id)["rows"]] == ["sibling"]
    assert [r["event_name"] for r in query(client, ak, project_id=keys.slug)["rows"]] == ["mine"]


# rows -------------------------------------------------------------------------------------------
def test_row_fields_are_exactly_the_spec_list_and_properties_a_json_string(client, keys):
    send(
        client,
        keys.sk,
        {
            "event": "purchase",
            "event_id": "evt_1",
            "timestamp": "2024-01-05T10:20:30.123Z",
            "anonymous_id": "a1",
            "user_id": "u1",
            "session_id": "s1",
            "url": "https://shop.example.com/p?utm_source=google&utm_medium=cpc",
            "path": "/p",
            "referrer": "https://www.google.com/",
            "properties": {"amount": 4900, "items": ["x", "é"]},
        },
    )
    (row,) = query(client, keys.rk)["rows"]
    assert list(row) == SPEC_ROW_FIELDS
    assert row["timestamp"] == "2024-01-05T10:20:30.123Z"
    assert isinstance(row["properties"], str) and json.loads(row["properties"]) == {"amount": 4900, "items": ["x", "é"]}
    assert (row["event_id"], row["event_name"], row["anonymous_id"], row["user_id"], row["session_id"]) == (
        "evt_1",
        "purchase",
        "a1",
        "u1",
        "s1",
    )
    assert (row["source"], row["medium"], row["source_confidence"]) == ("google", "paid", "high")
    assert row["source_rule_id"] and row["url"].startswith("https://shop.example.com/p") and row["path"] == "/p"


def test_rows_are_newest_first_and_only_the_keys_project(client, keys):
    other = create_project(client, "other")
    send(client, other.sk, {"event": "not mine", "timestamp": "2024-01-05T00:00:00Z"})
    send(client, keys.sk, *({"event": f"e{i}", "timestamp": f"2024-01-{10 - i:02d}T00:00:00Z"} for i in range(5)))
    rows = query(client, keys.rk)["rows"]
    assert [r["event_name"] for r in rows] == ["e0", "e1", "e2", "e3", "e4"]
    assert query(client, keys.rk)["next_cursor"] is None


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("event", "signup", {"e1"}),
        ("source", "facebook", {"e2"}),
        ("medium", "paid", {"e2"}),
        ("anonymous_id", "a3", {"e3"}),
        ("country", "US", set()),
        ("session_id", "s4", {"e4"}),
    ],
)
def test_each_filter(client, keys, name, value, expected):
    send(
        client,
        keys.sk,
        {"event": "signup", "event_id": "e1", "timestamp": "2024-01-02T00:00:00Z"},
        {
            "event": "x",
            "event_id": "e2",
            "timestamp": "2024-01-02T00:00:00Z",
            "url": "https://shop.example.com/?fbclid=1&utm_source=facebook",
        },
        {"event": "x", "event_id": "e3", "timestamp": "2024-01-02T00:00:00Z", "anonymous_id": "a3"},
        {"event": "x", "event_id": "e4", "timestamp": "2024-01-02T00:00:00Z", "session_id": "s4"},
    )
    assert {r["event_id"] for r in query(client, keys.rk, **{name: value})["rows"]} == expected


def test_country_filter(client, keys):
    send(
        client,
        keys.sk,
        {"event": "x", "event_id": "us", "timestamp": "2024-01-02T00:00:00Z", "context": {"ip": "8.8.8.8"}},
        {"event": "x", "event_id": "none", "timestamp": "2024-01-02T00:00:00Z"},
    )
    assert [r["event_id"] for r in query(client, keys.rk, country="US")["rows"]] == ["us"]


def test_user_id_filter_stitches_identified_anonymous_events(client, keys):
    send(
        client,
        keys.sk,
        {"event": "browse", "event_id": "before", "timestamp": "2024-01-02T00:00:00Z", "anonymous_id": "anon-1"},
        {
            "event": "buy",
            "event_id": "own",
            "timestamp": "2024-01-03T00:00:00Z",
            "anonymous_id": "anon-2",
            "user_id": "alice",
        },
        {"event": "browse", "event_id": "stranger", "timestamp": "2024-01-03T00:00:00Z", "anonymous_id": "anon-3"},
        {
            "event": "browse",
            "event_id": "bob",
            "timestamp": "2024-01-03T00:00:00Z",
            "anonymous_id": "anon-4",
            "user_id": "bob",
        },
    )
    # the identify happens later (outside the range) and still links anon-1's earlier events
    assert (
        client.post(
            "/v1/identify", json={"anonymous_id": "anon-1", "user_id": "alice"}, headers=bearer(keys.sk)
        ).status_code
        == 200
    )
    assert {r["event_id"] for r in query(client, keys.rk, user_id="alice")["rows"]} == {"before", "own"}
    assert {r["event_id"] for r in query(client, keys.rk, user_id="bob")["rows"]} == {"bob"}
    stats = client.get(
        "/v1/stats", params={**RANGE, "user_id": "alice", "metric": "uniques"}, headers=bearer(keys.rk)
    ).json()
    assert stats["rows"] == [{"value": 2}]
    # another project's identify does not link this project's events
    other = create_project(client, "other")
    client.post("/v1/identify", json={"anonymous_id": "anon-3", "user_id": "alice"}, headers=bearer(other.sk))
    assert {r["event_id"] for r in query(client, keys.rk, user_id="alice")["rows"]} == {"before", "own"}


# cursors ----------------------------------------------------------------------------------------
def test_cursor_pages_in_order_with_ties_on_timestamp(client, keys):
    send(
        client,
        keys.sk,
        *({"event": "x", "event_id": str(i), "timestamp": f"2024-01-02T00:00:{i // 3:02d}Z"} for i in range(25)),
    )
    seen, cursor = [], None
    while True:
        body = query(client, keys.rk, limit="4", **({"cursor": cursor} if cursor else {}))
        seen += [r["event_id"] for r in body["rows"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen, key=int) == [str(i) for i in range(25)] and len(seen) == 25
    timestamps = [int(e) // 3 for e in seen]
    assert timestamps == sorted(timestamps, reverse=True)


def test_a_cursor_is_bound_to_its_query_and_cannot_be_forged(client, keys):
    send(client, keys.sk, *({"event": "x", "timestamp": "2024-01-02T00:00:00Z"} for _ in range(3)))
    cursor = query(client, keys.rk, limit="1")["next_cursor"]
    assert cursor and query(client, keys.rk, limit="1", cursor=cursor)["rows"]
    # the limit may change between pages
    assert len(query(client, keys.rk, limit="5", cursor=cursor)["rows"]) == 2

    def rejected(**params):
        r = client.get("/v1/query", params={**RANGE, **params}, headers=bearer(keys.rk))
        assert r.status_code == 400 and r.json()["error"] == "invalid_params", r.text
        assert r.json()["details"]["param"] == "cursor"

    rejected(cursor=cursor, event="x")  # other filters
    rejected(cursor=cursor, **{"from": "2024-01-01T00:00:01Z"})  # other range
    other = create_project(client, "other")
    r = client.get("/v1/query", params={**RANGE, "cursor": cursor}, headers=bearer(other.rk))
    assert r.status_code == 400  # another project
    body, _, mac = cursor.partition(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    for bad in (tampered, "garbage", "", "a.b", "é.é", cursor + "x", cursor.replace(".", "")):
        rejected(cursor=bad)


def test_pages_are_stable_while_events_arrive(client, keys):
    send(
        client,
        keys.sk,
        *({"event": "old", "event_id": str(i), "timestamp": f"2024-01-02T00:{i:02d}:00Z"} for i in range(6)),
    )
    first = query(client, keys.rk, limit="3")
    # new events newer, older and equal to the page boundary arrive between the pages
    send(
        client,
        keys.sk,
        *(
            {"event": "new", "timestamp": t}
            for t in ("2024-01-03T00:00:00Z", "2024-01-02T00:00:30Z", "2024-01-02T00:03:00Z")
        ),
    )
    second = query(client, keys.rk, limit="3", cursor=first["next_cursor"])
    ids = [r["event_id"] for r in first["rows"] + second["rows"]]
    assert ids == ["5", "4", "3", "2", "1", "0"] and second["next_cursor"] is None
    assert len(query(client, keys.rk, limit="1000")["rows"]) == 9  # a new first page sees them


def test_timestamps_keep_microseconds_when_sent(client, keys):
    send(
        client,
        keys.sk,
        {"event": "x", "timestamp": "2024-01-02T00:00:00.123456+00:00"},
        {"event": "x", "timestamp": "2024-01-02T00:00:00Z"},
    )
    assert [r["timestamp"] for r in query(client, keys.rk)["rows"]] == [
        "2024-01-02T00:00:00.123456Z",
        "2024-01-02T00:00:00.000Z",
    ]


def test_query_timestamps_are_utc_whatever_offset_was_sent(client, keys):
    send(client, keys.sk, {"event": "x", "timestamp": "2024-01-02T01:00:00+01:00"})
    (row,) = query(client, keys.rk)["rows"]
    assert dt.datetime.fromisoformat(row["timestamp"]) == dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)
