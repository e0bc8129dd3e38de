"""plumbing 0001, the baseline: the inbox and the outbox as release 0.1.0 made them.

A database made by 0.1.0 has these tables and no version table: it is stamped here, not migrated.
"""

import sqlalchemy as sa
from alembic import op

revision = "plumbing_0001"
down_revision = None
branch_labels = ("plumbing",)
depends_on = None

TABLES = ("inbox", "outbox")


def upgrade() -> None:
    op.create_table(
        "inbox",
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("service", "event_id", "source"),
    )
    op.create_table(
        "outbox",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("envelope", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index(op.f("ix_outbox_service"), "outbox", ["service"], unique=False)


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("inbox")
