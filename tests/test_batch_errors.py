"""POST /v1/batch: a failing batch names every failing event (and field), capped at 100 paths."""

import datetime as dt
import json
import subprocess
import sys

import pytest

from millimetric.store.control import ProjectChanges

from conftest import bearer, cli_project, stored_events

FUTURE = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).isoformat()
PAST = "2024-01-02T00:00:00Z"
TOO_BIG = {"blob": "x" * 9000}  # compact JSON over 8192 bytes


def post_batch(client, token, events):
    return client.post("/v1/batch", headers=bearer(token), json={"events": events})


def invalid(response):
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_payload"
    return body["details"]


def test_type_and_rule_errors_of_every_event_are_named(client, keys):
    events = [
        {"event": "ok"},  # 0 valid
        {"url": "https://shop.example.com/"},  # 1 missing event
        {"event": 5},  # 2 wrong type
        {"event": "ok", "timestamp": PAST},  # 3 valid
        {"event": "x", "url": "nope"},  # 4 not an absolute URL
        {"event": "$secret"},  # 5 reserved name
        {"event": "x", "properties": TOO_BIG},  # 6 properties too big
        {"event": "$bad", "url": [], "timestamp": FUTURE},  # 7 one type error and two rule errors
        {"event": "x", "timestamp": FUTURE},  # 8 in the future
        {"event": 5, "user_id": "", "context": {"ip": 7}},  # 9 three type errors
        "not an object",  # 10
        {"event": "x", "timestamp": "yesterday"},  # 11 not a datetime
        {"event": "x", "properties": [1, 2]},  # 12 properties not an object
    ]
    details = invalid(post_batch(client, keys.sk, events))
    errors = details["fieldErrors"]
    assert set(errors) == {
        "events.1.event",
        "events.2.event",
        "events.4.url",
        "events.5.event",
        "events.6.properties",
        "events.7.event",
        "events.7.url",
        "events.7.timestamp",
        "events.8.timestamp",
        "events.9.event",
        "events.9.user_id",
        "events.9.context.ip",
        "events.10",
        "events.11.timestamp",
        "events.12.properties",
    }
    assert errors["events.1.event"] == ["Required"]
    assert errors["events.2.event"] == ["Expected `str`, got `int`"]
    assert errors["events.4.url"] == ["Must be an absolute http(s) URL"]
    assert errors["events.5.event"] == ["Names starting with '$' are reserved"]
    assert errors["events.7.event"] == ["Names starting with '$' are reserved"]
    assert errors["events.7.url"] == ["Expected `str | null`, got `array`"]
    assert errors["events.7.timestamp"] == errors["events.8.timestamp"] == ["More than 1 hour in the future"]
    assert errors["events.6.properties"][0].startswith("Encoded size")
    assert errors["events.12.properties"] == ["Expected `object`"]
    assert list(errors) == sorted(errors, key=lambda path: int(path.split(".")[1]))  # in batch order
    assert details["formErrors"] == [] and "truncated" not in details
    assert stored_events(client) == []


def test_rule_errors_alone_name_every_event(client, keys):
    """Every event well typed: the per-event rules run after the one-pass decode, for all events."""
    events = [
        {"event": "ok"},
        {"event": "$x"},
        {"event": "ok"},
        {"event": "x", "url": "ftp://a/b"},
        {"event": "x", "timestamp": FUTURE, "properties": TOO_BIG},
    ]
    errors = invalid(post_batch(client, keys.sk, events))["fieldErrors"]
    assert set(errors) == {"events.1.event", "events.3.url", "events.4.timestamp", "events.4.properties"}
    assert stored_events(client) == []


