"""The `millimetric` command, run as a real process against a data directory."""

import json
import subprocess
import sys
import time

import httpx

from conftest import bearer, cli, cli_project


def test_projects_create_json_is_exactly_the_documented_document(tmp_path):
    result = cli("projects", "create", "My Shop", "--origin", "https://shop.example.com", "--json", data_dir=tmp_path)
    doc = json.loads(result.stdout)
    assert set(doc) == {"project", "keys"}
    assert set(doc["project"]) == {"id", "slug", "name", "allowed_origins"}
    assert doc["project"]["slug"] == "my-shop" and doc["project"]["allowed_origins"] == ["https://shop.example.com"]
    assert set(doc["keys"]) == {"pk", "sk", "rk"}
    assert all(doc["keys"][k].startswith(f"{k}_live_") for k in doc["keys"])


def test_list_and_key_lifecycle(tmp_path):
    keys = cli_project(tmp_path, "Blog")
    listed = json.loads(cli("projects", "list", "--json", data_dir=tmp_path).stdout)["projects"]
    assert [p["slug"] for p in listed] == ["blog"]
    minted = json.loads(cli("keys", "create", "blog", "--kind", "ak", "--json", data_dir=tmp_path).stdout)
    assert minted["key"].startswith("ak_live_") and minted["kind"] == "ak"
    table = json.loads(cli("keys", "list", "blog", "--json", data_dir=tmp_path).stdout)["keys"]
    assert sorted(k["kind"] for k in table) == ["ak", "pk", "rk", "sk"]
    assert all("secret" not in json.dumps(k) and k["revoked_at"] is None for k in table)
    secret = keys.sk.split("_", 3)[3]
    assert secret not in json.dumps(table)
    cli("keys", "revoke", minted["prefix"], data_dir=tmp_path)
    table = json.loads(cli("keys", "list", "blog", "--json", data_dir=tmp_path).stdout)["keys"]
    assert [k["revoked_at"] is not None for k in table if k["prefix"] == minted["prefix"]] == [True]


def test_cli_errors_are_clear(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "millimetric", "keys", "list", "nope", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "No project 'nope'" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "millimetric", "keys", "create", "nope", "--kind", "zz", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "--kind" in result.stderr


def test_first_serve_creates_the_default_project_and_prints_its_keys(server_factory, tmp_path):
    server = server_factory(tmp_path / "data")
    output = server.log_path.read_text()
    sk = next(line.split()[1] for line in output.splitlines() if line.strip().startswith("sk:"))
    pk = next(line.split()[1] for line in output.splitlines() if line.strip().startswith("pk:"))
    r = httpx.post(f"{server.url}/v1/track", json={"event": "x"}, headers=bearer(sk))
    assert (r.status_code, r.json()) == (202, {"ok": True, "event_id": None})
    r = httpx.post(f"{server.url}/v1/track", json={"event": "x"}, headers=bearer(pk, Origin="http://localhost:8787"))
    assert r.status_code == 202
    server.stop()
    again = server_factory(tmp_path / "data")
    assert "sk:" not in again.log_path.read_text()  # keys are printed once only


def test_revocation_from_the_cli_reaches_a_running_server_within_the_ttl(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    server = server_factory(data_dir, env={"MILLIMETRIC_KEY_CACHE_TTL": "0.5"})
    assert httpx.post(f"{server.url}/v1/track", json={"event": "x"}, headers=bearer(keys.sk)).status_code == 202
    cli("keys", "revoke", keys.sk.split("_")[2], data_dir=data_dir)
    deadline = time.monotonic() + 10
    status = 202
    while status == 202 and time.monotonic() < deadline:
        time.sleep(0.2)
        status = httpx.post(f"{server.url}/v1/track", json={"event": "x"}, headers=bearer(keys.sk)).status_code
    assert status == 401


def test_sigterm_drains_in_flight_requests_and_exits(server_factory, tmp_path):
    from test_durability import outcomes, start_sender, stored_event_ids

    data_dir = tmp_path / "data"
    keys = cli_project(data_dir)
    server = server_factory(data_dir)
    out = tmp_path / "sent.txt"
    sender = start_sender(server, keys.sk, out, requests=1_000_000, concurrency=16, batch=20, tag="term")
    while not out.exists() or out.read_text().count("202") < 50:
        time.sleep(0.05)
    assert server.stop() in (0, -15)  # uvicorn re-raises the signal after a graceful shutdown
    sender.wait(60)
    assert "Traceback" not in server.log_path.read_text()
    assert outcomes(out)["202"] <= stored_event_ids(data_dir)


def test_origins_limits_and_bots_commands(tmp_path):
    cli_project(tmp_path, "Shop", origin="https://shop.example.com")
    doc = json.loads(
        cli("projects", "origins", "shop", "add", "https://*.example.org", "--json", data_dir=tmp_path).stdout
    )
    assert doc == {"allowed_origins": ["https://shop.example.com", "https://*.example.org"]}
    doc = json.loads(
        cli("projects", "origins", "shop", "remove", "https://shop.example.com", "--json", data_dir=tmp_path).stdout
    )
    assert doc == {"allowed_origins": ["https://*.example.org"]}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "millimetric",
            "projects",
            "origins",
            "shop",
            "add",
            "not an origin",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "not an origin" in bad.stderr
    cli("projects", "limits", "shop", "/v1/track", "10", "20", data_dir=tmp_path)
    cli("projects", "limits", "shop", "/v1/batch", "off", data_dir=tmp_path)
    cli("projects", "bots", "shop", "--keep", data_dir=tmp_path)
    from millimetric.store.control import ControlPlane

    control = ControlPlane(f"sqlite:///{tmp_path / 'control.sqlite3'}", "x")
    project = control.get_project("shop")
    assert project.rate_limits == {"/v1/track": {"rate": 10.0, "burst": 20}, "/v1/batch": "off"}
    assert project.keep_bots is True


def test_a_configured_pepper_and_a_new_data_directory(tmp_path):
    data_dir = tmp_path / "not" / "yet" / "here"
    env = {"MILLIMETRIC_PEPPER": "configured-pepper"}
    created = json.loads(cli("projects", "create", "Fresh", "--json", data_dir=data_dir, env=env).stdout)
    assert created["keys"]["sk"].startswith("sk_live_")
    assert not (data_dir / "pepper").exists()  # the configured pepper is used, none generated
