"""Control-plane tables (SQLAlchemy Core), the same on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("slug", sa.String(100), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("allowed_origins", sa.JSON, nullable=False),
    sa.Column("retention_days", sa.Integer, nullable=True),
    sa.Column("keep_bots", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # route -> {"rate": r, "burst": b} or "off"; routes not listed use the defaults
    sa.Column("rate_limits", sa.JSON, nullable=False, server_default=sa.text("'{}'")),
    # set when deleted: the row stays while a job deletes its events (jobs refer to it)
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("prefix", sa.String(8), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=True, index=True),
    sa.Column("kind", sa.String(2), nullable=False),
    sa.Column("env", sa.String(4), nullable=False),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

salts = sa.Table(
    "salts",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

forget_jobs = sa.Table(
    "forget_jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), nullable=False, index=True),
    sa.Column("user_id", sa.String(256), nullable=True),  # cleared once the job is done
    sa.Column("status", sa.String(8), nullable=False, index=True),
    sa.Column("deleted_rows", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    # attempts made so far; a failed one is retried at next_attempt_at (exponential backoff)
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(200), nullable=True),  # never holds the user id
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    # "user": delete one user's events; "project": delete every event of a deleted project
    sa.Column("kind", sa.String(8), nullable=False, server_default="user"),
)

tombstones = sa.Table(
    "tombstones",
    metadata,
    sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), primary_key=True),
    sa.Column("user_hash", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

dropped_events = sa.Table(
    "dropped_events",
    metadata,
    sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), primary_key=True),
    sa.Column("reason", sa.String(32), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    # A local user's id is a UUID; a user first seen in a JWT keeps the token's `sub`.
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("email", sa.String(320), nullable=True, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=True),  # argon2id; None: signs in elsewhere
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("user_id", sa.String(255), sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),  # owner | member
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# One row: bumped in the transaction of every change a server process caches (keys, project
# settings). Processes poll it and drop their caches when it moves. The bump comes first in the
# transaction, so it also serialises control-plane changes (a write lock on SQLite, a row lock on
# PostgreSQL): read-modify-write updates cannot lose one another.
control_version = sa.Table(
    "control_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)
