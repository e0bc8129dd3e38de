"""inventory 0003: shipment manifests and stock counts (issue 14, parts 1 and 2).

- ``inventory_shipments``: one row per ``shipment.dispatched`` (a part of a manifest), its serials
  kept as it sent them (a list, ranges), never expanded at dispatch.
- ``inventory_shipment_units``: what reconciliation found per unit of a shipment (received,
  diverted, missing, unexpected): rows only for units something happened to.
- ``inventory_counts``, ``inventory_count_parts``, ``inventory_count_units``: a cycle count, its
  parts as they came, and the judgement of each unit (matched, missing, unexpected).
- ``ix_inventory_history_event_time``: a count finds the units whose history moved after its time.

Downgrade drops them; it refuses while they hold shipments or counts, which 0002 cannot represent.
"""

import sqlalchemy as sa
from alembic import op

revision = "inventory_0003"
down_revision = "inventory_0002"
branch_labels = None
depends_on = None

_TABLES = ("inventory_shipments", "inventory_counts")


def upgrade() -> None:
    op.create_table(
        "inventory_shipments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shipment_id", sa.String(length=64), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("from_location", sa.String(length=64), nullable=False),
        sa.Column("to_location", sa.String(length=64), nullable=False),
        sa.Column("retailer", sa.String(length=64), nullable=True),
        sa.Column("sku", sa.String(length=64), nullable=True),
        sa.Column("expected_arrival", sa.String(length=10), nullable=False),
        sa.Column("grace_days", sa.Integer(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("serials", sa.String(), nullable=True),
        sa.Column("serial_ranges", sa.String(), nullable=True),
        sa.Column("expected_count", sa.Integer(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("swept_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("shipment_id", "part", name="uq_inventory_shipment_part"),
    )
    op.create_index("ix_inventory_shipments_manufacturer", "inventory_shipments", ["manufacturer", "id"])
    op.create_index("ix_inventory_shipments_to_location", "inventory_shipments", ["to_location", "event_time"])
    op.create_index("ix_inventory_shipments_due", "inventory_shipments", ["swept_at", "deadline"])
    op.create_table(
        "inventory_shipment_units",
        sa.Column("shipment_id", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=True),
        sa.Column("on_time", sa.Boolean(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event_source", sa.String(length=256), nullable=True),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("shipment_id", "manufacturer", "serial"),
    )
    op.create_index("ix_inventory_shipment_units_unit", "inventory_shipment_units", ["manufacturer", "serial"])
    op.create_table(
        "inventory_counts",
        sa.Column("count_id", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parts_expected", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("count_id"),
    )
    op.create_index("ix_inventory_counts_counted_at", "inventory_counts", ["status", "counted_at"])
    op.create_table(
        "inventory_count_parts",
        sa.Column("count_id", sa.String(length=64), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("units", sa.String(), nullable=False),
        sa.Column("unit_count", sa.Integer(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("count_id", "part"),
    )
    op.create_table(
        "inventory_count_units",
        sa.Column("count_id", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("seen", sa.Boolean(), nullable=False),
        sa.Column("status_at_count", sa.String(length=16), nullable=True),
        sa.Column("location_at_count", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("count_id", "manufacturer", "serial"),
    )
    op.create_index("ix_inventory_count_units_unit", "inventory_count_units", ["manufacturer", "serial"])
    op.create_index("ix_inventory_history_event_time", "inventory_history", ["event_time"])


def downgrade() -> None:
    bind = op.get_bind()
    for table in _TABLES:
        rows = bind.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
        if rows:
            raise RuntimeError(f"{table} holds {rows} rows that inventory_0002 cannot represent; downgrading "
                               "would forget them")
    op.drop_index("ix_inventory_history_event_time", table_name="inventory_history")
    op.drop_index("ix_inventory_count_units_unit", table_name="inventory_count_units")
    op.drop_table("inventory_count_units")
    op.drop_table("inventory_count_parts")
    op.drop_index("ix_inventory_counts_counted_at", table_name="inventory_counts")
    op.drop_table("inventory_counts")
    op.drop_index("ix_inventory_shipment_units_unit", table_name="inventory_shipment_units")
    op.drop_table("inventory_shipment_units")
    op.drop_index("ix_inventory_shipments_due", table_name="inventory_shipments")
    op.drop_index("ix_inventory_shipments_to_location", table_name="inventory_shipments")
    op.drop_index("ix_inventory_shipments_manufacturer", table_name="inventory_shipments")
    op.drop_table("inventory_shipments")
