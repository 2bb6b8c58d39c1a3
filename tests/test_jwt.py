"""Session tokens against a real server process: HS256 with the configured secret, RS256 and
ES256 from a key set served by the test, and every reason a token is refused."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from conftest import ServerProcess, bearer
from sessions import forged, mint_session

pytestmark = pytest.mark.slow  # real server processes or long waits: `-m "not slow"` skips them

SECRET = "a-shared-secret-of-the-identity-provider-0123456789"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ROTATED_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: Any, kid: str) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        return json.loads(RSAAlgorithm.to_jwk(public)) | {"kid": kid, "alg": "RS256", "use": "sig"}
    return json.loads(ECAlgorithm.to_jwk(public)) | {"kid": kid, "alg": "ES256", "use": "sig"}


class KeySet:
    """A JWKS endpoint on a free port; `keys` can change while it serves."""

    def __init__(self) -> None:
        self.keys = [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1")]
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                owner.fetches += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def key_set() -> Iterator[KeySet]:
    served = KeySet()
    yield served
    served.close()


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, key_set: KeySet) -> Iterator[str]:
    data_dir: Path = tmp_path_factory.mktemp("jwt") / "data"
    env = {"MILLIMETRIC_JWT_SECRET": SECRET, "MILLIMETRIC_JWKS_URL": key_set.url}
    server = ServerProcess(data_dir, env=env).start()
    yield server.url
    server.kill()


def me(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{url}/admin/me", headers=headers, timeout=30)


def test_a_new_subject_gets_a_user_and_a_personal_account(url: str) -> None:
    token = mint_session(SECRET, "8d3f4c1e-supabase-user", email="ada@example.com")
    first = me(url, bearer(token))
    assert first.status_code == 200
    assert first.json()["user"] == {"id": "8d3f4c1e-supabase-user", "email": "ada@example.com"}
    [account] = first.json()["accounts"]
    assert account["role"] == "owner"
    assert me(url, bearer(token)).json() == first.json()  # the same user and account next time


def test_rs256_and_es256_tokens_are_verified_against_the_key_set(url: str) -> None:
    for key, algorithm, kid in ((RSA_KEY, "RS256", "rsa-1"), (EC_KEY, "ES256", "ec-1")):
        token = mint_session(key, f"user-{algorithm}", algorithm=algorithm, kid=kid)
        answer = me(url, bearer(token))
        assert answer.status_code == 200, (algorithm, answer.text)
        assert answer.json()["user"]["id"] == f"user-{algorithm}"


def test_an_unknown_kid_fetches_the_key_set_again(url: str, key_set: KeySet) -> None:
    token = mint_session(ROTATED_KEY, "rotated-user", algorithm="RS256", kid="rsa-2")
    assert me(url, bearer(token)).status_code == 401  # not published yet
    key_set.keys = key_set.keys + [jwk(ROTATED_KEY, "rsa-2")]
    deadline = time.monotonic() + 30  # refetches are at most one per few seconds
    answer = me(url, bearer(token))
    while answer.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = me(url, bearer(token))
    assert answer.status_code == 200 and answer.json()["user"]["id"] == "rotated-user"


def _claims(**overrides: Any) -> dict[str, Any]:
    return {"sub": "attacker", "aud": "authenticated", "exp": int(time.time()) + 600} | overrides


RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
INVALID = {
    "missing": {},
    "not a bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
    "no token": {"Authorization": "Bearer"},
    "garbage": bearer("not.a.jwt"),
    "expired": bearer(mint_session(SECRET, "someone", expires_in=-3600)),
    "wrong secret": bearer(mint_session("another-secret-entirely-0123456789abcdef", "someone")),
    "wrong audience": bearer(mint_session(SECRET, "someone", aud="anon")),
    "no exp": bearer(
        forged({"alg": "HS256", "typ": "JWT"}, {"sub": "someone", "aud": "authenticated"}, SECRET.encode())
    ),
    "alg none": bearer(forged({"alg": "none", "typ": "JWT"}, _claims(), None)),
    "HS256 signed with the public key": bearer(
        forged({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, _claims(), RSA_PUBLIC_PEM)
    ),
    "RS256 signed by a key not in the set": bearer(
        mint_session(
            rsa.generate_private_key(public_exponent=65537, key_size=2048), "x", algorithm="RS256", kid="rsa-1"
        )
    ),
    "unaccepted algorithm": bearer(mint_session(SECRET * 2, "someone", algorithm="HS512")),
}


@pytest.mark.parametrize("cause", list(INVALID))
def test_every_bad_token_is_an_invalid_session(url: str, cause: str) -> None:
    for answer in (
        me(url, INVALID[cause]),
        httpx.get(f"{url}/admin/projects", headers=INVALID[cause], timeout=30),
        httpx.post(f"{url}/admin/projects", json={"name": "x"}, headers=INVALID[cause], timeout=30),
    ):
        assert answer.status_code == 401, (cause, answer.text)
        assert answer.json()["error"] == "invalid_session"


def test_the_control_tokens_still_work(url: str) -> None:
    """The forgeries above fail for what they forge, not because the claims are off: the same
    claims, properly signed, pass."""
    properly = forged({"alg": "HS256", "typ": "JWT"}, _claims(), SECRET.encode())
    assert me(url, bearer(properly)).status_code == 200
