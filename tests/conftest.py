"""Shared fixtures: an app over the real embedded stores, project keys, real server processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator, NamedTuple
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from millimetric.api.app import create_app
from millimetric.settings import Settings

from stored import query_stored

POSTGRES_ADMIN_URL = os.environ.get("MILLIMETRIC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
ORIGIN = "https://shop.example.com"
# Debian's Chromium, driven by Playwright (its own browser download is not used), with what keeps it
# offline and runnable as root.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


class Keys(NamedTuple):
    project_id: str
    slug: str
    pk: str
    sk: str
    rk: str


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    return Settings.from_env(environ={}, data_dir=data_dir, **overrides)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def create_project(client: TestClient, name: str = "shop", origins: tuple[str, ...] = (ORIGIN,)) -> Keys:
    project, tokens = client.app.state.services.control.create_project(name, list(origins))
    return Keys(project.id, project.slug, tokens["pk"], tokens["sk"], tokens["rk"])


@pytest.fixture
def keys(client: TestClient) -> Keys:
    return create_project(client)


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **extra}


def stored_events(client: TestClient, where: str = "true", params: tuple = ()) -> list[dict]:
    names, rows = query_stored(
        client.app.state.services.events, f"SELECT * FROM events WHERE {where} ORDER BY seq", list(params)
    )
    return [dict(zip(names, row)) for row in rows]


# PostgreSQL: a throwaway database per test run ------------------------------------------------
@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    name = f"millimetric_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Real server processes ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "millimetric", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )


def cli_project(data_dir: Path, name: str = "shop", origin: str = ORIGIN) -> Keys:
    doc = json.loads(cli("projects", "create", name, "--origin", origin, "--json", data_dir=data_dir).stdout)
    p, k = doc["project"], doc["keys"]
    return Keys(p["id"], p["slug"], k["pk"], k["sk"], k["rk"])


class ServerProcess:
    """`millimetric serve` in a child process on a free port."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Load tests drive servers far past the default buckets; rate-limit tests switch them on.
        self.env = {**os.environ, "MILLIMETRIC_LOG_LEVEL": "warning", "MILLIMETRIC_RATE_LIMITS": "off", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 30.0, healthy: bool = True) -> "ServerProcess":
        """Start, then wait for /healthz to answer 200 (`healthy=False`: to answer at all, for a
        node that starts while a service it needs is down)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "millimetric", "serve", "--data-dir", str(self.data_dir), "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200 or not healthy:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        return self.proc.returncode if self.proc else 0


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    started: list[ServerProcess] = []

    def factory(
        data_dir: Path | None = None, env: dict[str, str] | None = None, port: int | None = None
    ) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / "data", env, port)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.kill()


# ClickHouse: a real server named by MILLIMETRIC_TEST_CLICKHOUSE_URL, else the engine behind a stand-in
REAL_CLICKHOUSE_URL = os.environ.get("MILLIMETRIC_TEST_CLICKHOUSE_URL")
NEEDS_REAL_CLICKHOUSE = "needs a full ClickHouse server (concurrent queries): set MILLIMETRIC_TEST_CLICKHOUSE_URL"


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`http://user:password@host:port` of a ClickHouse server every test may use (one database each)."""
    if REAL_CLICKHOUSE_URL:
        parts = urlsplit(REAL_CLICKHOUSE_URL)
        yield f"{parts.scheme}://{parts.netloc}"
        return
    from clickhouse_standin import StandInProcess

    standin = StandInProcess(tmp_path_factory.mktemp("clickhouse") / "standin").start()
    yield standin.url
    standin.stop()


@pytest.fixture
def clickhouse_database(clickhouse_url: str) -> Iterator[str]:
    """A MILLIMETRIC_CLICKHOUSE_URL naming a database of its own, dropped afterwards."""
    import clickhouse_connect

    name = f"mm_test_{uuid.uuid4().hex[:12]}"
    yield f"{clickhouse_url}/{name}"
    parts = urlsplit(clickhouse_url)
    client = clickhouse_connect.get_client(
        host=parts.hostname, port=parts.port, username=parts.username or "default", password=parts.password or ""
    )
    try:
        client.command(f"DROP DATABASE IF EXISTS {name}")
    finally:
        client.close()
