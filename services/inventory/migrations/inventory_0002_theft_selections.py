"""inventory 0002: stolen reports over ranges and lists kept as one row each (issue 12).

``inventory_theft_selections``: a ``theft.reported`` or ``theft.recovered`` naming a range or a list
of serials, never expanded into per-unit rows (a 1,000,000-serial range took a minute and a
gigabyte as rows). A unit gets the report as a history fact when an event names it.

Every row is kept. Reports that 0.1.0 expanded stay in ``inventory_history`` and
``inventory_units`` as they were: a unit's history already holds them, so they are not applied twice.
Downgrade drops the table: reports stored only as rows here would be forgotten by 0.1.0, which is
why it refuses when the table holds any.
"""

import sqlalchemy as sa
from alembic import op

revision = "inventory_0002"
down_revision = "inventory_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inventory_theft_selections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("range_prefix", sa.String(length=64), nullable=True),
        sa.Column("range_first", sa.BigInteger(), nullable=True),
        sa.Column("range_last", sa.BigInteger(), nullable=True),
        sa.Column("range_width", sa.Integer(), nullable=True),
        sa.Column("serials", sa.String(), nullable=True),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("agency", sa.String(length=64), nullable=False),
        sa.Column("case_number", sa.String(length=64), nullable=False),
        sa.Column("note", sa.String(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_source", "event_id", name="uq_inventory_theft_selection_event"),
    )
    op.create_index("ix_inventory_theft_selections_manufacturer", "inventory_theft_selections",
                    ["manufacturer", "id"], unique=False)


def downgrade() -> None:
    rows = op.get_bind().execute(sa.text("SELECT count(*) FROM inventory_theft_selections")).scalar_one()
    if rows:
        raise RuntimeError(f"inventory_theft_selections holds {rows} stolen reports over ranges or lists that "
                           "inventory_0001 cannot represent; downgrading would forget them")
    op.drop_index("ix_inventory_theft_selections_manufacturer", table_name="inventory_theft_selections")
    op.drop_table("inventory_theft_selections")
