"""The control plane: accounts, projects and API keys on SQLite (embedded) or PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import uuid
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from millimetric.auth.keys import PROJECT_KEY_KINDS, mint_key
from millimetric.store.schema import (
    accounts,
    api_keys,
    dropped_events,
    forget_jobs,
    projects,
    salts,
    tombstones,
)

MIGRATIONS = Path(__file__).parent / "migrations"
LOCAL_ACCOUNT_NAME = "local"


class Project(NamedTuple):
    id: str
    account_id: str
    slug: str
    name: str
    allowed_origins: list[str]
    retention_days: int | None
    keep_bots: bool
    created_at: dt.datetime
    rate_limits: dict[str, Any] = {}

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "slug": self.slug, "name": self.name, "allowed_origins": list(self.allowed_origins)}


class ForgetJob(NamedTuple):
    id: str
    project_id: str
    user_id: str | None
    status: str  # queued | running | done | failed (the last attempt failed; retried at next_attempt_at)
    deleted_rows: int
    created_at: dt.datetime
    finished_at: dt.datetime | None
    attempts: int = 0
    last_error: str | None = None  # of the latest failed attempt; never holds the user id
    next_attempt_at: dt.datetime | None = None  # when a failed job is tried again


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


FORGET_STATES = ("queued", "running", "done", "failed")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def create_control_engine(url: str) -> sa.Engine:
    """An engine for either backend; SQLite gets WAL so the CLI can write while the server runs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        database = sa.make_url(url).database
        if database and database != ":memory:":
            # A configured pepper means nothing else created the data directory yet.
            Path(database).parent.mkdir(parents=True, exist_ok=True)
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


