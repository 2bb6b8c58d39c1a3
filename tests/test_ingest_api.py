"""Ingest routes over HTTP: validation, limits, media types, and what lands in the store."""

import datetime as dt
import json

import pytest

from conftest import bearer, stored_events


def post(client, path, token, body=None, content=None, **headers):
    kwargs = {"content": content} if content is not None else {"json": body}
    return client.post(path, headers={**bearer(token), **headers}, **kwargs)


def field_errors(response):
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_payload"
    return body["details"]["fieldErrors"]


def test_track_stores_the_event_and_echoes_its_id(client, keys):
    r = post(
        client,
        "/v1/track",
        keys.sk,
        {
            "event": "purchase",
            "event_id": "evt_1",
            "user_id": "u42",
            "properties": {"amount_cents": 4900, "currency": "usd"},
        },
    )
    assert (r.status_code, r.json()) == (202, {"ok": True, "event_id": "evt_1"})
    [row] = stored_events(client)
    assert row["event_name"] == "purchase" and row["user_id"] == "u42" and row["project_id"] == keys.project_id
    assert json.loads(row["properties"]) == {"amount_cents": 4900, "currency": "usd"}
    assert row["anonymous_id"] and row["session_id"].startswith(row["anonymous_id"] + "-")


def test_track_without_event_id_answers_null(client, keys):
    r = post(client, "/v1/track", keys.sk, {"event": "x"})
    assert (r.status_code, r.json()) == (202, {"ok": True, "event_id": None})


def test_session_id_is_derived_from_the_30_minute_bucket(client, keys):
    post(client, "/v1/track", keys.sk, {"event": "x", "anonymous_id": "a1", "timestamp": "2026-01-01T00:29:59Z"})
    post(client, "/v1/track", keys.sk, {"event": "x", "anonymous_id": "a1", "timestamp": "2026-01-01T00:30:00Z"})
    start = int(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp()) // 1800
    assert [r["session_id"] for r in stored_events(client)] == [f"a1-{start}", f"a1-{start + 1}"]


def test_timestamps_with_offsets_are_stored_in_utc(client, keys):
    post(client, "/v1/track", keys.sk, {"event": "x", "timestamp": "2026-03-01T12:00:00+02:00"})
    post(client, "/v1/track", keys.sk, {"event": "y", "timestamp": "2026-03-01T12:00:00"})
    assert [r["timestamp"] for r in stored_events(client)] == [dt.datetime(2026, 3, 1, 10), dt.datetime(2026, 3, 1, 12)]


def test_client_values_for_derived_columns_are_ignored(client, keys):
    post(
        client,
        "/v1/track",
        keys.sk,
        {
            "event": "x",
            "source": "forged",
            "medium": "forged",
            "ip_hash": "f" * 32,
            "country": "XX",
            "unknown_field": 1,
        },
    )
    [row] = stored_events(client)
    assert "forged" not in (row["source"], row["medium"]) and row["country"] != "XX" and row["ip_hash"] != "f" * 32


@pytest.mark.parametrize(
    "body,path",
    [
        ({}, "event"),
        ({"event": ""}, "event"),
        ({"event": "x" * 129}, "event"),
        ({"event": 5}, "event"),
        ({"event": "$custom"}, "event"),
        ({"event": "x", "event_id": ""}, "event_id"),
        ({"event": "x", "anonymous_id": "a" * 129}, "anonymous_id"),
        ({"event": "x", "user_id": "u" * 257}, "user_id"),
        ({"event": "x", "session_id": "s" * 129}, "session_id"),
        ({"event": "x", "url": "/relative"}, "url"),
        ({"event": "x", "url": "ftp://example.com/"}, "url"),
        ({"event": "x", "url": "https://e.com/" + "a" * 2048}, "url"),
        ({"event": "x", "path": "/" * 2049}, "path"),
        ({"event": "x", "referrer": "r" * 2049}, "referrer"),
        ({"event": "x", "timestamp": "yesterday"}, "timestamp"),
        ({"event": "x", "timestamp": "1999-12-31T23:59:59Z"}, "timestamp"),
        ({"event": "x", "properties": []}, "properties"),
        ({"event": "x", "properties": {"blob": "b" * 8200}}, "properties"),
        ({"event": "x", "context": "nope"}, "context"),
    ],
)
def test_track_field_errors(client, keys, body, path):
    assert path in field_errors(post(client, "/v1/track", keys.sk, body))
    assert stored_events(client) == []


def test_timestamp_more_than_an_hour_ahead_is_refused(client, keys):
    ahead = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)).isoformat()
    assert "timestamp" in field_errors(post(client, "/v1/track", keys.sk, {"event": "x", "timestamp": ahead}))
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=30)).isoformat()
    assert post(client, "/v1/track", keys.sk, {"event": "x", "timestamp": soon}).status_code == 202


def test_properties_limit_counts_compact_utf8_bytes(client, keys):
    fits = {"k": "é" * 4090}  # {"k":"..."} = 8 + 8180 bytes
    assert post(client, "/v1/track", keys.sk, {"event": "x", "properties": fits}).status_code == 202
    over = {"k": "é" * 4095}
    assert "properties" in field_errors(post(client, "/v1/track", keys.sk, {"event": "x", "properties": over}))


def test_deeply_nested_properties_are_refused(client, keys):
    deep = "1"
    for _ in range(40):
        deep = '{"a":' + deep + "}"
    body = '{"event":"x","properties":' + deep + "}"
    assert "properties" in field_errors(post(client, "/v1/track", keys.sk, content=body.encode()))


