"""plumbing 0003: the values each service erased on request, as pseudonyms (shared/erasure.py).

A new, empty table: no row of another table changes.
"""

import sqlalchemy as sa
from alembic import op

revision = "plumbing_0003"
down_revision = "plumbing_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erased_values",
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("pseudonym", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("erasure_id", sa.String(length=64), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("service", "pseudonym"),
    )


def downgrade() -> None:
    op.drop_table("erased_values")
