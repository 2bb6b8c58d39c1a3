"""User session tokens minted in tests, the way an identity provider (or this server) would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt


def mint_session(
    secret: Any,
    sub: str,
    *,
    email: str | None = None,
    aud: str = "authenticated",
    expires_in: int = 600,
    algorithm: str = "HS256",
    kid: str | None = None,
) -> str:
    """A signed JWT; `secret` is the shared secret (HS256) or a private key (RS256/ES256)."""
    claims: dict[str, Any] = {"sub": sub, "aud": aud, "exp": int(time.time()) + expires_in}
    if email:
        claims["email"] = email
    return jwt.encode(claims, secret, algorithm=algorithm, headers={"kid": kid} if kid else None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token built by hand, as an attacker would: unsigned (`hmac_key` None, for `alg: none`)
    or HMAC-signed with any bytes (e.g. a public key, for algorithm confusion). PyJWT refuses to
    produce either, which is the point."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if hmac_key is None:
        return signing_input + "."
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"
