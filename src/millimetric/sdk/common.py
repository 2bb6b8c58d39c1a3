"""What the sync and async clients share: event bodies, the retry policy, errors, read parameters.

Nothing here imports the server: `millimetric.sdk` needs only httpx and the standard library.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import json
import logging
import time
import uuid
from typing import Any, Callable, Mapping, TypedDict

import httpx

from millimetric import __version__

log = logging.getLogger("millimetric.sdk")

DEFAULT_HOST = "http://127.0.0.1:8787"
# Waits before each retry of a batch (SPEC): four retries, then the batch is given up.
BACKOFF_SECONDS = (0.1, 0.2, 0.4, 0.8)
# A 429 is retried too, after the server's Retry-After, but never waiting longer than this.
MAX_RETRY_AFTER_SECONDS = 10.0
MAX_BATCH = 1000  # the server's /v1/batch limit
MAX_QUEUE = 10_000  # events held while the server is unreachable; newer ones are dropped beyond it

Moment = str | dt.datetime  # a read's `from_`/`to`: ISO 8601, or a datetime (naive = UTC)
ErrorHook = Callable[[Exception, list[dict[str, Any]]], None]

# The visitor of the request being served, set by the framework helpers (`millimetric.sdk.web`);
# `track` and `identify` send it as `context` unless the call gives its own.
visitor: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("millimetric_visitor", default=None)


class MillimetricError(Exception):
    """A delivery or read failed: the HTTP status (0 for a network error) and the error code."""

    def __init__(self, status: int, code: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}" + (f": {details}" if details else ""))
        self.status, self.code, self.details = status, code, details


class QueryRow(TypedDict):
    timestamp: str
    event_id: str | None
    event_name: str
    anonymous_id: str
    user_id: str | None
    session_id: str
    source: str
    medium: str
    campaign: str
    source_confidence: str
    source_rule_id: str
    referrer: str
    url: str
    path: str
    country: str
    device_type: str
    browser: str
    os: str
    properties: str  # JSON-encoded, as the API returns it


def _iso(value: str | dt.datetime) -> str:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()
    return value


def event_body(event: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A /v1/track body. An `event_id` is generated when absent, so that a retry of a batch the
    server did store is recognised as the same events; the timestamp is taken now, not when the
    batch leaves."""
    body: dict[str, Any] = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
    body.setdefault("event_id", uuid.uuid4().hex)
    body["timestamp"] = _iso(body.get("timestamp") or dt.datetime.now(dt.timezone.utc))
    if "context" not in body and (current := visitor.get()) is not None:
        body["context"] = current
    json.dumps(body)  # a value JSON cannot carry fails this call, not the whole batch later
    return body


def identify_body(anonymous_id: str, user_id: str, traits: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `$identify` event that POST /v1/identify would store, so that it can ride in a batch."""
    return event_body("$identify", {"anonymous_id": anonymous_id, "user_id": user_id, "properties": dict(traits or {})})


def read_params(from_: Moment, to: Moment, params: Mapping[str, Any]) -> dict[str, str]:
    out = {"from": _iso(from_), "to": _iso(to)}
    for name, value in params.items():
        if value is not None:
            out[name] = ",".join(value) if isinstance(value, (list, tuple)) else str(value)
    return out


def error_of(response: httpx.Response) -> MillimetricError:
    try:
        doc = response.json()
        return MillimetricError(response.status_code, str(doc.get("error")), doc.get("details"))
    except ValueError:
        return MillimetricError(response.status_code, "unexpected_response", response.text[:200])


def retry_wait(attempt: int, response: httpx.Response | None) -> float | None:
    """Seconds to wait before retrying after `attempt` (0-based) failed, or None: give up.
    Network errors and 5xx are retried; 429 too, after its Retry-After; any other 4xx is final
    (the same body would be refused again)."""
    if attempt >= len(BACKOFF_SECONDS):
        return None
    if response is None or response.status_code >= 500:
        return BACKOFF_SECONDS[attempt]
    if response.status_code == 429:
        try:
            after = float(response.headers.get("retry-after", "0"))
        except ValueError:
            after = 0.0
        return min(max(after, BACKOFF_SECONDS[attempt]), MAX_RETRY_AFTER_SECONDS)
    return None


def report(on_error: ErrorHook | None, error: Exception, events: list[dict[str, Any]]) -> None:
    """A batch was given up: to the logger and the caller's hook, never as an exception."""
    log.error("millimetric: %d event(s) not delivered: %s", len(events), error)
    if on_error is not None:
        try:
            on_error(error, events)
        except Exception:
            log.exception("millimetric: the on_error hook failed")


def _attempt_failed(exc: Exception | None, response: httpx.Response | None) -> MillimetricError:
    if response is not None:
        return error_of(response)
    return MillimetricError(0, "network_error", str(exc))


def deliver(http: httpx.Client, events: list[dict[str, Any]], on_error: ErrorHook | None) -> bool:
    """POST one batch, retrying per `retry_wait`; False (reported, not raised) when given up."""
    attempt = 0
    while True:
        response: httpx.Response | None = None
        failure: Exception | None = None
        try:
            response = http.post("/v1/batch", json={"events": events})
            if response.status_code < 300:
                return True
        except httpx.HTTPError as exc:
            failure = exc
        except Exception as exc:  # e.g. a property that is not JSON: retrying cannot help
            report(on_error, exc, events)
            return False
        wait = retry_wait(attempt, response)
        if wait is None:
            report(on_error, _attempt_failed(failure, response), events)
            return False
        time.sleep(wait)
        attempt += 1


async def deliver_async(http: httpx.AsyncClient, events: list[dict[str, Any]], on_error: ErrorHook | None) -> bool:
    """`deliver` on an event loop."""
    attempt = 0
    while True:
        response: httpx.Response | None = None
        failure: Exception | None = None
        try:
            response = await http.post("/v1/batch", json={"events": events})
            if response.status_code < 300:
                return True
        except httpx.HTTPError as exc:
            failure = exc
        except Exception as exc:
            report(on_error, exc, events)
            return False
        wait = retry_wait(attempt, response)
        if wait is None:
            report(on_error, _attempt_failed(failure, response), events)
            return False
        await asyncio.sleep(wait)
        attempt += 1


def http_options(key: str, host: str, timeout: float) -> dict[str, Any]:
    return {
        "base_url": host.rstrip("/"),
        "timeout": timeout,
        "headers": {"Authorization": f"Bearer {key}", "User-Agent": f"millimetric-python/{__version__}"},
    }


def answer(response: httpx.Response) -> dict[str, Any]:
    """A read's or forget's JSON; its failure raises, since the caller is waiting for it."""
    if response.status_code >= 300:
        raise error_of(response)
    doc: dict[str, Any] = response.json()
    return doc
