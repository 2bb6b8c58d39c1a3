"""The admin API against a real server process: sign-in, every endpoint, other accounts' 404s,
bad bodies, and revocation seen by every worker process within 5 s."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import httpx
import pytest

from millimetric.settings import Settings
from millimetric.store.control import ControlPlane

from conftest import ORIGIN, ServerProcess, bearer
from sessions import mint_session

pytestmark = pytest.mark.slow  # real server processes or long waits: `-m "not slow"` skips them

EMAIL = "owner@example.com"
PASSWORD = "correct horse battery staple"
WINDOW = {"from": "2024-01-01", "to": "2024-02-01"}


class Live(NamedTuple):
    server: ServerProcess
    data_dir: Path
    token: str  # the local user's, from POST /admin/login


def create_user(data_dir: Path, email: str, password: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "millimetric", "users", "create", email, "--password-stdin", "--json"]
        + ["--data-dir", str(data_dir)],
        input=password + "\n",
        capture_output=True,
        text=True,
    )


def login(url: str, email: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}/admin/login", json={"email": email, "password": password}, timeout=30)


def session_for(live: Live, sub: str) -> dict[str, str]:
    """Another user's token, signed with the secret the server generated into its data directory."""
    return bearer(mint_session((live.data_dir / "jwt-secret").read_text().strip(), sub))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("admin") / "data"
    created = create_user(data_dir, EMAIL, PASSWORD)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["user"]["email"] == EMAIL
    server = ServerProcess(data_dir).start()
    try:
        answer = login(server.url, EMAIL, PASSWORD)
        assert answer.status_code == 200, answer.text
        yield Live(server, data_dir, answer.json()["access_token"])
    finally:
        server.kill()


def api(live: Live, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=live.server.url, headers=headers or bearer(live.token), timeout=30)


