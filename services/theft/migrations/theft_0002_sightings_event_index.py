"""theft 0002: an index on the sightings by event (id, source), for voids (issue 14, part 3).

A void (``event.voided``) names the event it withdraws by (source, id); the units that event was
seen on are found through this index and their alerts derived again. No row changes.
"""

from alembic import op

revision = "theft_0002"
down_revision = "theft_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_theft_sightings_event_ref", "theft_sightings", ["event_id", "event_source"])


def downgrade() -> None:
    op.drop_index("ix_theft_sightings_event_ref", table_name="theft_sightings")
