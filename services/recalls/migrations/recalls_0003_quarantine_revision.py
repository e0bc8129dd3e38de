"""recalls 0003: the revision of inventory's hold reports on each campaign row (issue 16).

``recalls_affected.quarantine_revision``: inventory numbers its reports on a (recall, unit) hold,
and a later one (a hold moved to its true first time, or taken back by
``unit.quarantine.withdrawn``) replaces an earlier one whatever order they arrive in. Existing rows
keep their hold with no revision: the first revised report replaces it. Downgrade drops the column:
rows keep the hold last applied.
"""

import sqlalchemy as sa
from alembic import op

revision = "recalls_0003"
down_revision = "recalls_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recalls_affected") as batch:
        batch.add_column(sa.Column("quarantine_revision", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recalls_affected") as batch:
        batch.drop_column("quarantine_revision")