# sign-in ------------------------------------------------------------------------------------
def test_a_right_password_signs_in_with_an_hour_long_bearer_token(live: Live) -> None:
    answer = login(live.server.url, EMAIL.upper(), PASSWORD)  # emails are case-insensitive
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    with api(live, bearer(body["access_token"])) as client:
        me = client.get("/admin/me").json()
    assert me["user"]["email"] == EMAIL
    assert [a["role"] for a in me["accounts"]] == ["owner"]


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(live: Live) -> None:
    wrong = login(live.server.url, EMAIL, "not the password")
    unknown = login(live.server.url, "nobody@example.com", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": "invalid_credentials"}
    assert set(wrong.headers) - {"x-request-id", "date"} == set(unknown.headers) - {"x-request-id", "date"}


def test_users_create_refuses_a_taken_email_and_a_short_password(live: Live) -> None:
    taken = create_user(live.data_dir, EMAIL, "another password")
    assert taken.returncode == 2 and "email: A user with this email exists" in taken.stderr
    short = create_user(live.data_dir, "new@example.com", "short")
    assert short.returncode == 2 and "password:" in short.stderr


# projects -----------------------------------------------------------------------------------
def test_projects_are_created_listed_read_changed_and_deleted(live: Live) -> None:
    with api(live) as client:
        created = client.post("/admin/projects", json={"name": "Shop", "allowed_origins": [ORIGIN]})
        assert created.status_code == 201
        project, keys = created.json()["project"], created.json()["keys"]
        assert set(keys) == {"pk", "sk", "rk"} and keys["sk"].startswith("sk_live_")
        assert project["name"] == "Shop" and project["allowed_origins"] == [ORIGIN]
        assert project["retention_days"] is None and project["keep_bots"] is False and project["rate_limits"] == {}
        pid = project["id"]
        assert pid in [p["id"] for p in client.get("/admin/projects").json()["projects"]]
        assert client.get(f"/admin/projects/{pid}").json() == {"project": project}

        changes = {
            "name": "Shop EU",
            "allowed_origins": ["https://eu.example.com", "https://*.example.org"],
            "retention_days": 90,
            "keep_bots": True,
            "rate_limits": {"/v1/track": {"rate": 2, "burst": 5}, "/v1/batch": "off"},
        }
        patched = client.patch(f"/admin/projects/{pid}", json=changes).json()["project"]
        assert {k: patched[k] for k in changes} == changes | {
            "rate_limits": {"/v1/track": {"rate": 2.0, "burst": 5}, "/v1/batch": "off"}
        }
        # Only the fields given change; a route mapped to null goes back to the default.
        again = client.patch(
            f"/admin/projects/{pid}", json={"retention_days": None, "rate_limits": {"/v1/batch": None}}
        ).json()["project"]
        assert again["retention_days"] is None and again["name"] == "Shop EU"
        assert again["rate_limits"] == {"/v1/track": {"rate": 2.0, "burst": 5}}

        # Its keys work, and its events go with it when it is deleted.
        events = [{"event": "e", "timestamp": f"2024-01-0{1 + i % 5}T10:00:00Z"} for i in range(7)]
        assert (
            httpx.post(f"{live.server.url}/v1/batch", json={"events": events}, headers=bearer(keys["sk"])).status_code
            == 202
        )
        deleted = client.delete(f"/admin/projects/{pid}")
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        assert client.get(f"/admin/projects/{pid}").status_code == 404
        assert pid not in [p["id"] for p in client.get("/admin/projects").json()["projects"]]
    refused = httpx.get(f"{live.server.url}/v1/stats", params=WINDOW, headers=bearer(keys["rk"]))
    assert refused.status_code == 401
    settings = Settings.from_env(environ={}, data_dir=live.data_dir)
    control = ControlPlane(settings.control_plane_url, settings.resolved_pepper())
    try:
        deadline = time.monotonic() + 60
        job = control.get_forget_job(deleted.json()["job_id"])
        while job is not None and job.status != "done" and time.monotonic() < deadline:
            time.sleep(0.5)
            job = control.get_forget_job(deleted.json()["job_id"])
        assert job is not None and job.status == "done" and job.deleted_rows == 7
    finally:
        control.close()


def test_the_same_name_gets_the_next_free_slug(live: Live) -> None:
    with api(live) as client:
        first = client.post("/admin/projects", json={"name": "Twin"}).json()["project"]
        second = client.post("/admin/projects", json={"name": "Twin"}).json()["project"]
    assert (first["slug"], second["slug"]) == ("twin", "twin-2")


# keys ---------------------------------------------------------------------------------------
def test_keys_are_minted_once_listed_without_secrets_and_revoked(live: Live) -> None:
    with api(live) as client:
        created = client.post("/admin/projects", json={"name": "Keys"}).json()
        pid, sk = created["project"]["id"], created["keys"]["sk"]
        minted = client.post(f"/admin/projects/{pid}/keys", json={"kind": "rk", "env": "test", "name": "grafana"})
        assert minted.status_code == 201
        key = minted.json()
        assert key["key"].startswith(f"rk_test_{key['prefix']}_")
        assert (key["kind"], key["env"], key["name"], key["revoked_at"]) == ("rk", "test", "grafana", None)
        read = httpx.get(f"{live.server.url}/v1/stats", params=WINDOW, headers=bearer(key["key"]))
        assert read.status_code == 200

        account_id = client.get("/admin/me").json()["accounts"][0]["id"]
        ak = client.post(f"/admin/accounts/{account_id}/keys", json={"kind": "ak", "name": "agent"})
        assert ak.status_code == 201 and ak.json()["key"].startswith("ak_live_")
        by_account = httpx.get(
            f"{live.server.url}/v1/stats", params=WINDOW | {"project_id": pid}, headers=bearer(ak.json()["key"])
        )
        assert by_account.status_code == 200

        listing = client.get(f"/admin/projects/{pid}/keys")
        assert listing.status_code == 200
        rows = listing.json()["keys"]
        assert {r["prefix"] for r in rows} >= {key["prefix"], ak.json()["prefix"], sk.split("_")[2]}
        assert all(
            set(r) == {"prefix", "kind", "env", "name", "created_at", "last_used_at", "revoked_at"} for r in rows
        )
        for secret in (key["key"], ak.json()["key"], sk):
            assert secret.split("_", 3)[3] not in listing.text

        assert client.delete(f"/admin/keys/{key['prefix']}").json() == {"revoked": True}
        assert client.delete(f"/admin/keys/{key['prefix']}").json() == {"revoked": True}  # idempotent
        revoked = [r for r in client.get(f"/admin/projects/{pid}/keys").json()["keys"] if r["prefix"] == key["prefix"]]
        assert revoked[0]["revoked_at"] is not None
    refused = httpx.get(f"{live.server.url}/v1/stats", params=WINDOW, headers=bearer(key["key"]))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_api_key"


# other accounts -----------------------------------------------------------------------------
def test_another_accounts_resources_are_not_found(live: Live) -> None:
    with api(live) as client:
        created = client.post("/admin/projects", json={"name": "Mine"}).json()
        pid = created["project"]["id"]
        prefix = created["keys"]["rk"].split("_")[2]
        account_id = client.get("/admin/me").json()["accounts"][0]["id"]
    stranger = session_for(live, "stranger")
    with api(live, stranger) as client:
        assert client.get("/admin/projects").json() == {"projects": []}
        answers = [
            client.get(f"/admin/projects/{pid}"),
            client.patch(f"/admin/projects/{pid}", json={"name": "theirs"}),
            client.delete(f"/admin/projects/{pid}"),
            client.get(f"/admin/projects/{pid}/keys"),
            client.post(f"/admin/projects/{pid}/keys", json={"kind": "sk"}),
            client.post(f"/admin/accounts/{account_id}/keys", json={"kind": "ak"}),
            client.delete(f"/admin/keys/{prefix}"),
            client.get("/admin/projects/no-such-project"),  # a missing one answers the same
            client.delete("/admin/keys/0badc0de"),
        ]
        read = client.get("/v1/stats", params=WINDOW | {"project_id": pid})
        theirs = client.post("/admin/projects", json={"name": "Theirs", "account_id": account_id})
    assert [(a.status_code, a.json()) for a in answers] == [(404, {"error": "not_found"})] * len(answers)
    assert read.status_code == 404
    assert theirs.status_code == 400 and "account_id" in theirs.json()["details"]["fieldErrors"]
    with api(live) as client:  # nothing changed
        assert client.get(f"/admin/projects/{pid}").json()["project"]["name"] == "Mine"
    assert (
        httpx.get(f"{live.server.url}/v1/stats", params=WINDOW, headers=bearer(created["keys"]["rk"])).status_code
        == 200
    )


def test_a_user_token_reads_its_own_projects_through_the_read_api(live: Live) -> None:
    with api(live) as client:
        created = client.post("/admin/projects", json={"name": "Readable"}).json()
        pid = created["project"]["id"]
        sk = bearer(created["keys"]["sk"])
        body = {"event": "$pageview", "timestamp": "2024-01-02T10:00:00Z", "url": "https://a.example/x"}
        assert httpx.post(f"{live.server.url}/v1/track", json=body, headers=sk).status_code == 202
        stats = client.get("/v1/stats", params=WINDOW | {"project_id": pid})
        assert stats.status_code == 200 and stats.json()["rows"][0]["value"] == 1
        assert (
            client.get("/v1/query", params=WINDOW | {"project_id": pid}).json()["rows"][0]["event_name"] == "$pageview"
        )
        assert client.get("/v1/sources", params=WINDOW | {"project_id": pid}).status_code == 200
        missing = client.get("/v1/stats", params=WINDOW)
        assert missing.status_code == 400 and missing.json()["details"]["param"] == "project_id"


# bad bodies ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body", "fields"),
    [
        ("POST", "/admin/projects", {}, {"name"}),
        ("POST", "/admin/projects", {"name": "x", "allowed_origins": ["not an origin"]}, {"allowed_origins.0"}),
        ("POST", "/admin/projects", {"name": "   "}, {"name"}),
        (
            "PATCH",
            "/admin/projects/{pid}",
            {"retention_days": 0, "allowed_origins": ["ftp:/x"], "rate_limits": {"/v1/nope": "off"}},
            {"retention_days", "allowed_origins.0", "rate_limits./v1/nope"},
        ),
        (
            "PATCH",
            "/admin/projects/{pid}",
            {"rate_limits": {"/v1/track": {"rate": 0, "burst": 1}}},
            {"rate_limits./v1/track.rate"},
        ),
        ("PATCH", "/admin/projects/{pid}", {"keep_bots": "yes"}, {"keep_bots"}),
        ("POST", "/admin/projects/{pid}/keys", {"kind": "ak"}, {"kind"}),
        ("POST", "/admin/projects/{pid}/keys", {"kind": "sk", "env": "prod"}, {"env"}),
        ("POST", "/admin/accounts/{account}/keys", {"kind": "pk"}, {"kind"}),
        ("POST", "/admin/login", {"email": "a@example.com"}, {"password"}),
    ],
)
def test_bad_bodies_get_field_errors(live: Live, method: str, path: str, body: dict, fields: set[str]) -> None:
    with api(live) as client:
        pid = client.post("/admin/projects", json={"name": "Target"}).json()["project"]["id"]
        account = client.get("/admin/me").json()["accounts"][0]["id"]
        answer = client.request(method, path.format(pid=pid, account=account), json=body)
        unchanged = client.get(f"/admin/projects/{pid}").json()["project"]
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_payload"
    assert set(answer.json()["details"]["fieldErrors"]) == fields
    assert unchanged["name"] == "Target" and unchanged["retention_days"] is None  # nothing half-written


