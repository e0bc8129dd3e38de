"""recalls 0001, the baseline: the recalls service's tables as release 0.1.0 made them.

A database made by 0.1.0 has these tables and no version table: it is stamped here, not migrated.
"""

import sqlalchemy as sa
from alembic import op

revision = "recalls_0001"
down_revision = None
branch_labels = ("recalls",)
depends_on = None

TABLES = (
    "recalls_affected",
    "recalls_meta",
    "recalls_progress",
    "recalls_recalls",
    "recalls_sale_attempts",
    "recalls_units",
)


def upgrade() -> None:
    op.create_table(
        "recalls_affected",
        sa.Column("recall_id", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("in_scope", sa.Boolean(), nullable=True),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("quarantine_location", sa.String(length=64), nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("owner_unknown_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remedied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remedy", sa.String(length=16), nullable=True),
        sa.Column("remedy_location", sa.String(length=64), nullable=True),
        sa.Column("counted_as", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("recall_id", "manufacturer", "serial"),
    )
    op.create_index("ix_recalls_affected_unit", "recalls_affected", ["manufacturer", "serial"], unique=False)
    op.create_table(
        "recalls_meta",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "recalls_progress",
        sa.Column("recall_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("recall_id", "status"),
    )
    op.create_table(
        "recalls_recalls",
        sa.Column("recall_id", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("skus", sa.String(), nullable=False),
        sa.Column("serial_ranges", sa.String(), nullable=False),
        sa.Column("serials", sa.String(), nullable=False),
        sa.Column("scope_order", sa.String(length=450), nullable=False),
        sa.Column("scope_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amendments", sa.Integer(), nullable=False),
        sa.Column("hazard", sa.String(), nullable=True),
        sa.Column("remedy", sa.String(length=16), nullable=True),
        sa.Column("instructions", sa.String(), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("issued_source", sa.String(length=256), nullable=True),
        sa.Column("issued_id", sa.String(length=128), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_order", sa.String(length=450), nullable=True),
        sa.Column("close_reason", sa.String(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("recall_id"),
    )
    op.create_index(op.f("ix_recalls_recalls_manufacturer"), "recalls_recalls", ["manufacturer"], unique=False)
    op.create_table(
        "recalls_sale_attempts",
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("manufacturer", "serial", "event_source", "event_id"),
    )
    op.create_index("ix_recalls_sale_attempts_unit", "recalls_sale_attempts", ["manufacturer", "serial"], unique=False)
    op.create_table(
        "recalls_units",
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=True),
        sa.Column("stock", sa.String(length=16), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=True),
        sa.Column("stock_order", sa.String(length=450), nullable=False),
        sa.Column("stock_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("manufacturer", "serial"),
    )
    op.create_index("ix_recalls_units_sku", "recalls_units", ["manufacturer", "sku"], unique=False)


def downgrade() -> None:
    op.drop_table("recalls_units")
    op.drop_table("recalls_sale_attempts")
    op.drop_table("recalls_recalls")
    op.drop_table("recalls_progress")
    op.drop_table("recalls_meta")
    op.drop_table("recalls_affected")
