"""inventory 0001, the baseline: the inventory service's tables as release 0.1.0 made them.

A database made by 0.1.0 has these tables and no version table: it is stamped here, not migrated.
"""

import sqlalchemy as sa
from alembic import op

revision = "inventory_0001"
down_revision = None
branch_labels = ("inventory",)
depends_on = None

TABLES = ("inventory_anomalies", "inventory_history", "inventory_recalls", "inventory_units")


def upgrade() -> None:
    op.create_table(
        "inventory_anomalies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("manufacturer", "serial", "kind", "event_source", "event_id", name="uq_inventory_anomaly"),
    )
    op.create_index(op.f("ix_inventory_anomalies_kind"), "inventory_anomalies", ["kind"], unique=False)
    op.create_index(op.f("ix_inventory_anomalies_status"), "inventory_anomalies", ["status"], unique=False)
    op.create_index("ix_inventory_anomalies_unit", "inventory_anomalies", ["manufacturer", "serial"], unique=False)
    op.create_table(
        "inventory_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("location", sa.String(), nullable=True),
        sa.Column("from_location", sa.String(), nullable=True),
        sa.Column("sku", sa.String(), nullable=True),
        sa.Column("condition", sa.String(), nullable=True),
        sa.Column("disposition", sa.String(), nullable=True),
        sa.Column("receipt_id", sa.String(), nullable=True),
        sa.Column("customer_id", sa.String(), nullable=True),
        sa.Column("terminal_id", sa.String(), nullable=True),
        sa.Column("agency", sa.String(), nullable=True),
        sa.Column("case_number", sa.String(), nullable=True),
        sa.Column("recall_id", sa.String(), nullable=True),
        sa.Column("note", sa.String(), nullable=True),
        sa.Column("in_transit", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("manufacturer", "serial", "event_source", "event_id", name="uq_inventory_history_event"),
    )
    op.create_table(
        "inventory_recalls",
        sa.Column("recall_id", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("scope_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_source", sa.String(length=256), nullable=True),
        sa.Column("close_event_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("recall_id"),
    )
    op.create_index(op.f("ix_inventory_recalls_manufacturer"), "inventory_recalls", ["manufacturer"], unique=False)
    op.create_table(
        "inventory_units",
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=True),
        sa.Column("sku", sa.String(length=64), nullable=True),
        sa.Column("condition", sa.String(length=16), nullable=True),
        sa.Column("stolen", sa.Boolean(), nullable=False),
        sa.Column("theft_cases", sa.String(), nullable=False),
        sa.Column("recalls", sa.String(), nullable=False),
        sa.Column("recalls_seen", sa.String(), nullable=False),
        sa.Column("ever_received", sa.Boolean(), nullable=False),
        sa.Column("last_event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_event_source", sa.String(length=256), nullable=False),
        sa.Column("last_event_id", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("manufacturer", "serial"),
    )
    op.create_index("ix_inventory_units_location", "inventory_units", ["location"], unique=False)
    op.create_index("ix_inventory_units_sku", "inventory_units", ["sku"], unique=False)
    op.create_index("ix_inventory_units_status", "inventory_units", ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("inventory_units")
    op.drop_table("inventory_recalls")
    op.drop_table("inventory_history")
    op.drop_table("inventory_anomalies")