def test_bodies_that_are_not_json_objects(live: Live) -> None:
    with api(live) as client:
        not_json = client.post("/admin/projects", content=b"{nope", headers={"Content-Type": "application/json"})
        form = client.post("/admin/projects", content=b"name=x", headers={"Content-Type": "text/plain"})
    assert not_json.status_code == 400 and not_json.json()["details"]["formErrors"]
    assert form.status_code == 415


def test_browsers_may_call_the_admin_api_from_any_origin(live: Live) -> None:
    preflight = httpx.options(
        f"{live.server.url}/admin/projects/x",
        headers={"Origin": "https://dash.example.com", "Access-Control-Request-Method": "PATCH"},
    )
    assert preflight.status_code == 204
    assert {"PATCH", "DELETE"} <= {m.strip() for m in preflight.headers["access-control-allow-methods"].split(",")}
    with api(live) as client:
        answer = client.get("/admin/me", headers={"Origin": "https://dash.example.com"})
    assert answer.headers["access-control-allow-origin"] == "https://dash.example.com"


def test_sign_in_attempts_are_limited_per_address(live: Live) -> None:
    """Last in this module: it spends the address's attempts."""
    answers = [login(live.server.url, "guess@example.com", f"guess {i}") for i in range(20)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert {a.status_code for a in answers} <= {401, 429}
    assert int(limited[0].headers["retry-after"]) >= 1 and limited[0].json()["error"] == "rate_limited"
    # While limited, even the right password gets no token.
    assert login(live.server.url, EMAIL, PASSWORD).status_code == 429


# revocation across processes ----------------------------------------------------------------
def _fresh_read(url: str, token: str) -> tuple[int, float]:
    """One read on a new connection (the kernel hands each to one of the workers): its status
    and when its answer came."""
    with httpx.Client(timeout=30) as client:
        status = client.get(f"{url}/v1/stats", params=WINDOW, headers=bearer(token)).status_code
    return status, time.monotonic()


def _fresh_browser_event(url: str, pk: str) -> tuple[int, float]:
    """One browser event from ORIGIN on a new connection: its status and when its answer came."""
    with httpx.Client(timeout=30) as client:
        status = client.post(f"{url}/v1/track", json={"event": "e"}, headers=bearer(pk, Origin=ORIGIN)).status_code
    return status, time.monotonic()


def _last_success_after(started: float, attempt: Callable[[], tuple[int, float]], refused: int) -> float:
    """Attempts from 4 threads for 7 s; seconds from `started` to the answer of the last one that
    still succeeded (2xx). Anything but a success or `refused` fails the test."""

    def watch(_: int) -> float:
        last = started
        while time.monotonic() - started < 7.0:
            status, answered_at = attempt()
            assert status < 300 or status == refused, status
            if status < 300:
                last = answered_at
        return last

    with ThreadPoolExecutor(max_workers=4) as pool:
        return max(pool.map(watch, range(4))) - started


def test_a_revocation_and_an_origin_change_reach_every_worker_within_5_seconds(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert create_user(data_dir, EMAIL, PASSWORD).returncode == 0
    server = ServerProcess(data_dir, env={"MILLIMETRIC_WORKERS": "2"}).start()
    try:
        token = login(server.url, EMAIL, PASSWORD).json()["access_token"]
        with httpx.Client(base_url=server.url, headers=bearer(token), timeout=30) as client:
            created = client.post("/admin/projects", json={"name": "Two workers", "allowed_origins": [ORIGIN]}).json()
            pid, rk, pk = created["project"]["id"], created["keys"]["rk"], created["keys"]["pk"]
            # Every worker caches the keys and the project's origins (for the key-cache TTL, a
            # minute by default).
            with ThreadPoolExecutor(max_workers=8) as pool:
                assert [s for s, _ in pool.map(lambda _: _fresh_read(server.url, rk), range(40))] == [200] * 40
                assert [s for s, _ in pool.map(lambda _: _fresh_browser_event(server.url, pk), range(40))] == [202] * 40

            assert client.delete(f"/admin/keys/{rk.split('_')[2]}").json() == {"revoked": True}
            lag = _last_success_after(time.monotonic(), lambda: _fresh_read(server.url, rk), refused=401)
            assert lag < 5.0, f"a worker still accepted the revoked key {lag:.1f} s later"

            patched = client.patch(f"/admin/projects/{pid}", json={"allowed_origins": ["https://elsewhere.example"]})
            assert patched.status_code == 200
            lag = _last_success_after(time.monotonic(), lambda: _fresh_browser_event(server.url, pk), refused=403)
            assert lag < 5.0, f"a worker still accepted the old origin {lag:.1f} s later"
    finally:
        server.kill()
