"""warranty 0003: an index on the facts by event (id, source), for voids (issue 14, part 3).

A void (``event.voided``) names the event it withdraws by (source, id); the units that event
reached are found through this index and their requests decided again. No row changes.
"""

from alembic import op

revision = "warranty_0003"
down_revision = "warranty_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_warranty_facts_event_ref", "warranty_facts", ["event_id", "event_source"])


def downgrade() -> None:
    op.drop_index("ix_warranty_facts_event_ref", table_name="warranty_facts")
