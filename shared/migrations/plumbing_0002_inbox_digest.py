"""plumbing 0002: the inbox keeps each applied event's content digest (0.2.0).

A redelivery of an applied (source, id) with the same content stays a no-op; with other content it
is dead-lettered as ``conflicting_duplicate``. Rows applied before this have no digest (NULL) and
are never reported as conflicts.
"""

import sqlalchemy as sa
from alembic import op

revision = "plumbing_0002"
down_revision = "plumbing_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch:  # SQLite: ADD COLUMN in place, no table copy
        batch.add_column(sa.Column("digest", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("digest")
