"""inventory 0004: an index on the history by event (id, source), for voids (issue 14, part 3).

A void (``event.voided``) names the event it withdraws by (source, id); the units that event
reached are found through this index and folded again without it. No row changes.

``down_revision`` is inventory_0002 on this branch: inventory_0003 (stock counts and manifests,
another engineer's) comes before it once the branches are merged; the lead re-chains it then.
"""

from alembic import op

revision = "inventory_0004"
down_revision = "inventory_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_inventory_history_event_ref", "inventory_history", ["event_id", "event_source"])


def downgrade() -> None:
    op.drop_index("ix_inventory_history_event_ref", table_name="inventory_history")
