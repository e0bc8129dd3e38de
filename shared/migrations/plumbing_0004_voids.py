"""plumbing 0004: the voids each service recorded (shared/voids.py, ``event.voided``).

A new, empty table: no row of another table changes.
"""

import sqlalchemy as sa
from alembic import op

revision = "plumbing_0004"
down_revision = "plumbing_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "voids",
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("voided_id", sa.String(length=128), nullable=False),
        sa.Column("voided_source", sa.String(length=256), nullable=False),
        sa.Column("voided_type", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("void_source", sa.String(length=256), nullable=False),
        sa.Column("void_id", sa.String(length=128), nullable=False),
        sa.Column("void_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("service", "voided_id", "voided_source"),
    )


def downgrade() -> None:
    op.drop_table("voids")
