"""The control plane: accounts, projects and API keys on SQLite (embedded) or PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from millimetric.auth.keys import PROJECT_KEY_KINDS, mint_key
from millimetric.store.schema import accounts, api_keys, projects

MIGRATIONS = Path(__file__).parent / "migrations"
LOCAL_ACCOUNT_NAME = "local"


class Project(NamedTuple):
    id: str
    account_id: str
    slug: str
    name: str
    allowed_origins: list[str]
    retention_days: int | None
    created_at: dt.datetime

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "slug": self.slug, "name": self.name, "allowed_origins": list(self.allowed_origins)}


class StoredKey(NamedTuple):
    prefix: str
    account_id: str
    project_id: str | None
    kind: str
    env: str
    name: str | None
    secret_hash: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def create_control_engine(url: str) -> sa.Engine:
    """An engine for either backend; SQLite gets WAL so the CLI can write while the server runs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest revision (run at every start-up; a no-op when current)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:60] or "project"


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def _project(row: Any) -> Project:
    return Project(
        row.id, row.account_id, row.slug, row.name, list(row.allowed_origins or []),
        row.retention_days, _aware(row.created_at),
    )


def _key(row: Any) -> StoredKey:
    return StoredKey(
        row.prefix, row.account_id, row.project_id, row.kind, row.env, row.name, row.secret_hash,
        _aware(row.created_at), _aware(row.last_used_at), _aware(row.revoked_at),
    )


class ControlPlane:
    def __init__(self, url: str, pepper: str) -> None:
        self.engine = create_control_engine(url)
        self.pepper = pepper

    def migrate(self) -> None:
        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # accounts -----------------------------------------------------------------------------
    def local_account_id(self) -> str:
        """The self-hoster's own account, created on first use."""
        with self.engine.begin() as conn:
            found = conn.execute(
                sa.select(accounts.c.id).where(accounts.c.name == LOCAL_ACCOUNT_NAME).order_by(accounts.c.created_at)
            ).first()
            if found:
                return found.id
            account_id = str(uuid.uuid4())
            conn.execute(accounts.insert().values(id=account_id, name=LOCAL_ACCOUNT_NAME, created_at=utcnow()))
            return account_id

    # projects -----------------------------------------------------------------------------
    def create_project(
        self, name: str, allowed_origins: Iterable[str] = (), account_id: str | None = None, env: str = "live"
    ) -> tuple[Project, dict[str, str]]:
        """A project and its three keys (pk, sk, rk); the tokens are returned once, never stored."""
        account_id = account_id or self.local_account_id()
        with self.engine.begin() as conn:
            taken = {r.slug for r in conn.execute(sa.select(projects.c.slug))}
            base = slug = slugify(name)
            n = 2
            while slug in taken:
                slug, n = f"{base}-{n}", n + 1
            project = Project(str(uuid.uuid4()), account_id, slug, name, list(allowed_origins), None, utcnow())
            conn.execute(projects.insert().values(project._asdict()))
            tokens = {kind: self._insert_key(conn, project, kind, env, None) for kind in PROJECT_KEY_KINDS}
        return project, tokens

    def list_projects(self) -> list[Project]:
        with self.engine.connect() as conn:
            return [_project(r) for r in conn.execute(sa.select(projects).order_by(projects.c.created_at))]

    def get_project(self, id_or_slug: str) -> Project | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(projects).where(sa.or_(projects.c.id == id_or_slug, projects.c.slug == id_or_slug))
            ).first()
        return _project(row) if row else None

    def set_allowed_origins(self, project_id: str, origins: list[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(projects.update().where(projects.c.id == project_id).values(allowed_origins=origins))

    # keys ---------------------------------------------------------------------------------
    def _insert_key(self, conn: sa.Connection, project: Project, kind: str, env: str, name: str | None) -> str:
        minted = mint_key(kind, env, self.pepper)
        conn.execute(
            api_keys.insert().values(
                prefix=minted.prefix,
                account_id=project.account_id,
                project_id=None if kind == "ak" else project.id,
                kind=kind,
                env=env,
                name=name,
                secret_hash=minted.secret_hash,
                created_at=utcnow(),
            )
        )
        return minted.token

    def create_key(self, project: Project, kind: str, env: str = "live", name: str | None = None) -> str:
        """Mint one key; an `ak` key belongs to the project's account, not the project."""
        with self.engine.begin() as conn:
            return self._insert_key(conn, project, kind, env, name)

    def list_keys(self, project: Project) -> list[StoredKey]:
        query = sa.select(api_keys).where(
            sa.or_(
                api_keys.c.project_id == project.id,
                sa.and_(api_keys.c.kind == "ak", api_keys.c.account_id == project.account_id),
            )
        )
        with self.engine.connect() as conn:
            return [_key(r) for r in conn.execute(query.order_by(api_keys.c.created_at))]

    def find_key(self, prefix: str) -> StoredKey | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix)).first()
        return _key(row) if row else None

    def revoke_key(self, prefix: str) -> bool:
        """True when a live key was revoked now."""
        with self.engine.begin() as conn:
            result = conn.execute(
                api_keys.update()
                .where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return result.rowcount == 1

    def touch_keys(self, last_used: dict[str, dt.datetime]) -> None:
        """Write coalesced `last_used_at` values: one statement per flush, not per request."""
        if not last_used:
            return
        stmt = (
            api_keys.update()
            .where(api_keys.c.prefix == sa.bindparam("b_prefix"))
            .values(last_used_at=sa.bindparam("b_used"))
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, [{"b_prefix": p, "b_used": t} for p, t in last_used.items()])