def _aware_or_none(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def _project(row: Any) -> Project:
    return Project(
        row.id,
        row.account_id,
        row.slug,
        row.name,
        list(row.allowed_origins or []),
        row.retention_days,
        bool(row.keep_bots),
        _aware(row.created_at),
        dict(row.rate_limits or {}),
    )


def _job(row: Any) -> ForgetJob:
    return ForgetJob(
        row.id,
        row.project_id,
        row.user_id,
        row.status,
        row.deleted_rows,
        _aware(row.created_at),
        _aware_or_none(row.finished_at),
        row.attempts,
        row.last_error,
        _aware_or_none(row.next_attempt_at),
    )


def _key(row: Any) -> StoredKey:
    return StoredKey(
        row.prefix,
        row.account_id,
        row.project_id,
        row.kind,
        row.env,
        row.name,
        row.secret_hash,
        _aware(row.created_at),
        _aware_or_none(row.last_used_at),
        _aware_or_none(row.revoked_at),
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
            project = Project(str(uuid.uuid4()), account_id, slug, name, list(allowed_origins), None, False, utcnow())
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

    def set_rate_limit(self, project_id: str, route: str, limit: dict[str, float] | str | None) -> None:
        """Override one route's bucket (`{"rate", "burst"}`), switch it `"off"`, or reset it (None)."""
        project = self.get_project(project_id)
        if project is None:
            raise KeyError(project_id)
        limits = dict(project.rate_limits)
        if limit is None:
            limits.pop(route, None)
        else:
            limits[route] = limit
        with self.engine.begin() as conn:
            conn.execute(projects.update().where(projects.c.id == project_id).values(rate_limits=limits))

    def set_retention(self, project_id: str, days: int | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(projects.update().where(projects.c.id == project_id).values(retention_days=days))

    def set_keep_bots(self, project_id: str, keep: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(projects.update().where(projects.c.id == project_id).values(keep_bots=keep))

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

    # daily salts ------------------------------------------------------------------------------
    def salt_for_day(self, day: dt.date) -> bytes:
        """The salt of a UTC day, created on first use; salts of days before yesterday are deleted,
        so none outlives 48 hours. Shared by every process through this table."""
        with self.engine.begin() as conn:
            conn.execute(salts.delete().where(salts.c.day < day - dt.timedelta(days=1)))
            found = conn.execute(sa.select(salts.c.salt).where(salts.c.day == day)).scalar()
        if found:
            return bytes.fromhex(found)
        try:
            with self.engine.begin() as conn:
                conn.execute(salts.insert().values(day=day, salt=secrets.token_hex(32), created_at=utcnow()))
        except sa.exc.IntegrityError:  # another process created it first
            pass
        with self.engine.connect() as conn:
            return bytes.fromhex(conn.execute(sa.select(salts.c.salt).where(salts.c.day == day)).scalar_one())

    def salt_days(self) -> list[dt.date]:
        with self.engine.connect() as conn:
            return [r.day for r in conn.execute(sa.select(salts.c.day).order_by(salts.c.day))]

    # forget jobs and tombstones ---------------------------------------------------------------
    def create_forget_job(self, project_id: str, user_id: str, user_hash: str, tombstone_until: dt.datetime) -> str:
        """Queue a deletion and tombstone the user in one transaction."""
        job_id = str(uuid.uuid4())
        with self.engine.begin() as conn:
            conn.execute(
                forget_jobs.insert().values(
                    id=job_id, project_id=project_id, user_id=user_id, status="queued", created_at=utcnow()
                )
            )
            match = sa.and_(tombstones.c.project_id == project_id, tombstones.c.user_hash == user_hash)
            if conn.execute(tombstones.update().where(match).values(expires_at=tombstone_until)).rowcount == 0:
                conn.execute(
                    tombstones.insert().values(project_id=project_id, user_hash=user_hash, expires_at=tombstone_until)
                )
        return job_id

    def get_forget_job(self, job_id: str) -> ForgetJob | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(forget_jobs).where(forget_jobs.c.id == job_id)).first()
        return _job(row) if row else None

    def unfinished_forget_jobs(self) -> list[ForgetJob]:
        """Queued jobs, failed ones (to retry), and running ones a crash interrupted (deletion is
        idempotent), oldest first."""
        with self.engine.connect() as conn:
            return [
                _job(r)
                for r in conn.execute(
                    sa.select(forget_jobs)
                    .where(forget_jobs.c.status.in_(("queued", "running", "failed")))
                    .order_by(forget_jobs.c.created_at)
                )
            ]

    def forget_job_counts(self) -> dict[str, int]:
        """How many forget jobs are in each state (every state, 0 included), every project together."""
        counts = dict.fromkeys(FORGET_STATES, 0)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(forget_jobs.c.status, sa.func.count()).group_by(forget_jobs.c.status))
            counts.update({status: int(n) for status, n in rows})
        return counts

    def start_forget_attempt(self, job_id: str) -> None:
        """The job is running: one more attempt."""
        with self.engine.begin() as conn:
            conn.execute(
                forget_jobs.update()
                .where(forget_jobs.c.id == job_id)
                .values(
                    status="running",
                    attempts=forget_jobs.c.attempts + 1,
                    next_attempt_at=None,
                    finished_at=None,
                )
            )

    def fail_forget_attempt(self, job_id: str, error: str, retry_at: dt.datetime) -> None:
        """The attempt failed (`error`: a short message without the user id); retry at `retry_at`."""
        with self.engine.begin() as conn:
            conn.execute(
                forget_jobs.update()
                .where(forget_jobs.c.id == job_id)
                .values(
                    status="failed",
                    last_error=error[:200],
                    next_attempt_at=retry_at,
                    finished_at=None,
                )
            )

    def finish_forget_job(self, job_id: str, deleted_rows: int) -> None:
        """The data is gone: done, and the user id is no longer kept."""
        self.update_forget_job(job_id, "done", deleted_rows)

    def update_forget_job(self, job_id: str, status: str, deleted_rows: int = 0) -> None:
        values: dict[str, Any] = {"status": status, "deleted_rows": deleted_rows}
        if status in ("done", "failed"):
            values |= {"finished_at": utcnow()}
        if status == "done":
            values |= {"user_id": None, "next_attempt_at": None}  # keep no identifier once the data is gone
        with self.engine.begin() as conn:
            conn.execute(forget_jobs.update().where(forget_jobs.c.id == job_id).values(**values))

    def live_tombstones(self, now: dt.datetime) -> set[tuple[str, str]]:
        with self.engine.begin() as conn:
            conn.execute(tombstones.delete().where(tombstones.c.expires_at <= now))
            rows = conn.execute(sa.select(tombstones.c.project_id, tombstones.c.user_hash))
            return {(r.project_id, r.user_hash) for r in rows}

    # dropped-event counters -------------------------------------------------------------------
    def add_dropped(self, counts: dict[tuple[str, str], int]) -> None:
        with self.engine.begin() as conn:
            for (project_id, reason), n in counts.items():
                match = sa.and_(dropped_events.c.project_id == project_id, dropped_events.c.reason == reason)
                updated = conn.execute(dropped_events.update().where(match).values(count=dropped_events.c.count + n))
                if updated.rowcount == 0:
                    conn.execute(dropped_events.insert().values(project_id=project_id, reason=reason, count=n))

    def dropped_counts(self, project_id: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(dropped_events).where(dropped_events.c.project_id == project_id))
            return {r.reason: int(r._mapping["count"]) for r in rows}
