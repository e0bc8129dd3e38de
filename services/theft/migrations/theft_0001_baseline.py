"""theft 0001, the baseline: the theft service's tables as release 0.1.0 made them.

A database made by 0.1.0 has these tables and no version table: it is stamped here, not migrated.
"""

import sqlalchemy as sa
from alembic import op

revision = "theft_0001"
down_revision = None
branch_labels = ("theft",)
depends_on = None

TABLES = ("theft_alerts", "theft_registry", "theft_registry_ranges", "theft_sightings")


def upgrade() -> None:
    op.create_table(
        "theft_alerts",
        sa.Column("alert_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("agency", sa.String(length=64), nullable=False),
        sa.Column("case_number", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=True),
        sa.Column("terminal_id", sa.String(length=64), nullable=True),
        sa.Column("sightings", sa.String(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("alert_id"),
    )
    op.create_index("ix_theft_alerts_agency_seen", "theft_alerts", ["agency", "seen_at"], unique=False)
    op.create_index("ix_theft_alerts_seen", "theft_alerts", ["seen_at"], unique=False)
    op.create_index("ix_theft_alerts_unit", "theft_alerts", ["manufacturer", "serial"], unique=False)
    op.create_table(
        "theft_registry",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("agency", sa.String(length=64), nullable=False),
        sa.Column("case_number", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("contact", sa.String(length=200), nullable=True),
        sa.Column("location", sa.String(length=64), nullable=True),
        sa.Column("disposition", sa.String(length=16), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_theft_registry_origin_time", "theft_registry", ["origin", "event_time"], unique=False)
    op.create_index("ix_theft_registry_unit", "theft_registry", ["manufacturer", "serial"], unique=False)
    op.create_index(
        "uq_theft_registry_event", "theft_registry", ["event_source", "event_id", "manufacturer", "serial"], unique=True
    )
    op.create_table(
        "theft_registry_ranges",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("agency", sa.String(length=64), nullable=False),
        sa.Column("case_number", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("contact", sa.String(length=200), nullable=True),
        sa.Column("location", sa.String(length=64), nullable=True),
        sa.Column("disposition", sa.String(length=16), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("range_prefix", sa.String(length=64), nullable=False),
        sa.Column("range_first", sa.BigInteger(), nullable=False),
        sa.Column("range_last", sa.BigInteger(), nullable=False),
        sa.Column("range_width", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_theft_registry_range_prefix", "theft_registry_ranges", ["manufacturer", "range_prefix"], unique=False
    )
    op.create_index(
        "uq_theft_registry_range_event",
        "theft_registry_ranges",
        ["event_source", "event_id", "manufacturer", "range_prefix", "range_first"],
        unique=True,
    )
    op.create_table(
        "theft_sightings",
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=True),
        sa.Column("terminal_id", sa.String(length=64), nullable=True),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("manufacturer", "serial", "event_source", "event_id"),
    )


def downgrade() -> None:
    op.drop_table("theft_sightings")
    op.drop_table("theft_registry_ranges")
    op.drop_table("theft_registry")
    op.drop_table("theft_alerts")
