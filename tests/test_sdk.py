"""The Python SDK against a real server process, through a counting proxy written here: batching,
retries on 5xx, no retry on 4xx, a dead server, paging reads, and the framework helpers."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import subprocess
import sys
import threading
import types
import uuid
from typing import Any, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from millimetric import AsyncClient, Client
from millimetric.sdk import ASGIMiddleware, MillimetricError, WSGIMiddleware, init_flask, visitor_context

from conftest import ServerProcess, cli_project, free_port

pytestmark = pytest.mark.slow

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"


class CountingProxy:
    """Forwards to the server, recording each request (method, path, JSON body); `fail(n, status)`
    answers the next n requests itself with that status instead."""

    def __init__(self, upstream: str) -> None:
        proxy = self
        self.requests: list[tuple[str, str, Any]] = []
        self.failures: list[int] = []
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with proxy.lock:
                    proxy.requests.append((self.command, self.path, json.loads(body) if body else None))
                    failure = proxy.failures.pop(0) if proxy.failures else None
                if failure is not None:
                    status, content = failure, json.dumps({"error": "overloaded"}).encode()
                    headers = {"content-type": "application/json", "retry-after": "0"}
                else:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                    r = httpx.request(self.command, upstream + self.path, content=body, headers=headers, timeout=30)
                    status, content, headers = r.status_code, r.content, {"content-type": r.headers["content-type"]}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, times: int, status: int) -> None:
        with self.lock:
            self.failures = [status] * times

    def batches(self) -> list[list[dict]]:
        with self.lock:
            return [body["events"] for method, path, body in self.requests if path == "/v1/batch"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    data_dir = tmp_path_factory.mktemp("sdk") / "data"
    keys = cli_project(data_dir)
    process = ServerProcess(data_dir).start()
    try:
        yield process, keys.sk
    finally:
        process.kill()


@pytest.fixture
def proxy(server) -> Iterator[CountingProxy]:
    counting = CountingProxy(server[0].url)
    yield counting
    counting.server.shutdown()


def window() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    return now - dt.timedelta(hours=1), now + dt.timedelta(hours=1)


def stored(server, event: str, **params: Any) -> list[dict]:
    with Client(server[1], host=server[0].url) as reader:
        return list(reader.query(*window(), event=event, **params))


def test_batching_sends_fewer_requests_than_events_and_query_pages_through_cursors(server, proxy):
    name = f"batched-{uuid.uuid4().hex[:8]}"
    with Client(server[1], host=proxy.url, flush_at=10, flush_interval=60) as client:
        for i in range(25):
            client.track(name, properties={"i": i}, anonymous_id="a1")
        assert client.flush()
    sizes = [len(batch) for batch in proxy.batches()]
    assert sum(sizes) == 25 and len(sizes) == 3 and max(sizes) == 10
    rows = stored(server, name, limit=10)  # three pages
    assert sorted(json.loads(r["properties"])["i"] for r in rows) == list(range(25))
    assert len({r["event_id"] for r in rows}) == 25  # each event got its own generated id


def test_two_503_answers_are_retried_and_the_event_is_stored_once(server, proxy):
    errors: list[Exception] = []
    name = f"retried-{uuid.uuid4().hex[:8]}"
    proxy.fail(2, 503)
    with Client(server[1], host=proxy.url, on_error=lambda exc, events: errors.append(exc)) as client:
        client.track(name, user_id="u1")
        assert client.flush()
    assert len(proxy.batches()) == 3
    assert errors == []
    [row] = stored(server, name)
    assert row["user_id"] == "u1"


def test_a_4xx_is_not_retried_and_goes_to_on_error(server, proxy):
    failed: list[tuple[Exception, list]] = []
    with Client(server[1], host=proxy.url, on_error=lambda exc, events: failed.append((exc, events))) as client:
        client.track("$not_allowed")  # reserved name: 400 invalid_payload
        client.flush()
    assert len(proxy.batches()) == 1
    [(error, events)] = failed
    assert isinstance(error, MillimetricError) and error.status == 400 and error.code == "invalid_payload"
    assert events[0]["event"] == "$not_allowed"


def test_a_dead_server_never_raises_into_the_caller():
    failed: list[Exception] = []
    client = Client(
        "sk_live_00000000_x", host=f"http://127.0.0.1:{free_port()}", on_error=lambda e, ev: failed.append(e)
    )
    client.track("lost", properties={"a": 1})
    client.track("unencodable", properties={"when": object()})
    client.identify("a1", "u1")
    assert client.flush(timeout=60)
    client.close()
    client.track("after close")  # reported, not raised
    # the unencodable event at once; the batch after its retries; the event after close
    assert [type(e) for e in failed] == [TypeError, MillimetricError, MillimetricError]
    assert (failed[1].status, failed[1].code, failed[2].code) == (0, "network_error", "client_closed")


def test_a_dead_server_never_raises_into_the_async_caller():
    failed: list[Exception] = []

    async def main() -> None:
        client = AsyncClient(
            "sk_live_00000000_x", host=f"http://127.0.0.1:{free_port()}", on_error=lambda e, ev: failed.append(e)
        )
        await client.track("lost")
        await client.identify("a1", "u1")
        await client.flush()
        await client.aclose()
        await client.track("after close")

    asyncio.run(main())
    assert [(e.status, e.code) for e in failed] == [(0, "network_error"), (0, "client_closed")]


def test_the_async_client_batches_and_retries(server, proxy):
    name = f"async-{uuid.uuid4().hex[:8]}"

    async def main() -> list[dict]:
        proxy.fail(1, 502)
        async with AsyncClient(server[1], host=proxy.url, flush_at=5, flush_interval=60) as client:
            for i in range(12):
                await client.track(name, properties={"i": i})
            await client.flush()
            return [row async for row in client.query(*window(), event=name, limit=5)]

    rows = asyncio.run(main())
    assert sorted(json.loads(r["properties"])["i"] for r in rows) == list(range(12))
    assert sum(len(b) for b in proxy.batches()) == 12 + 5  # the first batch of 5 was sent twice
    assert len(proxy.batches()) == 4


def test_the_asgi_helper_forwards_the_visitor_ip_and_user_agent(server, proxy):
    name = f"asgi-{uuid.uuid4().hex[:8]}"
    client = Client(server[1], host=proxy.url)

    async def signup(request: Request) -> PlainTextResponse:
        client.track(name)
        return PlainTextResponse("ok")

    app = ASGIMiddleware(Starlette(routes=[Route("/signup", signup, methods=["POST"])]))

    async def visit() -> None:
        transport = httpx.ASGITransport(app=app, client=("8.8.8.8", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as browser:
            assert (await browser.post("/signup", headers={"User-Agent": IPHONE})).status_code == 200

    asyncio.run(visit())
    client.close()
    [[event]] = proxy.batches()
    assert event["context"] == {"ip": "8.8.8.8", "user_agent": IPHONE}
    [row] = stored(server, name)
    assert (row["device_type"], row["os"]) == ("mobile", "ios")  # the visitor's, not httpx's
    assert row["country"] == "US"


def test_the_wsgi_helper_trusts_x_forwarded_for_only_when_told(server, proxy):
    client = Client(server[1], host=proxy.url)

    def view(environ: dict, start_response: Any) -> list[bytes]:
        client.track("wsgi")
        start_response("200 OK", [])
        return [b"ok"]

    environ = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7, 10.0.0.1", "HTTP_USER_AGENT": "UA"}
    WSGIMiddleware(view)(environ, lambda *a: None)
    WSGIMiddleware(view, trust_forwarded_for=True)(environ, lambda *a: None)
    client.track("outside a request")
    client.close()
    contexts = [e.get("context") for batch in proxy.batches() for e in batch]
    assert contexts == [{"ip": "10.0.0.1", "user_agent": "UA"}, {"ip": "203.0.113.7", "user_agent": "UA"}, None]
    assert visitor_context(None, "") == {}


def test_the_flask_helper_forwards_the_visitor(server, proxy):
    flask = pytest.importorskip("flask")
    client = Client(server[1], host=proxy.url)
    app = flask.Flask("shop")

    @app.post("/signup")
    def signup() -> str:
        client.track("flask signup")
        return "ok"

    init_flask(app)
    response = app.test_client().post(
        "/signup", headers={"User-Agent": IPHONE}, environ_base={"REMOTE_ADDR": "8.8.4.4"}
    )
    assert response.status_code == 200
    client.close()
    [[event]] = proxy.batches()
    assert event["context"] == {"ip": "8.8.4.4", "user_agent": IPHONE}


def test_the_django_helper_forwards_the_visitor(server, proxy):
    pytest.importorskip("django")
    import django
    from django.conf import settings
    from django.http import HttpResponse
    from django.test import Client as DjangoClient
    from django.test.utils import override_settings
    from django.urls import path

    client = Client(server[1], host=proxy.url)

    def signup(request: Any) -> HttpResponse:
        client.track("django signup")
        return HttpResponse("ok")

    urls = types.ModuleType("millimetric_test_urls")
    urls.urlpatterns = [path("signup", signup)]  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    if not settings.configured:
        settings.configure(ALLOWED_HOSTS=["*"], MIDDLEWARE=["millimetric.sdk.web.DjangoMiddleware"])
        django.setup()
    with override_settings(ROOT_URLCONF=urls.__name__, MIDDLEWARE=["millimetric.sdk.web.DjangoMiddleware"]):
        response = DjangoClient().post("/signup", HTTP_USER_AGENT=IPHONE, REMOTE_ADDR="1.1.1.1")
    assert response.status_code == 200
    client.close()
    [[event]] = proxy.batches()
    assert event["context"] == {"ip": "1.1.1.1", "user_agent": IPHONE}


def test_a_429_is_retried_after_retry_after(server, proxy):
    name = f"limited-{uuid.uuid4().hex[:8]}"
    proxy.fail(1, 429)
    with Client(server[1], host=proxy.url) as client:
        client.track(name)
        client.flush()
    assert len(proxy.batches()) == 2
    assert len(stored(server, name)) == 1


def test_events_still_queued_at_interpreter_exit_are_sent(server, tmp_path):
    """Neither client is flushed or closed by the script: the exit hooks send what is queued,
    the async client's synchronously since its event loop is gone by then."""
    name = f"at-exit-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "script.py"
    script.write_text(
        "import asyncio, sys\n"
        "from millimetric import AsyncClient, Client\n"
        "key, host, name = sys.argv[1:]\n"
        "Client(key, host=host, flush_interval=600).track(name, properties={'by': 'sync'})\n"
        "async def main():\n"
        "    await AsyncClient(key, host=host, flush_interval=600).track(name, properties={'by': 'async'})\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, str(script), server[1], server[0].url, name], check=True, timeout=120)
    assert sorted(json.loads(r["properties"])["by"] for r in stored(server, name)) == ["async", "sync"]


def test_aclose_waits_for_the_batch_in_flight(server, proxy):
    name = f"in-flight-{uuid.uuid4().hex[:8]}"
    proxy.fail(1, 503)  # the batch is being retried when aclose comes

    async def main() -> None:
        client = AsyncClient(server[1], host=proxy.url, flush_at=1)
        await client.track(name)
        while not proxy.batches():
            await asyncio.sleep(0.01)
        await client.aclose()

    asyncio.run(main())
    assert len(proxy.batches()) == 2
    assert len(stored(server, name)) == 1
