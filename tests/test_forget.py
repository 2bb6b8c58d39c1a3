"""GDPR forget: scopes, what is deleted (identity-stitched), tombstones, jobs surviving restarts."""

import time

import httpx
import pytest

from millimetric.ingest.visit import user_hash
from millimetric.store.control import ControlPlane, utcnow

from conftest import bearer, cli_project, create_project, stored_events


def forget(client, token, user_id="u1", **headers):
    return client.post("/v1/forget", json={"user_id": user_id}, headers={**bearer(token), **headers})


def wait_done(get, job_id, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get(f"/v1/forget/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_only_secret_keys_may_forget(client, keys):
    r = forget(client, keys.pk, Origin="https://shop.example.com")
    assert (r.status_code, r.json()["error"]) == (403, "forget_requires_secret_key")
    assert (forget(client, keys.rk).status_code, forget(client, keys.rk).json()["error"]) == (403, "insufficient_scope")
    services = client.app.state.services
    ak = services.control.create_key(services.control.get_project(keys.project_id), "ak")
    assert forget(client, ak).json()["error"] == "insufficient_scope"
    assert client.get("/v1/forget/whatever", headers=bearer(keys.rk)).json()["error"] == "insufficient_scope"


@pytest.mark.parametrize("body", [{}, {"user_id": ""}, {"user_id": "u" * 257}, {"user_id": 5}])
def test_forget_validates_its_body(client, keys, body):
    r = client.post("/v1/forget", json=body, headers=bearer(keys.sk))
    assert (r.status_code, r.json()["error"]) == (400, "invalid_payload")


def test_forget_deletes_the_user_and_their_linked_anonymous_events(client, keys):
    other_project = create_project(client, "other")
    send = lambda token, events: client.post("/v1/batch", json={"events": events}, headers=bearer(token))  # noqa: E731
    send(
        keys.sk,
        [
            {"event": "$pageview", "anonymous_id": "anon-1"},  # before identify: linked later
            {"event": "$pageview", "anonymous_id": "anon-1"},
            {"event": "signup", "anonymous_id": "anon-1", "user_id": "u1"},
            {"event": "purchase", "user_id": "u1", "anonymous_id": "anon-9"},
            {"event": "$pageview", "anonymous_id": "anon-2", "user_id": "u2"},  # another user
            {"event": "$pageview", "anonymous_id": "anon-3"},  # an anonymous visitor
        ],
    )
    client.post("/v1/identify", json={"anonymous_id": "anon-1", "user_id": "u1"}, headers=bearer(keys.sk))
    send(other_project.sk, [{"event": "signup", "anonymous_id": "anon-1", "user_id": "u1"}])

    r = forget(client, keys.sk)
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True and body["queued"] is True and body["job_id"]
    job = wait_done(lambda path: client.get(path, headers=bearer(keys.sk)), body["job_id"])
    assert (job["status"], job["deleted_rows"]) == ("done", 5)  # 2 anonymous + 2 user + 1 $identify

    left = stored_events(client, "project_id = ?", (keys.project_id,))
    assert sorted(r["anonymous_id"] for r in left) == ["anon-2", "anon-3"]
    assert all(r["user_id"] != "u1" for r in left)
    assert len(stored_events(client, "project_id = ?", (other_project.project_id,))) == 1

    r = client.post("/v1/track", json={"event": "comeback", "user_id": "u1"}, headers=bearer(keys.sk))
    assert r.status_code == 202  # accepted, then dropped
    assert not stored_events(client, "event_name = 'comeback'")
    client.post("/v1/track", json={"event": "comeback", "user_id": "u1"}, headers=bearer(other_project.sk))
    assert len(stored_events(client, "event_name = 'comeback'")) == 1  # the tombstone is per project
    services = client.app.state.services
    services.flush_counters()
    assert services.control.dropped_counts(keys.project_id) == {"forgotten_user": 1}


def test_the_tombstone_keeps_a_hash_not_the_user_id(client, keys):
    forget(client, keys.sk, "alice@example.com")
    with client.app.state.services.control.engine.connect() as conn:
        dump = [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM tombstones")]
    assert dump and "alice@example.com" not in repr(dump)


def test_a_foreign_or_unknown_job_is_not_found(client, keys):
    other = create_project(client, "other")
    job_id = forget(client, other.sk).json()["job_id"]
    assert client.get(f"/v1/forget/{job_id}", headers=bearer(keys.sk)).status_code == 404
    assert client.get("/v1/forget/nope", headers=bearer(keys.sk)).json()["error"] == "not_found"


def test_jobs_left_unfinished_by_a_crash_run_after_restart(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    server = server_factory(data_dir)
    events = [{"event": "x", "user_id": "u1"}] * 3 + [{"event": "x", "user_id": "u2"}] * 2
    assert httpx.post(f"{server.url}/v1/batch", json={"events": events}, headers=bearer(keys.sk)).status_code == 202
    server.kill()
    # The state a SIGKILL leaves when it lands between queueing a job and running it (and mid-run).
    control = ControlPlane(f"sqlite:///{data_dir / 'control.sqlite3'}", (data_dir / "pepper").read_text().strip())
    queued = control.create_forget_job(
        keys.project_id, "u1", user_hash(control.pepper, keys.project_id, "u1"), utcnow()
    )
    running = control.create_forget_job(
        keys.project_id, "u2", user_hash(control.pepper, keys.project_id, "u2"), utcnow()
    )
    control.update_forget_job(running, "running")
    server = server_factory(data_dir)
    get = lambda path: httpx.get(f"{server.url}{path}", headers=bearer(keys.sk))  # noqa: E731
    assert (wait_done(get, queued)["status"], wait_done(get, queued)["deleted_rows"]) == ("done", 3)
    assert (wait_done(get, running)["status"], wait_done(get, running)["deleted_rows"]) == ("done", 2)
    assert control.get_forget_job(queued).user_id is None  # no identifier kept once done
