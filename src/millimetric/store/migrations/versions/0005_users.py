"""users, account memberships, the control-plane change counter, project deletion

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("email", sa.String(320), nullable=True, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.String(255), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("account_id", sa.String(36), sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    version = op.create_table(
        "control_version",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("forget_jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(8), nullable=False, server_default="user"))


def downgrade() -> None:
    with op.batch_alter_table("forget_jobs") as batch:
        batch.drop_column("kind")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("deleted_at")
    op.drop_table("control_version")
    op.drop_table("memberships")
    op.drop_table("users")
