"""API key format `{kind}_{env}_{prefix}_{secret}`: the one parser, minting and hashing."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import NamedTuple

KINDS = ("pk", "sk", "rk", "ak")
ENVS = ("live", "test")
PROJECT_KEY_KINDS = ("pk", "sk", "rk")  # the three keys a new project gets

_KEY_RE = re.compile(r"^(pk|sk|rk|ak)_(live|test)_([0-9a-f]{8})_([A-Za-z0-9_-]{32,256})$")


class ParsedKey(NamedTuple):
    kind: str
    env: str
    prefix: str
    secret: str


class MintedKey(NamedTuple):
    token: str
    kind: str
    env: str
    prefix: str
    secret_hash: str


def parse_key(token: str) -> ParsedKey | None:
    """Split a presented token; None when it does not have the key shape."""
    match = _KEY_RE.match(token)
    return ParsedKey(*match.groups()) if match else None


def hash_secret(secret: str, pepper: str) -> str:
    return hashlib.sha256((secret + pepper).encode()).hexdigest()


def secret_matches(secret: str, pepper: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret, pepper), stored_hash)


def mint_key(kind: str, env: str, pepper: str) -> MintedKey:
    """A new key; the caller stores `secret_hash` and shows `token` exactly once."""
    if kind not in KINDS or env not in ENVS:
        raise ValueError(f"bad key kind/env {kind!r}/{env!r}")
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)  # 256 bits
    return MintedKey(f"{kind}_{env}_{prefix}_{secret}", kind, env, prefix, hash_secret(secret, pepper))
