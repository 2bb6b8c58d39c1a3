"""Admin sessions: user JWTs, verified with PyJWT.

Accepted: HS256 tokens signed with the configured `MILLIMETRIC_JWT_SECRET` (Supabase Auth's
shared-secret model) or, without one, with the secret the server generated into its data
directory (the tokens `POST /admin/login` issues); and RS256/ES256 tokens whose `kid` is in the
key set at `MILLIMETRIC_JWKS_URL`. Every token needs `aud=authenticated`, `exp` and `sub`. The
algorithm list of each verification is fixed by the key, never taken from the token, so `alg:
none` and algorithm confusion (an HS256 token "signed" with a public key) fail like a bad
signature.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

import jwt

from millimetric.errors import ApiError

AUDIENCE = "authenticated"
ISSUER = "millimetric"  # of the server's own tokens
TOKEN_SECONDS = 3600
ASYMMETRIC = ("RS256", "ES256")
JWKS_CACHE_SECONDS = 300
# An unknown `kid` fetches the key set again, at most this often (made-up kids cannot hammer it).
JWKS_REFETCH_COOLDOWN_SECONDS = 5.0
LEEWAY_SECONDS = 30  # clock skew between the token's issuer and this server
_REQUIRED = ["exp", "sub", "aud"]


class Claims(NamedTuple):
    subject: str
    email: str | None


class SessionVerifier:
    """One per process. The JWKS client caches the key set and fetches it again (off the event
    loop) when a token names a `kid` it does not hold."""

    def __init__(self, secret: str, jwks_url: str | None) -> None:
        self._secret = secret
        self._jwks = (
            jwt.PyJWKClient(
                jwks_url,
                cache_keys=True,
                lifespan=JWKS_CACHE_SECONDS,
                timeout=5,
                cooldown_duration=JWKS_REFETCH_COOLDOWN_SECONDS,
            )
            if jwks_url
            else None
        )

    def issue(self, user_id: str, email: str | None) -> dict[str, Any]:
        """A token for a local sign-in, in `POST /admin/login`'s answer shape."""
        now = int(time.time())
        claims = {"sub": user_id, "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + TOKEN_SECONDS}
        if email:
            claims["email"] = email
        token = jwt.encode(claims, self._secret, algorithm="HS256")
        return {"access_token": token, "token_type": "bearer", "expires_in": TOKEN_SECONDS}

    async def verify(self, authorization: str | None) -> Claims:
        """The claims of the bearer token, or 401 `invalid_session` whatever is wrong with it."""
        if not authorization or authorization[:7].lower() != "bearer ":
            raise ApiError("invalid_session", {"reason": "missing bearer token"})
        token = authorization[7:].strip()
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm == "HS256":
                claims = self._decode(token, self._secret, "HS256")
            elif algorithm in ASYMMETRIC and self._jwks is not None:
                key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
                claims = self._decode(token, key.key, str(algorithm))
            else:
                raise jwt.InvalidAlgorithmError(f"algorithm {algorithm!r} is not accepted")
        except (jwt.PyJWTError, ValueError) as exc:
            raise ApiError("invalid_session", {"reason": _reason(exc)}) from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 255:
            raise ApiError("invalid_session", {"reason": "sub must be a non-empty string"})
        email = claims.get("email")
        return Claims(subject, email if isinstance(email, str) and 0 < len(email) <= 320 else None)

    @staticmethod
    def _decode(token: str, key: Any, algorithm: str) -> dict[str, Any]:
        return jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=AUDIENCE,
            leeway=LEEWAY_SECONDS,
            options={"require": _REQUIRED},
        )


def _reason(exc: Exception) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "expired"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim {exc.claim}"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "algorithm not accepted"
    if isinstance(exc, jwt.PyJWKClientError):
        return "unknown signing key"
    return "malformed token"
