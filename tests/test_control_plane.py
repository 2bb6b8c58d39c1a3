"""The control plane on both real engines: SQLite in a temp dir and a throwaway PostgreSQL database."""

import datetime as dt

import pytest
import sqlalchemy as sa

from millimetric.auth.keys import parse_key, secret_matches
from millimetric.store.control import ControlPlane, ProjectChanges


@pytest.fixture(params=["sqlite", "postgresql"])
def control(request, tmp_path) -> ControlPlane:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'control.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    plane = ControlPlane(url, "pepper")
    plane.migrate()
    if request.param == "postgresql":  # the database is shared by the run: start each test empty
        with plane.engine.begin() as conn:
            for table in ("dropped_events", "tombstones", "forget_jobs", "salts", "api_keys", "projects", "accounts"):
                conn.execute(sa.text(f"DELETE FROM {table}"))
    yield plane
    plane.close()


def test_migrations_are_idempotent(control):
    control.migrate()
    control.migrate()
    assert control.list_projects() == []


def test_project_gets_three_keys_stored_as_hashes(control):
    project, tokens = control.create_project("My Shop", ["https://shop.example.com"])
    assert set(tokens) == {"pk", "sk", "rk"}
    assert project.slug == "my-shop" and project.allowed_origins == ["https://shop.example.com"]
    for kind, token in tokens.items():
        parsed = parse_key(token)
        stored = control.find_key(parsed.prefix)
        assert stored.kind == kind and stored.project_id == project.id
        assert parsed.secret not in stored.secret_hash
        assert secret_matches(parsed.secret, "pepper", stored.secret_hash)


def test_slugs_stay_unique(control):
    a, _ = control.create_project("Blog")
    b, _ = control.create_project("Blog")
    assert (a.slug, b.slug) == ("blog", "blog-2")
    assert control.get_project("blog-2").id == b.id
    assert control.get_project(a.id).slug == "blog"


def test_account_key_belongs_to_the_account(control):
    project, _ = control.create_project("A")
    token = control.create_key(project, "ak", name="agency")
    stored = control.find_key(parse_key(token).prefix)
    assert stored.project_id is None and stored.account_id == project.account_id
    assert {k.kind for k in control.list_keys(project)} == {"pk", "sk", "rk", "ak"}


def test_revoke_and_last_used(control):
    project, tokens = control.create_project("A")
    prefix = parse_key(tokens["sk"]).prefix
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    control.touch_keys({prefix: when})
    assert control.find_key(prefix).last_used_at == when
    assert control.revoke_key(prefix) is True
    assert control.revoke_key(prefix) is False
    assert control.find_key(prefix).revoked_at is not None


def test_origins_update(control):
    project, _ = control.create_project("A", ["https://a.example"])
    control.update_project(project.id, ProjectChanges(allowed_origins=["https://b.example", "https://*.c.example"]))
    assert control.get_project(project.id).allowed_origins == ["https://b.example", "https://*.c.example"]
