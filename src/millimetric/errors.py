"""The error catalogue: every stable error code and its HTTP status (SPEC section 2)."""

from __future__ import annotations

from typing import Any

STATUS: dict[str, int] = {
    "invalid_payload": 400,
    "invalid_params": 400,
    "invalid_group_by": 400,
    "missing_bearer_token": 401,
    "malformed_api_key": 401,
    "invalid_api_key": 401,
    "key_kind_mismatch": 401,
    "invalid_session": 401,
    "invalid_credentials": 401,
    "origin_not_allowed": 403,
    "insufficient_scope": 403,
    "forget_requires_secret_key": 403,
    "key_kind_not_allowed": 403,
    "account_key_required": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "internal_error": 500,
    "forget_failed": 500,
    "upstream_failed": 502,
    "overloaded": 503,
    # Beyond the SPEC's list: HTTP-level refusals that still deserve a JSON envelope.
    "malformed_request": 400,
    "request_timeout": 408,
    "headers_too_large": 431,
}


class ApiError(Exception):
    """Raised anywhere below the API layer; the app turns it into the JSON error envelope."""

    def __init__(
        self,
        code: str,
        details: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if code not in STATUS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(code)
        self.code = code
        self.status = STATUS[code]
        self.details = details
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code}
        if self.details is not None:
            body["details"] = self.details
        body.update(self.extra)
        return body


def overloaded(retry_after_s: int = 1) -> ApiError:
    return ApiError("overloaded", headers={"Retry-After": str(retry_after_s)}, extra={"retry_after_s": retry_after_s})