@pytest.mark.parametrize("content", [b"{bad json", b"[1,2]", b'"text"', b"", b'{"event":"\xff\xfe"}', b"null"])
def test_bodies_that_are_not_json_objects(client, keys, content):
    r = post(client, "/v1/track", keys.sk, content=content)
    assert r.status_code == 400 and r.json()["error"] == "invalid_payload"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_non_json_media_type(client, keys, content_type):
    r = client.post(
        "/v1/track",
        content=b'{"event":"x"}',
        headers={"Authorization": f"Bearer {keys.sk}", "Content-Type": content_type},
    )
    assert (r.status_code, r.json()["error"]) == (415, "unsupported_media_type")


def test_json_with_charset_is_accepted(client, keys):
    r = post(
        client, "/v1/track", keys.sk, content=b'{"event":"x"}', **{"Content-Type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 202


@pytest.mark.parametrize(
    "path,limit", [("/v1/track", 64 * 1024), ("/v1/identify", 64 * 1024), ("/v1/batch", 5 * 1024 * 1024)]
)
def test_body_limits(client, keys, path, limit):
    over = b'{"event":"x","pad":"' + b"a" * limit + b'"}'
    r = post(client, path, keys.sk, content=over)
    assert (r.status_code, r.json()["error"]) == (413, "payload_too_large")
    assert stored_events(client) == []


def test_batch_writes_all_events(client, keys):
    events = [{"event": "e", "event_id": str(i)} for i in range(1000)]
    r = post(client, "/v1/batch", keys.sk, {"events": events})
    assert (r.status_code, r.json()) == (202, {"ok": True, "count": 1000})
    assert [row["event_id"] for row in stored_events(client)] == [str(i) for i in range(1000)]


def test_batch_is_all_or_nothing_and_names_each_failing_event(client, keys):
    events = [{"event": "ok"}, {"event": ""}, {"nope": 1}, {"event": "ok"}, {"event": "x", "url": "nope"}]
    errors = field_errors(post(client, "/v1/batch", keys.sk, {"events": events}))
    assert {"events.1.event", "events.2.event"} <= set(errors)
    errors = field_errors(
        post(client, "/v1/batch", keys.sk, {"events": [{"event": "ok"}, {"event": "x", "url": "nope"}]})
    )
    assert set(errors) == {"events.1.url"}
    assert stored_events(client) == []


@pytest.mark.parametrize("body", [{"events": []}, {"events": [{"event": "x"}] * 1001}, {"events": "x"}, {}])
def test_batch_size_bounds(client, keys, body):
    assert post(client, "/v1/batch", keys.sk, body).json()["error"] == "invalid_payload"


def test_identify_stores_an_identify_event_with_traits(client, keys):
    r = post(
        client, "/v1/identify", keys.sk, {"anonymous_id": "anon-1", "user_id": "user-1", "traits": {"plan": "pro"}}
    )
    assert (r.status_code, r.json()) == (200, {"ok": True})
    [row] = stored_events(client)
    assert (row["event_name"], row["anonymous_id"], row["user_id"]) == ("$identify", "anon-1", "user-1")
    assert json.loads(row["properties"]) == {"plan": "pro"}


@pytest.mark.parametrize(
    "body,path",
    [
        ({"user_id": "u"}, "anonymous_id"),
        ({"anonymous_id": "a"}, "user_id"),
        ({"anonymous_id": "a", "user_id": "u", "traits": {"b": "x" * 9000}}, "traits"),
    ],
)
def test_identify_validation(client, keys, body, path):
    assert path in field_errors(post(client, "/v1/identify", keys.sk, body))


def test_unknown_route_and_wrong_method_are_json(client):
    r = client.get("/v1/nothing")
    assert (r.status_code, r.json()) == (404, {"error": "not_found"})
    r = client.get("/v1/track")
    assert (r.status_code, r.json()) == (405, {"error": "method_not_allowed"})
    assert "POST" in r.headers["allow"]


def test_request_id_is_echoed_when_sane_and_generated_otherwise(client):
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"}).headers["x-request-id"]
    assert generated and generated != "bad id\twith spaces"


def test_unexpected_errors_never_leak(client, keys, monkeypatch, caplog):
    def explode(*_args, **_kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("millimetric.ingest.pipeline.accept", explode)
    r = post(client, "/v1/track", keys.sk, {"event": "x"}, **{"X-Request-Id": "req-42"})
    assert (r.status_code, r.json()) == (500, {"error": "internal_error"})
    assert "secret internals" not in r.text
    assert any("req-42" in rec.getMessage() for rec in caplog.records)


def test_healthz_checks_both_stores(client):
    body = client.get("/healthz").json()
    assert body["ok"] is True and body["control_plane"] == "ok" and body["event_store"] == "ok"


@pytest.mark.parametrize(
    "sent,stored",
    [
        (b'{"a":1,"b":[1,2]}', '{"a":1,"b":[1,2]}'),  # compact: stored as sent
        (b'{ "a" : 1,\n  "b": [1, 2] }', '{"a":1,"b":[1,2]}'),  # whitespace: compacted
        (b"null", "{}"),
        (b'{"caf\xc3\xa9":"\xe2\x82\xac"}', '{"café":"€"}'),
    ],
)
def test_properties_are_stored_as_compact_json(client, keys, sent, stored):
    r = post(client, "/v1/track", keys.sk, content=b'{"event":"x","properties":' + sent + b"}")
    assert r.status_code == 202
    assert stored_events(client)[0]["properties"] == stored


@pytest.mark.parametrize("sent", [b'{"a":"\xc3\x28"}', b'"text"', b"[1]", b"5"])
def test_properties_must_be_a_utf8_object(client, keys, sent):
    r = post(client, "/v1/track", keys.sk, content=b'{"event":"x","properties":' + sent + b"}")
    assert "properties" in field_errors(r)
