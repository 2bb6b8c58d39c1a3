"""Concurrent admin changes on both real control-plane engines (SQLite file, PostgreSQL): none is
lost, none fails, and every process sees them through the change counter."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import pytest

from millimetric.admin import projects as admin_projects
from millimetric.admin import users as admin_users
from millimetric.auth.sessions import Claims
from millimetric.store.control import ControlPlane, ProjectChanges

from conftest import POSTGRES_ADMIN_URL

THREADS = 8


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'control.sqlite3'}"
        return
    name = f"millimetric_races_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def planes(url: str) -> Iterator[list[ControlPlane]]:
    """One control plane per thread, as separate processes (the CLI, server workers) would have."""
    first = ControlPlane(url, "pepper")
    first.migrate()
    opened = [first] + [ControlPlane(url, "pepper") for _ in range(THREADS - 1)]
    yield opened
    for plane in opened:
        plane.close()


def at_once(planes: list[ControlPlane], work: Callable[[ControlPlane, int], Any]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=len(planes)) as pool:
        return list(pool.map(lambda i: work(planes[i], i), range(len(planes))))


def test_concurrent_rate_limit_changes_of_different_routes_all_land(planes: list[ControlPlane]) -> None:
    project, _ = planes[0].create_project("Shop")
    routes = admin_projects.RATE_LIMITED_ROUTES
    for _round in range(3):
        at_once(
            planes,
            lambda plane, i: admin_projects.update(
                plane,
                project,
                ProjectChanges(rate_limits={routes[i % len(routes)]: {"rate": float(i + 1), "burst": i + 1}}),
            ),
        )
        stored = planes[0].get_project(project.id)
        assert stored is not None and set(stored.rate_limits) == set(routes)


def test_concurrent_origin_additions_all_land(planes: list[ControlPlane]) -> None:
    project, _ = planes[0].create_project("Shop")
    at_once(planes, lambda plane, i: admin_projects.change_origins(plane, project, "add", [f"https://s{i}.example"]))
    stored = planes[0].get_project(project.id)
    assert stored is not None and sorted(stored.allowed_origins) == sorted(
        f"https://s{i}.example" for i in range(THREADS)
    )


def test_concurrent_creations_of_one_name_get_distinct_slugs(planes: list[ControlPlane]) -> None:
    created = at_once(planes, lambda plane, _i: plane.create_project("Blog")[0])
    assert sorted(p.slug for p in created) == sorted(["blog"] + [f"blog-{n}" for n in range(2, THREADS + 1)])
    assert len(planes[0].list_projects()) == THREADS


def test_a_new_subject_seen_by_many_requests_at_once_is_one_user(planes: list[ControlPlane]) -> None:
    callers = at_once(planes, lambda plane, _i: admin_users.caller(plane, Claims("sub-1", "x@example.com")))
    assert {c.user.id for c in callers} == {"sub-1"}
    assert len({tuple(c.account_ids) for c in callers}) == 1
    assert len(planes[0].memberships("sub-1")) == 1


def test_every_change_moves_the_counter_other_processes_poll(planes: list[ControlPlane]) -> None:
    project, tokens = planes[0].create_project("Shop")
    seen = planes[1].version()
    planes[0].update_project(project.id, ProjectChanges(keep_bots=True))
    assert planes[1].version() > seen
    seen = planes[1].version()
    assert planes[0].revoke_key(tokens["rk"].split("_")[2])
    assert planes[1].version() > seen
    seen = planes[1].version()
    assert planes[0].delete_project(project.id) is not None
    assert planes[1].version() > seen
