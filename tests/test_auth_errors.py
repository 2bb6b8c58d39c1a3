"""Every key/kind/scope error of SPEC section 2, over HTTP, with status, code and body shape."""

import pytest

from conftest import ORIGIN, bearer, create_project
from stored import query_stored

TRACK = {"event": "signup"}


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert set(body) <= {"error", "details"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]


def test_missing_bearer_token(client, keys):
    assert_error(client.post("/v1/track", json=TRACK), 401, "missing_bearer_token")
    assert_error(
        client.post("/v1/track", json=TRACK, headers={"Authorization": "Basic abc"}), 401, "missing_bearer_token"
    )
    assert_error(
        client.post("/v1/track", json=TRACK, headers={"Authorization": "Bearer "}), 401, "missing_bearer_token"
    )


@pytest.mark.parametrize(
    "token", ["nope", "pk_live_123_abc", "qk_live_0123abcd_" + "x" * 40, "sk_prod_0123abcd_" + "x" * 40]
)
def test_malformed_api_key(client, keys, token):
    assert_error(client.post("/v1/track", json=TRACK, headers=bearer(token)), 401, "malformed_api_key")


def test_invalid_api_key_unknown_prefix_and_wrong_secret(client, keys):
    unknown = "sk_live_00000000_" + "x" * 43
    assert_error(client.post("/v1/track", json=TRACK, headers=bearer(unknown)), 401, "invalid_api_key")
    kind, env, prefix, _secret = keys.sk.split("_", 3)
    wrong = f"{kind}_{env}_{prefix}_" + "y" * 43
    assert_error(client.post("/v1/track", json=TRACK, headers=bearer(wrong)), 401, "invalid_api_key")


def test_revoked_key_stops_at_once_on_this_instance(client, keys):
    assert client.post("/v1/track", json=TRACK, headers=bearer(keys.sk)).status_code == 202
    prefix = keys.sk.split("_")[2]
    services = client.app.state.services
    services.control.revoke_key(prefix)
    services.keys.invalidate(prefix)
    assert_error(client.post("/v1/track", json=TRACK, headers=bearer(keys.sk)), 401, "invalid_api_key")


def test_key_kind_mismatch(client, keys):
    _kind, env, prefix, secret = keys.sk.split("_", 3)
    claimed_pk = f"pk_{env}_{prefix}_{secret}"
    assert_error(client.post("/v1/track", json=TRACK, headers=bearer(claimed_pk)), 401, "key_kind_mismatch")


def test_origin_not_allowed(client, keys):
    assert_error(client.post("/v1/track", json=TRACK, headers=bearer(keys.pk)), 403, "origin_not_allowed")
    evil = bearer(keys.pk, Origin="https://evil.example.com")
    assert_error(client.post("/v1/track", json=TRACK, headers=evil), 403, "origin_not_allowed")
    good = bearer(keys.pk, Origin=ORIGIN)
    assert client.post("/v1/track", json=TRACK, headers=good).status_code == 202


def test_server_keys_ignore_origin(client, keys):
    headers = bearer(keys.sk, Origin="https://evil.example.com")
    assert client.post("/v1/track", json=TRACK, headers=headers).status_code == 202


@pytest.mark.parametrize(
    "path,body",
    [("/v1/track", TRACK), ("/v1/batch", {"events": [TRACK]}), ("/v1/identify", {"anonymous_id": "a", "user_id": "u"})],
)
def test_read_and_account_keys_cannot_ingest(client, keys, path, body):
    assert_error(client.post(path, json=body, headers=bearer(keys.rk)), 403, "insufficient_scope")
    services = client.app.state.services
    ak = services.control.create_key(services.control.get_project(keys.project_id), "ak")
    assert_error(client.post(path, json=body, headers=bearer(ak)), 403, "insufficient_scope")


def test_keys_of_one_project_write_only_there(client, keys):
    other = create_project(client, "other")
    client.post("/v1/track", json={"event": "mine"}, headers=bearer(other.sk))
    _, rows = query_stored(client.app.state.services.events, "SELECT project_id FROM events WHERE event_name = 'mine'")
    assert rows == [(other.project_id,)]


def test_last_used_is_coalesced(client, keys):
    services = client.app.state.services
    prefix = keys.sk.split("_")[2]
    for _ in range(5):
        client.post("/v1/track", json=TRACK, headers=bearer(keys.sk))
    assert services.control.find_key(prefix).last_used_at is None  # not one write per request
    services.keys.flush_last_used()
    assert services.control.find_key(prefix).last_used_at is not None
