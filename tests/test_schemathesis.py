"""Contract fuzzing: Schemathesis drives a live `millimetric serve` from its own /openapi.json.

Every operation gets positive cases (valid by the document) and negative ones (each breaks the
document somewhere), always with a valid key of a kind the route takes, so the requests get past
authentication into validation and the handlers. Every response must be a non-5xx that the
document describes: status, content type, headers and body schema; and invalid input must be
refused with a 4xx.

One server serves the whole module (starting one per operation would cost more than the fuzzing).
Rate limits are off so 429s do not mask what the handlers answer. The per-operation floors add up
to well over 1,000 cases; MILLIMETRIC_FUZZ_EXAMPLES raises the per-operation budget for a deeper
local run.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from millimetric.api.docs import openapi_document
from millimetric.api.protocol import MAX_HEAD_BYTES

from conftest import ORIGIN, Keys, ServerProcess, bearer, cli, cli_project
from sessions import mint_session

pytestmark = pytest.mark.slow  # real server processes or long waits: `-m "not slow"` skips them

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Valid keys are always supplied (authentication failures have their own tests). Were
# `Authorization` generated as a parameter, negative cases would drop or mangle it, and the key
# the test puts back would turn them into false "invalid data accepted" reports.
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"with-security-parameters": False},
        "checks": {"negative_data_rejection": {"expected-statuses": ["400", "404", "405", "408", "413", "415"]}},
    }
)
INGEST = {"/v1/track", "/v1/batch", "/v1/identify"}
READ = {"/v1/query", "/v1/stats", "/v1/sources", "/v1/funnel"}
MCP = {"/mcp"}
MCP_ACCOUNT = {"/mcp/account"}
NO_INPUTS = {"/healthz", "/openapi.json", "/", "/metrics", "/v1/a.js"}  # exactly one distinct request each
ADMIN_NO_INPUTS = {"GET /admin/me", "GET /admin/projects"}  # likewise, with a session token
FRAMING_HEADERS = {"content-length", "transfer-encoding", "host", "connection"}
DEFAULT_BUDGET = int(os.environ.get("MILLIMETRIC_FUZZ_EXAMPLES", "250"))
PREFLIGHT_BUDGET = 30
SEED_START = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=2)


class Live(NamedTuple):
    server: ServerProcess
    keys: Keys
    account_key: str
    schema: Any
    job_id: str
    window: dict[str, str]
    session: requests.Session
    admin: "Admin"


class Admin(NamedTuple):
    """A signed-in user's token, their account and a project of theirs (so that positive cases
    reach the handlers, not only the 404 of a random id)."""

    token: str
    account_id: str
    project_id: str


def _admin(url: str, data_dir: Path) -> Admin:
    token = mint_session((data_dir / "jwt-secret").read_text().strip(), "fuzzer", email="fuzzer@example.com")
    with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
        account_id = client.get("/admin/me").json()["accounts"][0]["id"]
        created = client.post("/admin/projects", json={"name": "fuzzed", "allowed_origins": [ORIGIN]})
        assert created.status_code == 201
    return Admin(token, account_id, created.json()["project"]["id"])


def _no_inputs(method: str, path: str) -> bool:
    return path in NO_INPUTS or f"{method.upper()} {path}" in ADMIN_NO_INPUTS


def _labels() -> list[str]:
    """Operation labels from the packaged document, so collection needs no server."""
    paths = openapi_document()["paths"]
    return [f"{method.upper()} {path}" for path, item in paths.items() for method in item if method != "parameters"]


def _seed(url: str, keys: Keys) -> tuple[str, dict[str, str]]:
    """Events the read routes can find (so their 200 bodies have rows), and a real forget job."""
    sk = bearer(keys.sk)
    events = [
        {
            "event": "$pageview",
            "anonymous_id": f"a{i}",
            "user_id": "u1" if i % 3 == 0 else None,
            "timestamp": (SEED_START + dt.timedelta(minutes=7 * i)).isoformat(),
            "url": f"https://shop.example.com/p/{i}?utm_source={'google' if i % 2 else 'newsletter'}"
            f"&utm_medium={'cpc' if i % 4 == 1 else 'email'}&utm_campaign=c{i % 3}",
            "referrer": ["https://www.google.com/", "https://l.facebook.com/", None][i % 3],
            "properties": {"i": i, "nested": {"ok": True}},
        }
        for i in range(12)
    ]
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/v1/batch", json={"events": events}, headers=sk).status_code == 202
        assert client.post("/v1/identify", json={"anonymous_id": "a1", "user_id": "u1"}, headers=sk).status_code == 200
        forget = client.post("/v1/forget", json={"user_id": "someone-else"}, headers=sk)
        assert forget.status_code == 200
    window = {"from": SEED_START.isoformat(), "to": (SEED_START + dt.timedelta(hours=3)).isoformat()}
    return forget.json()["job_id"], window


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    keys = cli_project(data_dir)
    account_key = json.loads(cli("keys", "create", keys.slug, "--kind", "ak", "--json", data_dir=data_dir).stdout)[
        "key"
    ]
    server = ServerProcess(data_dir, env={"MILLIMETRIC_RATE_LIMITS": "off"}).start()
    try:
        job_id, window = _seed(server.url, keys)
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=CONFIG)
        with requests.Session() as session:
            yield Live(server, keys, account_key, schema, job_id, window, session, _admin(server.url, data_dir))
    finally:
        server.kill()


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def _credentials(path: str, method: str, live: Live) -> list[dict[str, str]]:
    """Valid credentials for the route: secret or browser key (with its Origin) for ingest,
    secret for forget, read key for reads, read or secret key for MCP, the account key for
    account MCP, any project key for classify, a user's session token for the admin routes (but
    sign-in), none for the rest."""
    keys = live.keys
    if method == "OPTIONS" or path in NO_INPUTS or path == "/admin/login":
        return [{}]
    if path.startswith("/admin/"):
        return [{"Authorization": f"Bearer {live.admin.token}"}]
    if path in INGEST:
        return [{"Authorization": f"Bearer {keys.sk}"}, {"Authorization": f"Bearer {keys.pk}", "Origin": ORIGIN}]
    if path.startswith("/segment/"):  # Segment's write key: the Basic user name
        return [{"Authorization": _basic(keys.sk)}, {"Authorization": _basic(keys.pk), "Origin": ORIGIN}]
    if path.startswith("/posthog/"):  # the key is in the body (`api_key`): made up, so mostly 401
        return [{}]
    if path.startswith("/v1/forget"):
        return [{"Authorization": f"Bearer {keys.sk}"}]
    if path in READ:
        return [{"Authorization": f"Bearer {keys.rk}"}]
    if path in MCP:
        return [{"Authorization": f"Bearer {keys.rk}"}, {"Authorization": f"Bearer {keys.sk}"}]
    if path in MCP_ACCOUNT:
        return [{"Authorization": f"Bearer {live.account_key}"}]
    return [{"Authorization": f"Bearer {key}"} for key in (keys.rk, keys.sk, keys.pk)]


def _cases(operation: Any, live: Live) -> st.SearchStrategy[Any]:
    """Positive and negative cases, plus positive ones pinned to the seeded data where a random
    value would almost never find it (the time window, the one real job id, the admin user's
    project and account)."""
    if _no_inputs(operation.method, operation.path):
        return operation.as_strategy()
    strategies = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    if operation.path in READ:
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, query=dict(live.window)))
    if operation.path == "/v1/funnel":  # steps the seeded events take, so counts are not all 0
        funnel = {**live.window, "steps": "$pageview,$pageview"}
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, query=funnel))
    if operation.path.startswith("/posthog/"):  # the key is in the body: also cases with a real one
        sk = live.keys.sk
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE).map(lambda case: _with_api_key(case, sk)))
    if operation.path == "/v1/forget/{job_id}" and operation.method.upper() == "GET":
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"job_id": live.job_id}))
    # The user's own project and account; never for DELETE, which would leave later operations
    # of the module nothing to find.
    if operation.path.startswith("/admin/projects/{id}") and operation.method.upper() != "DELETE":
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"id": live.admin.project_id}))
    if operation.path == "/admin/accounts/{id}/keys":
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"id": live.admin.account_id}))
    return st.one_of(strategies)


def _with_api_key(case: Any, key: str) -> Any:
    """A PostHog body (an object, or an array of events) carrying a valid `api_key`."""
    if isinstance(case.body, dict):
        case.body = {**case.body, "api_key": key}
    elif isinstance(case.body, list):
        case.body = [{**event, "api_key": key} if isinstance(event, dict) else event for event in case.body]
    return case


def _head_bytes(case: Any, base_url: str, headers: dict[str, str]) -> int:
    """Size of the request line and headers this case would send.

    Three 2048-character query values of 4-byte characters, percent-encoded, already exceed the
    server's 64 KiB head limit: a transport limit the document states in prose, not in a schema.
    """
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
    prepared = requests.Request(
        kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=kwargs["headers"]
    ).prepare()
    return len(prepared.url or "") + sum(len(name) + len(value) + 4 for name, value in prepared.headers.items())


def _overrides_framing(case: Any) -> bool:
    """Whether the case sets a header that frames the HTTP message itself (a made-up
    Content-Length, say). The HTTP layer answers those before routing with 400
    `malformed_request`, which no operation lists."""
    return any(name.lower() in FRAMING_HEADERS for name in (case.headers or {}))


@pytest.mark.parametrize("label", _labels())
def test_operation_honours_the_document(live: Live, label: str) -> None:
    method, path = label.split(" ", 1)
    operation = live.schema[path][method]
    budget = 1 if _no_inputs(method, path) else PREFLIGHT_BUDGET if method == "OPTIONS" else DEFAULT_BUDGET
    statuses: Counter[int] = Counter()
    started = time.monotonic()

    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_cases(operation, live), headers=st.sampled_from(_credentials(path, method, live)))
    def run(case: Any, headers: dict[str, str]) -> None:
        assume(_head_bytes(case, live.server.url, headers) < MAX_HEAD_BYTES - 1024)
        assume(not _overrides_framing(case))
        response = case.call(base_url=live.server.url, session=live.session, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()
    count = sum(statuses.values())
    print(f"{label}: {count} cases in {time.monotonic() - started:.1f}s, statuses {dict(sorted(statuses.items()))}")
    assert count >= 0.9 * budget, f"{label}: only {count} cases ran"


@pytest.mark.parametrize("label", _labels())
def test_operation_boundaries(live: Live, label: str) -> None:
    """Schemathesis' coverage phase: deterministic cases at and just past every documented limit
    (lengths, item counts, enums, required fields and parameters, wrong types, unexpected methods)."""
    method, path = label.split(" ", 1)
    operation = live.schema[path][method]
    cases = live.schema.iter_coverage_cases(
        operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=live.schema.config.generation_for(operation=operation),
    )
    credentials = _credentials(path, method, live)
    count = 0
    for index, case in enumerate(cases):
        headers = credentials[index % len(credentials)]
        if _head_bytes(case, live.server.url, headers) >= MAX_HEAD_BYTES - 1024:
            continue
        response = case.call(base_url=live.server.url, session=live.session, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)
        count += 1
    print(f"{label}: {count} boundary cases")
    assert count >= 1


# Found by the fuzzing above (rarely: ~1 in 10,000 cases): instants whose conversion to UTC leaves
# datetime's range. Kept as fixed cases so a regression cannot hide behind the odds.
OUT_OF_RANGE = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


@pytest.mark.parametrize("instant", OUT_OF_RANGE)
def test_out_of_range_instants_are_refused_with_400(live: Live, instant: str) -> None:
    sk, rk = bearer(live.keys.sk), bearer(live.keys.rk)
    with httpx.Client(base_url=live.server.url, timeout=10) as client:
        answers = [
            client.post("/v1/track", json={"event": "x", "timestamp": instant}, headers=sk),
            client.post("/v1/batch", json={"events": [{"event": "x", "timestamp": instant}]}, headers=sk),
            *(client.get(route, params={"from": instant, "to": "2030-01-01T00:00:00Z"}, headers=rk) for route in READ),
            *(client.get(route, params={"from": "2020-01-01T00:00:00Z", "to": instant}, headers=rk) for route in READ),
        ]
    assert [a.status_code for a in answers] == [400] * len(answers)
