"""inventory 0006: every scope a recall has had, kept, and the holds inventory reported (issue 16).

``inventory_recall_versions``: one row per ``recall.issued`` and ``recall.amended``, with its event
time and scope. A unit's recall facts are worked out from all of a recall's scopes
(services/inventory/domain.py, ``recall_coverage``), so the result no longer depends on the order
the issue and its amendments arrived in, or on which process applied them: before, an amendment
that arrived before its issue (or between two steps of the issue's broadcast) left units of the
issue's wider scope held, or never held, depending on arrival order.

Each stored recall becomes one version: its current scope, dated and named as the recall's row
records it (its issue, or the amendment that arrived first). The scopes an amendment replaced
before this migration were not stored, so they are not known: those units keep the facts they have.
``inventory_holds``: per (recall, unit), the hold inventory last reported (when and where the recall
first held the unit by its whole history, or none) and a revision, so that a refold that no longer
holds a unit takes the hold back (``unit.quarantine.withdrawn``) and the recalls service keeps the
latest word whatever order the reports arrive in. It starts empty: a unit's next refold reports its
holds with revision 1, which replaces what earlier versions reported.

Downgrade drops both tables; ``inventory_recalls`` still holds each recall's latest scope.
"""

import sqlalchemy as sa
from alembic import op

revision = "inventory_0006"
down_revision = "inventory_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inventory_recall_versions",
        sa.Column("recall_id", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("recall_id", "event_source", "event_id"),
    )
    op.create_index("ix_inventory_recall_versions_manufacturer", "inventory_recall_versions", ["manufacturer"],
                    unique=False)
    op.create_table(
        "inventory_holds",
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("recall_id", sa.String(length=64), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("location", sa.String(length=64), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("manufacturer", "serial", "recall_id"),
    )
    # The recall's first event is the one its row names; an amendment that came first is typed so
    # by its fact in the units' histories.
    op.execute(sa.text(
        "INSERT INTO inventory_recall_versions (recall_id, event_source, event_id, manufacturer, event_type, "
        "event_time, scope, recorded_at) "
        "SELECT r.recall_id, r.event_source, r.event_id, r.manufacturer, "
        "COALESCE((SELECT h.event_type FROM inventory_history h WHERE h.event_source = r.event_source "
        "AND h.event_id = r.event_id AND h.recall_id = r.recall_id LIMIT 1), 'recall.issued'), "
        "r.scope_time, r.scope, CURRENT_TIMESTAMP FROM inventory_recalls r"))


def downgrade() -> None:
    op.drop_table("inventory_holds")
    op.drop_index("ix_inventory_recall_versions_manufacturer", table_name="inventory_recall_versions")
    op.drop_table("inventory_recall_versions")
