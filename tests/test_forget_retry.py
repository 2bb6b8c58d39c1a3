"""Forget jobs never stop: failed attempts are retried with backoff, the runner survives control-plane
errors, and a delete waits until every process has seen the tombstone."""

import datetime as dt
import threading
import time

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from millimetric.api.app import create_app
from millimetric.ingest import pipeline, schemas
from millimetric.ingest.visit import VisitFactory
from millimetric.privacy.forget import ForgetRunner
from millimetric.store.interface import StoreError

from conftest import bearer, create_project, stored_events

pytestmark = pytest.mark.slow  # real server processes or long waits: `-m "not slow"` skips them

FAST = dict(refresh_seconds=0.5, margin_seconds=0.2, poll_seconds=30.0, retry_base_seconds=0.4, retry_max_seconds=2.0)


@pytest.fixture
def client(settings):
    """The real app without its own chores: each test runs a runner with short intervals."""
    with TestClient(create_app(settings, chores=False), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def start_runner(client, settings):
    started = []

    def start(**overrides) -> ForgetRunner:
        services = client.app.state.services
        runner = ForgetRunner(
            services.control, services.events, services.visits, settings.forget_tombstone_days, **{**FAST, **overrides}
        )
        services.forget = runner  # POST /v1/forget queues through it (and wakes it)
        started.append(client.portal.start_task_soon(runner.run_forever))
        return runner

    yield start
    for future in started:
        future.cancel()


def job_status(client, token, job_id):
    return client.get(f"/v1/forget/{job_id}", headers=bearer(token)).json()


def wait_for(client, token, job_id, statuses=("done",), timeout=15.0):
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = job_status(client, token, job_id)
        if job["status"] in statuses:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")


def send(client, token, events):
    r = client.post("/v1/batch", json={"events": events}, headers=bearer(token))
    assert r.status_code == 202, r.text


def request_forget(client, token, user_id):
    r = client.post("/v1/forget", json={"user_id": user_id}, headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()["job_id"]


def test_a_failed_delete_is_retried_until_done(client, start_runner, monkeypatch):
    keys = create_project(client)
    user = "alice@example.com"
    send(client, keys.sk, [{"event": "x", "user_id": user}] * 3 + [{"event": "x", "user_id": "bob"}])
    services = client.app.state.services
    real_delete = services.events.delete_user
    calls = []

    def delete_user(project_id, user_id):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise StoreError(f"the store did not answer while deleting {user_id!r}")
        return real_delete(project_id, user_id)

    monkeypatch.setattr(services.events, "delete_user", delete_user)
    start_runner()
    job_id = request_forget(client, keys.sk, user)

    failed = wait_for(client, keys.sk, job_id, ("failed", "done"))
    assert (failed["status"], failed["attempts"], failed["deleted_rows"]) == ("failed", 1, 0)
    assert failed["last_error"].startswith("StoreError: the store did not answer")
    assert user not in failed["last_error"]  # never the user id
    assert failed["finished_at"] is None

    done = wait_for(client, keys.sk, job_id)  # no restart: the runner retries on its own
    assert (done["attempts"], done["deleted_rows"]) == (2, 3)
    assert len(calls) == 2 and calls[1] - calls[0] >= FAST["retry_base_seconds"] * 0.9  # after the backoff
    assert [r["user_id"] for r in stored_events(client)] == ["bob"]
    assert services.control.get_forget_job(job_id).user_id is None


def test_the_runner_survives_control_plane_errors(client, start_runner, monkeypatch):
    keys = create_project(client)
    send(client, keys.sk, [{"event": "x", "user_id": "u1"}] * 2)
    services = client.app.state.services
    real_unfinished = services.control.unfinished_forget_jobs
    calls = []

    def unfinished_forget_jobs():
        calls.append(threading.get_ident())
        if len(calls) == 1:
            raise sa.exc.OperationalError("SELECT", {}, Exception("could not connect to server"))
        return real_unfinished()

    monkeypatch.setattr(services.control, "unfinished_forget_jobs", unfinished_forget_jobs)
    start_runner()
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls, "the runner never read the queue"
    job_id = request_forget(client, keys.sk, "u1")  # after the failure
    done = wait_for(client, keys.sk, job_id)
    assert (done["attempts"], done["deleted_rows"], done["last_error"]) == (1, 2, None)
    assert len(calls) >= 2
    assert stored_events(client) == []


def test_the_delete_waits_until_every_process_has_the_tombstone(client, start_runner):
    keys = create_project(client)
    send(client, keys.sk, [{"event": "before", "user_id": "u1"}] * 2 + [{"event": "x", "user_id": "u2"}])
    services = client.app.state.services
    project = services.control.get_project(keys.project_id)
    # Another worker: it read the tombstones before the request and refreshes them only later.
    other_worker = VisitFactory(services.control)
    runner = start_runner(refresh_seconds=1.0, margin_seconds=0.3)
    job_id = request_forget(client, keys.sk, "u1")

    # The other worker accepts an event of u1 inside its refresh window, after the request.
    visit = other_worker.visit(project, "198.51.100.7", "Mozilla/5.0", "shop.example.com")
    assert not visit.is_forgotten("u1")
    event = schemas.decode_track(b'{"event": "late", "user_id": "u1"}')
    rows, dropped = pipeline.accept([event], [visit], None, None, services.steps)
    assert len(rows) == 1 and not dropped
    client.portal.call(services.writer.write, rows)  # acknowledged: durable
    assert job_status(client, keys.sk, job_id)["status"] == "queued"  # not yet: the window is open

    done = wait_for(client, keys.sk, job_id)  # woken when due, not at the (30 s) poll
    assert (done["deleted_rows"], done["attempts"], done["last_error"]) == (3, 1, None)
    created, finished = (dt.datetime.fromisoformat(done[k]) for k in ("created_at", "finished_at"))
    assert finished - created >= dt.timedelta(seconds=1.3)
    assert runner.due_at(services.control.get_forget_job(job_id)) - created == dt.timedelta(seconds=1.3)
    assert [r["user_id"] for r in stored_events(client)] == ["u2"]  # "late" went too


def test_a_job_left_running_by_a_crash_is_run_again(client, start_runner):
    keys = create_project(client)
    send(client, keys.sk, [{"event": "x", "user_id": "u1"}] * 2)
    services = client.app.state.services
    # What a server that died mid-job leaves behind: the job running, one attempt started.
    job_id = services.control.create_forget_job(keys.project_id, "u1", "h", dt.datetime(2099, 1, 1))
    services.control.start_forget_attempt(job_id)
    start_runner()
    done = wait_for(client, keys.sk, job_id)
    assert (done["attempts"], done["deleted_rows"]) == (2, 2)


def test_backoff_doubles_up_to_its_cap_and_errors_name_no_user():
    from millimetric.privacy.forget import backoff, describe_error

    assert [backoff(n, 5.0, 600.0) for n in (1, 2, 3, 4, 7, 8, 9, 1000)] == [5, 10, 20, 40, 320, 600, 600, 600]
    error = describe_error(StoreError("no row for 'o''brien' or \"o'brien\""), "o'brien")
    assert "brien" not in error and error.startswith("StoreError: ")
    assert len(describe_error(RuntimeError("x" * 1000), "u")) <= 200


@pytest.fixture(params=["sqlite", "postgresql"])
def control(request, tmp_path):
    from millimetric.store.control import ControlPlane

    url = (
        f"sqlite:///{tmp_path / 'c.sqlite3'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    )
    plane = ControlPlane(url, "pepper")
    plane.migrate()  # 0004 adds the retry columns on either engine
    yield plane
    plane.close()


def test_the_control_plane_keeps_attempts_errors_and_retry_times(control):
    project, _ = control.create_project("p")
    job_id = control.create_forget_job(project.id, "u1", "hash", dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc))
    job = control.get_forget_job(job_id)
    assert (job.status, job.attempts, job.last_error, job.next_attempt_at) == ("queued", 0, None, None)
    control.start_forget_attempt(job_id)
    assert (control.get_forget_job(job_id).status, control.get_forget_job(job_id).attempts) == ("running", 1)
    retry_at = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    control.fail_forget_attempt(job_id, "StoreTimeout: " + "x" * 300, retry_at)
    job = control.get_forget_job(job_id)
    assert (job.status, job.attempts, job.next_attempt_at, job.user_id) == ("failed", 1, retry_at, "u1")
    assert job.last_error.startswith("StoreTimeout: ") and len(job.last_error) == 200
    assert job_id in {j.id for j in control.unfinished_forget_jobs()}  # failed jobs are retried
    control.start_forget_attempt(job_id)
    control.finish_forget_job(job_id, 7)
    job = control.get_forget_job(job_id)
    assert (job.status, job.attempts, job.deleted_rows, job.user_id, job.next_attempt_at) == ("done", 2, 7, None, None)
    assert job.finished_at is not None
    assert job_id not in {j.id for j in control.unfinished_forget_jobs()}
