"""warranty 0001, the baseline: the warranty service's tables as release 0.1.0 made them.

A database made by 0.1.0 has these tables and no version table: it is stamped here, not migrated.
"""

import sqlalchemy as sa
from alembic import op

revision = "warranty_0001"
down_revision = None
branch_labels = ("warranty",)
depends_on = None

TABLES = (
    "warranty_claims",
    "warranty_decisions",
    "warranty_facts",
    "warranty_policies",
    "warranty_ranges",
    "warranty_recall_events",
    "warranty_recall_notices",
    "warranty_returns",
)


def upgrade() -> None:
    op.create_table(
        "warranty_claims",
        sa.Column("claim_id", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("issue", sa.String(), nullable=False),
        sa.Column("issue_key", sa.String(), nullable=False),
        sa.Column("location", sa.String(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("reasons", sa.String(), nullable=False),
        sa.Column("facts", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.String(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("claim_id"),
    )
    op.create_index("ix_warranty_claims_customer", "warranty_claims", ["customer_id", "submitted_at"], unique=False)
    op.create_index("ix_warranty_claims_location", "warranty_claims", ["location", "submitted_at"], unique=False)
    op.create_index("ix_warranty_claims_status", "warranty_claims", ["status", "manufacturer"], unique=False)
    op.create_index("ix_warranty_claims_unit", "warranty_claims", ["manufacturer", "serial"], unique=False)
    op.create_table(
        "warranty_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.String(), nullable=False),
        sa.Column("facts", sa.String(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("supersedes", sa.String(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "reference", "version", name="uq_warranty_decisions_version"),
    )
    op.create_table(
        "warranty_facts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("sku", sa.String(), nullable=True),
        sa.Column("location", sa.String(), nullable=True),
        sa.Column("receipt_id", sa.String(), nullable=True),
        sa.Column("customer_id", sa.String(), nullable=True),
        sa.Column("agency", sa.String(), nullable=True),
        sa.Column("case_number", sa.String(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("manufacturer", "serial", "event_source", "event_id", name="uq_warranty_facts_event"),
    )
    op.create_index("ix_warranty_facts_receipt", "warranty_facts", ["receipt_id"], unique=False)
    op.create_index("ix_warranty_facts_sku", "warranty_facts", ["manufacturer", "event_type", "sku"], unique=False)
    op.create_index("ix_warranty_facts_unit", "warranty_facts", ["manufacturer", "serial"], unique=False)
    op.create_table(
        "warranty_policies",
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(), nullable=True),
        sa.Column("coverage_days", sa.Integer(), nullable=False),
        sa.Column("return_window_days", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_source", "event_id"),
    )
    op.create_index(op.f("ix_warranty_policies_manufacturer"), "warranty_policies", ["manufacturer"], unique=False)
    op.create_table(
        "warranty_ranges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=64), nullable=False),
        sa.Column("first", sa.BigInteger(), nullable=False),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("sku", sa.String(), nullable=True),
        sa.Column("location", sa.String(), nullable=True),
        sa.Column("agency", sa.String(), nullable=True),
        sa.Column("case_number", sa.String(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_source", "event_id", name="uq_warranty_ranges_event"),
    )
    op.create_index("ix_warranty_ranges_prefix", "warranty_ranges", ["manufacturer", "prefix"], unique=False)
    op.create_table(
        "warranty_recall_events",
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("recall_id", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("event_source", "event_id"),
    )
    op.create_index(
        op.f("ix_warranty_recall_events_manufacturer"), "warranty_recall_events", ["manufacturer"], unique=False
    )
    op.create_index(op.f("ix_warranty_recall_events_recall_id"), "warranty_recall_events", ["recall_id"], unique=False)
    op.create_table(
        "warranty_recall_notices",
        sa.Column("recall_id", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=True),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("recall_id", "manufacturer", "serial"),
    )
    op.create_table(
        "warranty_returns",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("receipt_id", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=True),
        sa.Column("terminal_id", sa.String(), nullable=True),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("reasons", sa.String(), nullable=False),
        sa.Column("facts", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.String(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index("ix_warranty_returns_unit", "warranty_returns", ["manufacturer", "serial"], unique=False)


def downgrade() -> None:
    op.drop_table("warranty_returns")
    op.drop_table("warranty_recall_notices")
    op.drop_table("warranty_recall_events")
    op.drop_table("warranty_ranges")
    op.drop_table("warranty_policies")
    op.drop_table("warranty_facts")
    op.drop_table("warranty_decisions")
    op.drop_table("warranty_claims")
