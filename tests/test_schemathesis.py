"""Contract fuzzing: Schemathesis drives a live `millimetric serve` from its own /openapi.json.

Every operation gets positive cases (valid by the document) and negative ones (each breaks the
document somewhere), always with a valid key of a kind the route takes, so the requests get past
authentication and exercise validation and the handlers. Every response must be a non-5xx that the
document describes: status, content type, headers and body schema.

One server serves the whole module (starting one per operation would cost more than the fuzzing).
Rate limits are off so 429s do not mask what the handlers answer. Per-operation floors on the case
counts add up to more than 1,000 cases in total.
"""

from __future__ import annotations

import datetime as dt
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

from conftest import ORIGIN, Keys, ServerProcess, bearer, cli_project
from millimetric.api.docs import openapi_document
from millimetric.api.protocol import MAX_HEAD_BYTES

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Valid keys are always supplied (authentication failures have their own tests): generating
# `Authorization` as a parameter would only let negative cases drop or break it, and a case whose
# key was then put back by the test is a false "invalid data accepted".
CONFIG = schemathesis.Config.from_dict({
    "generation": {"with-security-parameters": False},
    "checks": {"negative_data_rejection": {"expected-statuses": ["400", "404", "405", "408", "413", "415"]}},
})
INGEST = {"/v1/track", "/v1/batch", "/v1/identify"}
READ = {"/v1/query", "/v1/stats", "/v1/sources"}
# Cases per operation. Operations without inputs have exactly one distinct request.
BUDGET = {"/healthz": 1, "/openapi.json": 1, "OPTIONS": 25}
DEFAULT_BUDGET = 130
SEED_START = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=2)


class Live(NamedTuple):
    server: ServerProcess
    keys: Keys
    schema: Any
    job_id: str
    window: dict[str, str]
    session: requests.Session


def _labels() -> list[str]:
    """Operation labels from the packaged document, so collection needs no server."""
    doc = openapi_document()
    return [f"{method.upper()} {path}" for path, item in doc["paths"].items() for method in item if method != "parameters"]


def _seed(url: str, keys: Keys) -> tuple[str, dict[str, str]]:
    """Events the read routes can find (so their 200 bodies are non-trivial), and a forget job."""
    sk = bearer(keys.sk)
    events = [
        {"event": "$pageview", "anonymous_id": f"a{i}", "user_id": "u1" if i % 3 == 0 else None,
         "timestamp": (SEED_START + dt.timedelta(minutes=7 * i)).isoformat(),
         "url": f"https://shop.example.com/p/{i}?utm_source={'google' if i % 2 else 'newsletter'}"
                f"&utm_medium={'cpc' if i % 4 == 1 else 'email'}&utm_campaign=c{i % 3}",
         "referrer": ["https://www.google.com/", "https://l.facebook.com/", None][i % 3],
         "properties": {"i": i, "nested": {"ok": True}}}
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
    server = ServerProcess(data_dir, env={"MILLIMETRIC_RATE_LIMITS": "off"}).start()
    try:
        job_id, window = _seed(server.url, keys)
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=CONFIG)
        with requests.Session() as session:
            yield Live(server, keys, schema, job_id, window, session)
    finally:
        server.kill()


def _auth(path: str, method: str, keys: Keys) -> st.SearchStrategy[dict[str, str]]:
    """Valid credentials for the route: secret or browser key (with its Origin) for ingest,
    secret for forget, read key for reads, any key for classify, none for the rest."""
    if method == "OPTIONS" or path in ("/healthz", "/openapi.json"):
        return st.just({})
    if path in INGEST:
        return st.sampled_from([
            {"Authorization": f"Bearer {keys.sk}"},
            {"Authorization": f"Bearer {keys.pk}", "Origin": ORIGIN},
        ])
    if path.startswith("/v1/forget"):
        return st.just({"Authorization": f"Bearer {keys.sk}"})
    if path in READ:
        return st.just({"Authorization": f"Bearer {keys.rk}"})
    return st.sampled_from([{"Authorization": f"Bearer {k}"} for k in (keys.rk, keys.sk, keys.pk)])


def _cases(operation: Any, live: Live) -> st.SearchStrategy[Any]:
    """Positive and negative cases, plus positive ones pinned to the seeded data where a random
    value would almost never find it (the time window, the one real job id)."""
    strategies = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    if operation.path in READ:
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, query=dict(live.window)))
    if operation.path == "/v1/forget/{job_id}":
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"job_id": live.job_id}))
    return st.one_of(strategies)


def _head_bytes(case: Any, base_url: str, headers: dict[str, str]) -> int:
    """Size of the request line and headers this case would send.

    Three 2048-character query values of 4-byte characters, percent-encoded, already pass the
    server's 64 KiB head limit: a transport limit the document states in prose, not in a schema.
    """
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
    prepared = requests.Request(kwargs["method"], kwargs["url"], params=kwargs.get("params"),
                                headers=kwargs["headers"]).prepare()
    return len(prepared.url) + sum(len(name) + len(value) + 4 for name, value in prepared.headers.items())


def _has_inputs(operation: Any) -> bool:
    return bool(operation.definition.raw.get("parameters") or operation.definition.raw.get("requestBody")
                or operation.path_parameters)


@pytest.mark.parametrize("label", _labels())
def test_operation_honours_the_document(live: Live, label: str) -> None:
    method, path = label.split(" ", 1)
    operation = live.schema[path][method]
    budget = BUDGET.get(path, BUDGET.get(method, DEFAULT_BUDGET))
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    auth = _auth(path, method, live.keys)
    cases = _cases(operation, live) if _has_inputs(operation) else operation.as_strategy()

    @settings(
        max_examples=budget, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, headers=auth)
    def run(case: Any, headers: dict[str, str]) -> None:
        assume(_head_bytes(case, live.server.url, headers) < MAX_HEAD_BYTES - 1024)
        response = case.call(base_url=live.server.url, session=live.session, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()
    count = sum(statuses.values())
    print(f"{label}: {count} cases in {time.monotonic() - started:.1f}s, statuses {dict(sorted(statuses.items()))}")
    assert count >= 0.9 * budget, f"{label}: only {count} cases ran"