def test_the_project_retention_is_checked_next_to_type_errors(client, keys):
    client.app.state.services.control.update_project(keys.project_id, ProjectChanges(retention_days=30))
    now = dt.datetime.now(dt.timezone.utc)
    events = [
        {"event": 1},
        {"event": "x", "timestamp": (now - dt.timedelta(days=40)).isoformat()},
        {"event": "x", "timestamp": (now - dt.timedelta(days=10)).isoformat()},
        {"event": "x", "timestamp": "1999-12-31T00:00:00Z"},
    ]
    errors = invalid(post_batch(client, keys.sk, events))["fieldErrors"]
    assert errors == {
        "events.0.event": ["Expected `str`, got `int`"],
        "events.1.timestamp": ["Older than the project's retention of 30 days"],
        "events.3.timestamp": ["Before 2000-01-01"],
    }


@pytest.mark.parametrize("bad", [{"event": 5}, {"event": "$nope"}], ids=["type errors", "rule errors"])
def test_150_bad_events_are_capped_at_100_paths_and_marked(client, keys, bad):
    events = [bad] * 150 + [{"event": "ok"}]
    details = invalid(post_batch(client, keys.sk, events))
    assert list(details["fieldErrors"]) == [f"events.{i}.event" for i in range(100)]
    assert details["truncated"] is True
    assert details["formErrors"] == []
    assert stored_events(client) == []


def test_a_cut_list_counts_paths_not_events(client, keys):
    events = [{"event": 5, "url": 5, "user_id": 5}] * 40  # 120 paths
    details = invalid(post_batch(client, keys.sk, events))
    assert len(details["fieldErrors"]) == 100 and details["truncated"] is True
    assert "events.33.event" in details["fieldErrors"] and "events.34.event" not in details["fieldErrors"]


def test_a_valid_batch_is_stored(client, keys):
    events = [
        {"event": "e", "event_id": str(i), "url": "https://shop.example.com/", "timestamp": PAST} for i in range(500)
    ]
    r = post_batch(client, keys.sk, events)
    assert (r.status_code, r.json()) == (202, {"ok": True, "count": 500})
    assert len(stored_events(client)) == 500


@pytest.mark.parametrize(
    "body,form_error",
    [
        (b'{"events": [{"event": "x"},', "Body is not valid JSON (UTF-8)"),
        (b'{"events": [{"event": "x", "properties": ' + b"[" * 2000 + b"]" * 2000 + b"}]}", None),
    ],
)
def test_malformed_bodies_answer_a_form_error(client, keys, body, form_error):
    r = client.post("/v1/batch", headers=bearer(keys.sk), content=body)
    details = invalid(r)
    assert details["formErrors"] or details["fieldErrors"]
    if form_error:
        assert details["formErrors"] == [form_error]


@pytest.mark.parametrize("body,path", [({"events": []}, "events"), ({"events": "x"}, "events"), ({}, "events")])
def test_envelope_errors_name_events(client, keys, body, path):
    r = client.post("/v1/batch", headers=bearer(keys.sk), json=body)
    assert list(invalid(r)["fieldErrors"]) == [path]


def test_import_rejects_every_bad_line_even_past_the_cap(tmp_path):
    """`millimetric import` maps a batch's `events.N.` paths back to lines; a cut list is checked again."""
    data_dir = tmp_path / "data"
    cli_project(data_dir)
    lines = [json.dumps({"event": "ok", "event_id": f"ok-{i}", "timestamp": PAST}) for i in range(20)]
    lines += [json.dumps({"event": "$bad", "event_id": f"bad-{i}", "timestamp": PAST}) for i in range(230)]
    source = tmp_path / "backfill.ndjson"
    source.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "millimetric",
            "import",
            str(source),
            "--project",
            "shop",
            "--json",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["stored"], summary["rejected"]) == (20, 230)
    rejected = [json.loads(line) for line in (tmp_path / "backfill.ndjson.rejected.ndjson").read_text().splitlines()]
    assert sorted(r["line"] for r in rejected) == list(range(21, 251))
    assert all(
        r["details"] == {"fieldErrors": {"event": ["Names starting with '$' are reserved"]}, "formErrors": []}
        for r in rejected
    )
