"""recalls 0002: every receipt, sale and return of a unit, for voids (issue 14, part 3).

``recalls_unit_facts`` (one row per unit and event) and ``recalls_receipt_ranges`` (one row per
receipt of more than 10,000 serials): ``recalls_units`` keeps only the latest fact of a unit; when a
void (``event.voided``) withdraws one, the unit is folded again from the others. New, empty tables:
facts applied before this revision are not in them (docs/recalls.md says what a void does then).
"""

import sqlalchemy as sa
from alembic import op

revision = "recalls_0002"
down_revision = "recalls_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recalls_unit_facts",
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=True),
        sa.Column("stock", sa.String(length=16), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=True),
        sa.Column("stock_order", sa.String(length=450), nullable=False),
        sa.Column("stock_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("manufacturer", "serial", "event_source", "event_id"),
    )
    op.create_index("ix_recalls_unit_facts_event_ref", "recalls_unit_facts", ["event_id", "event_source"])
    op.create_table(
        "recalls_receipt_ranges",
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("range_prefix", sa.String(length=64), nullable=False),
        sa.Column("range_first", sa.BigInteger(), nullable=False),
        sa.Column("range_last", sa.BigInteger(), nullable=False),
        sa.Column("range_width", sa.Integer(), nullable=True),
        sa.Column("sku", sa.String(length=64), nullable=True),
        sa.Column("stock", sa.String(length=16), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=True),
        sa.Column("stock_order", sa.String(length=450), nullable=False),
        sa.Column("stock_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_source", "event_id"),
    )
    op.create_index("ix_recalls_receipt_ranges_manufacturer", "recalls_receipt_ranges", ["manufacturer"])


def downgrade() -> None:
    op.drop_index("ix_recalls_receipt_ranges_manufacturer", table_name="recalls_receipt_ranges")
    op.drop_table("recalls_receipt_ranges")
    op.drop_index("ix_recalls_unit_facts_event_ref", table_name="recalls_unit_facts")
    op.drop_table("recalls_unit_facts")
