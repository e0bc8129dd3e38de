"""warranty 0002: who vouched for each fact, so a registration can be told from an ownership transfer.

``warranty_facts.signed_by`` / ``warranty_ranges.signed_by``: the kid of the key whose signature the
consumer verified (NULL: unsigned). ``warranty_facts.trusted_transfer``: the registration was signed
by a key the registry trusts for ownership transfers, so it may replace a unit's owner; any other
registration naming someone else than the owner is a pending ownership change (docs/warranty.md,
"Owners").

Every row is kept. Rows written before this were never signed (0.1.0 checked no signature), so they
get NULL and false: that is what they were. The owner rule now reads them as it reads any unsigned
registration: the first owner of a sold unit is its buyer, or, when the sale named no customer, the
first registration; a later registration naming another customer is a pending change.
"""

import sqlalchemy as sa
from alembic import op

revision = "warranty_0002"
down_revision = "warranty_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable or with a server default: ADD COLUMN in place (SQLite too), every row kept as it was.
    with op.batch_alter_table("warranty_facts") as batch:
        batch.add_column(sa.Column("signed_by", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("trusted_transfer", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("warranty_ranges") as batch:
        batch.add_column(sa.Column("signed_by", sa.String(length=128), nullable=True))


def downgrade() -> None:
    # Back to 0001: trusted transfers are forgotten; their rows stay, read as plain registrations.
    with op.batch_alter_table("warranty_ranges") as batch:
        batch.drop_column("signed_by")
    with op.batch_alter_table("warranty_facts") as batch:
        batch.drop_column("trusted_transfer")
        batch.drop_column("signed_by")
