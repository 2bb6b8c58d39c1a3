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
    control_version,
    dropped_events,
    forget_jobs,
    memberships,
    projects,
    salts,
    tombstones,
    users,
)

MIGRATIONS = Path(__file__).parent / "migrations"
LOCAL_ACCOUNT_NAME = "local"
SLUG_ATTEMPTS = 20  # concurrent creations of one name each retry on the unique slug
ROLES = ("owner", "member")


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

    def settings(self) -> dict[str, Any]:
        """Everything the admin API shows of a project."""
        return self.public() | {
            "account_id": self.account_id,
            "retention_days": self.retention_days,
            "keep_bots": self.keep_bots,
            "rate_limits": dict(self.rate_limits),
            "created_at": self.created_at.isoformat(),
        }


class User(NamedTuple):
    id: str
    email: str | None
    password_hash: str | None
    created_at: dt.datetime


class Membership(NamedTuple):
    account_id: str
    name: str
    role: str


class ProjectChanges(NamedTuple):
    """A PATCH of a project's settings: only the fields given (not None) change. In
    `rate_limits`, a route mapped to None goes back to the default."""

    name: str | None = None
    allowed_origins: list[str] | None = None
    retention_days: int | None = None
    clear_retention: bool = False
    keep_bots: bool | None = None
    rate_limits: dict[str, Any] | None = None


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
    kind: str = "user"  # "user": one user's events; "project": a deleted project's events


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
        row.kind,
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

    # change counter -------------------------------------------------------------------------
    def version(self) -> int:
        """The control-plane change counter (polled by server processes to drop their caches)."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(control_version.c.version).where(control_version.c.id == 1)).scalar_one())

    @staticmethod
    def _bump(conn: sa.Connection) -> None:
        """First statement of a change's transaction: counts the change and takes the write lock
        that serialises changes (see `schema.control_version`)."""
        conn.execute(
            control_version.update().where(control_version.c.id == 1).values(version=control_version.c.version + 1)
        )

    # accounts -----------------------------------------------------------------------------
    def local_account_id(self) -> str:
        """The self-hoster's own account, created on first use."""
        with self.engine.begin() as conn:
            self._bump(conn)  # serialises concurrent first uses: one local account
            found = conn.execute(
                sa.select(accounts.c.id).where(accounts.c.name == LOCAL_ACCOUNT_NAME).order_by(accounts.c.created_at)
            ).first()
            if found:
                return found.id
            account_id = str(uuid.uuid4())
            conn.execute(accounts.insert().values(id=account_id, name=LOCAL_ACCOUNT_NAME, created_at=utcnow()))
            return account_id

    # users ----------------------------------------------------------------------------------
    def create_user(self, email: str, password_hash: str | None, account_id: str | None = None) -> User:
        """A local user, owner of `account_id` (default: the local account). Raises
        `sa.exc.IntegrityError` when the email is taken."""
        account_id = account_id or self.local_account_id()
        user = User(str(uuid.uuid4()), email, password_hash, utcnow())
        with self.engine.begin() as conn:
            conn.execute(users.insert().values(user._asdict()))
            conn.execute(
                memberships.insert().values(
                    user_id=user.id, account_id=account_id, role="owner", created_at=user.created_at
                )
            )
        return user

    def find_user_by_email(self, email: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.email == email)).first()
        return User(row.id, row.email, row.password_hash, _aware(row.created_at)) if row else None

    def user_for_subject(self, subject: str, email: str | None) -> User:
        """The user a verified token's `sub` names; a new one gets a personal account it owns.
        Concurrent first uses of one `sub` create it once."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.id == subject)).first()
        if row is not None:
            return User(row.id, row.email, row.password_hash, _aware(row.created_at))
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                self._bump(conn)
                if email is not None and conn.execute(sa.select(users.c.id).where(users.c.email == email)).first():
                    email = None  # the address belongs to another user here
                account_id = str(uuid.uuid4())
                conn.execute(users.insert().values(id=subject, email=email, password_hash=None, created_at=now))
                conn.execute(accounts.insert().values(id=account_id, name=email or "personal", created_at=now))
                conn.execute(
                    memberships.insert().values(user_id=subject, account_id=account_id, role="owner", created_at=now)
                )
        except sa.exc.IntegrityError:  # another request created it first
            pass
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.id == subject)).one()
        return User(row.id, row.email, row.password_hash, _aware(row.created_at))

    def memberships(self, user_id: str) -> list[Membership]:
        query = (
            sa.select(accounts.c.id, accounts.c.name, memberships.c.role)
            .join(memberships, memberships.c.account_id == accounts.c.id)
            .where(memberships.c.user_id == user_id)
            .order_by(accounts.c.created_at)
        )
        with self.engine.connect() as conn:
            return [Membership(r.id, r.name, r.role) for r in conn.execute(query)]

    # projects -----------------------------------------------------------------------------
    def create_project(
        self, name: str, allowed_origins: Iterable[str] = (), account_id: str | None = None, env: str = "live"
    ) -> tuple[Project, dict[str, str]]:
        """A project and its three keys (pk, sk, rk); the tokens are returned once, never stored.

        The slug is the name's, suffixed `-2`, `-3`, ... when taken; the unique constraint decides
        between concurrent creations, and the loser tries the next free slug."""
        account_id = account_id or self.local_account_id()
        base = slugify(name)
        for _ in range(SLUG_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    self._bump(conn)  # SQLite: the write lock before the read (no stale snapshot)
                    taken = {
                        r.slug for r in conn.execute(sa.select(projects.c.slug).where(projects.c.slug.like(f"{base}%")))
                    }
                    slug, n = base, 2
                    while slug in taken:
                        slug, n = f"{base}-{n}", n + 1
                    project = Project(
                        str(uuid.uuid4()), account_id, slug, name, list(allowed_origins), None, False, utcnow()
                    )
                    conn.execute(projects.insert().values(project._asdict()))
                    tokens = {kind: self._insert_key(conn, project, kind, env, None) for kind in PROJECT_KEY_KINDS}
                return project, tokens
            except sa.exc.IntegrityError:
                continue  # a concurrent creation took the slug
        raise RuntimeError(f"no free slug for {name!r} after {SLUG_ATTEMPTS} attempts")

    def list_projects(self, account_ids: Iterable[str] | None = None) -> list[Project]:
        """Live projects, of the given accounts only when `account_ids` is given."""
        query = sa.select(projects).where(projects.c.deleted_at.is_(None))
        if account_ids is not None:
            query = query.where(projects.c.account_id.in_(list(account_ids)))
        with self.engine.connect() as conn:
            return [_project(r) for r in conn.execute(query.order_by(projects.c.created_at))]

    def get_project(self, id_or_slug: str) -> Project | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(projects).where(
                    sa.or_(projects.c.id == id_or_slug, projects.c.slug == id_or_slug), projects.c.deleted_at.is_(None)
                )
            ).first()
        return _project(row) if row else None

    def update_project(self, project_id: str, changes: ProjectChanges) -> Project | None:
        """Apply `changes` in one transaction (rate limits merged into the stored ones, under the
        change lock, so concurrent updates of different routes all land). None: no such project."""
        with self.engine.begin() as conn:
            self._bump(conn)
            live = sa.and_(projects.c.id == project_id, projects.c.deleted_at.is_(None))
            row = conn.execute(sa.select(projects).where(live)).first()
            if row is None:
                return None
            values: dict[str, Any] = {}
            if changes.name is not None:
                values["name"] = changes.name
            if changes.allowed_origins is not None:
                values["allowed_origins"] = list(changes.allowed_origins)
            if changes.retention_days is not None or changes.clear_retention:
                values["retention_days"] = changes.retention_days
            if changes.keep_bots is not None:
                values["keep_bots"] = changes.keep_bots
            if changes.rate_limits is not None:
                limits = dict(row.rate_limits or {})
                for route, limit in changes.rate_limits.items():
                    if limit is None:
                        limits.pop(route, None)
                    else:
                        limits[route] = limit
                values["rate_limits"] = limits
            if values:
                conn.execute(projects.update().where(live).values(**values))
            return _project(conn.execute(sa.select(projects).where(live)).one())

    def edit_origins(self, project_id: str, add: list[str], remove: list[str]) -> Project | None:
        """Add and remove allowed origins against the stored list, in one transaction."""
        with self.engine.begin() as conn:
            self._bump(conn)
            live = sa.and_(projects.c.id == project_id, projects.c.deleted_at.is_(None))
            row = conn.execute(sa.select(projects.c.allowed_origins).where(live)).first()
            if row is None:
                return None
            current = [o for o in row.allowed_origins or [] if o not in remove]
            current += [o for o in add if o not in current]
            conn.execute(projects.update().where(live).values(allowed_origins=current))
            return _project(conn.execute(sa.select(projects).where(live)).one())

    def delete_project(self, project_id: str) -> str | None:
        """Delete a project: its keys stop working, its slug is free again, and a queued job
        deletes its events (returned: the job id; None: no such project). The row stays, marked
        deleted, for the job to refer to."""
        now = utcnow()
        job_id = str(uuid.uuid4())
        with self.engine.begin() as conn:
            self._bump(conn)
            live = sa.and_(projects.c.id == project_id, projects.c.deleted_at.is_(None))
            if conn.execute(projects.update().where(live).values(deleted_at=now, slug=project_id)).rowcount != 1:
                return None
            conn.execute(
                api_keys.update()
                .where(api_keys.c.project_id == project_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            conn.execute(
                forget_jobs.insert().values(
                    id=job_id, project_id=project_id, user_id=None, status="queued", created_at=now, kind="project"
                )
            )
        return job_id

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

    def create_account_key(self, account_id: str, env: str = "live", name: str | None = None) -> str:
        """Mint an `ak` key of the account (it reads every project of the account)."""
        minted = mint_key("ak", env, self.pepper)
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.insert().values(
                    prefix=minted.prefix,
                    account_id=account_id,
                    project_id=None,
                    kind="ak",
                    env=env,
                    name=name,
                    secret_hash=minted.secret_hash,
                    created_at=utcnow(),
                )
            )
        return minted.token

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
            self._bump(conn)
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
