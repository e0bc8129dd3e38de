"""inventory 0005: stock aging (issue 14, part 5).

``inventory_units.stocked_at``: the event time of the receipt, or of the return when later, that put
the unit where it stands on hand (``domain.UnitState.stocked_at``); ``GET /stock/aging`` counts days
in stock from it. ``inventory_units.times_returned``: how many times customers brought the unit back.

Every row is kept, and both are filled from each unit's stored history, as the fold computes them:
the latest ``unit.received`` or ``unit.returned`` (a late event folds in time order, so the latest
in time is the one the fold ends with), and the number of ``unit.returned``. Downgrade drops them.
"""

import sqlalchemy as sa
from alembic import op

revision = "inventory_0005"
down_revision = "inventory_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inventory_units") as batch:  # nullable, or a server default: in place
        batch.add_column(sa.Column("stocked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("times_returned", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE inventory_units SET "
        "stocked_at = (SELECT max(h.event_time) FROM inventory_history h "
        "WHERE h.manufacturer = inventory_units.manufacturer AND h.serial = inventory_units.serial "
        "AND h.event_type IN ('unit.received', 'unit.returned')), "
        "times_returned = (SELECT count(*) FROM inventory_history h "
        "WHERE h.manufacturer = inventory_units.manufacturer AND h.serial = inventory_units.serial "
        "AND h.event_type = 'unit.returned')"
    )


def downgrade() -> None:
    with op.batch_alter_table("inventory_units") as batch:
        batch.drop_column("times_returned")
        batch.drop_column("stocked_at")
