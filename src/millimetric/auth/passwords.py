"""Local users' passwords: argon2id (memory-hard), and a check that takes as long for an unknown
email as for a wrong password."""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (64 MiB, 3 passes)
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@cache
def dummy_hash() -> str:
    """A hash nobody's password matches, checked for unknown emails so they cost the same time.
    Made once per process; servers make it at start-up, so that no sign-in pays for making it."""
    return _hasher.hash("not a password of anyone: timing equaliser")


def password_matches(password: str, stored_hash: str | None) -> bool:
    """Blocking (tens of milliseconds, by design): run it in a thread. `stored_hash` None (no such
    user, or a user without a local password) still pays for one verification."""
    try:
        return _hasher.verify(stored_hash or dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False
