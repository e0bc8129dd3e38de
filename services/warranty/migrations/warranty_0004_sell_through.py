"""warranty 0004: the sell-through report (issue 14, part 4).

``warranty_facts.terminal_id``: a sale's till or web checkout, the report's channel. Sales applied
before this have none (NULL): 0.3 did not keep it. A rebuild (``serialtrack rebuild warranty``)
fills it from the archive and the streams.

``ix_warranty_facts_period`` on (manufacturer, event_type, event_time, id): one manufacturer's
sales or returns of a period, read in time order without scanning the other manufacturers' facts.

Every row is kept. Downgrade drops the index and the column (the channels are forgotten).
"""

import sqlalchemy as sa
from alembic import op

revision = "warranty_0004"
down_revision = "warranty_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("warranty_facts") as batch:  # nullable: ADD COLUMN in place, SQLite too
        batch.add_column(sa.Column("terminal_id", sa.String(), nullable=True))
    op.create_index("ix_warranty_facts_period", "warranty_facts", ["manufacturer", "event_type", "event_time", "id"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_warranty_facts_period", table_name="warranty_facts")
    with op.batch_alter_table("warranty_facts") as batch:
        batch.drop_column("terminal_id")
