"""theft 0003: near-miss serials (issue 14, part 6).

- ``theft_registry_keys`` and ``theft_sighting_keys``: the near-miss index (services/theft/near.py),
  one row per (manufacturer, key, serial). Filled here from the rows already stored, in SQL (one
  INSERT ... SELECT per character position), so an existing registry and its past sales, returns
  and claims take part in possible matches from the first event after the upgrade. A new alert is
  raised only when an event touches a unit: the upgrade itself raises none.
- ``theft_alerts.near_matches``: a possible_match alert's similar stolen serials (JSON), nullable.

Downgrade drops the tables and the column; possible_match alerts stay as rows (an older build lists
them with their kind as stored).
"""

import sqlalchemy as sa
from alembic import op

revision = "theft_0003"
down_revision = "theft_0002"
branch_labels = None
depends_on = None

MIN_EDIT_LENGTH = 8  # services/theft/near.py, as of this revision
HOMOGLYPHS = (("O", "0"), ("I", "1"), ("L", "1"), ("S", "5"), ("B", "8"), ("Z", "2"))
FUZZY_SIGHTING_TYPES = ("unit.sold", "unit.returned", "warranty.claim.submitted", "return.requested")
KEY_TABLES = ("theft_registry_keys", "theft_sighting_keys")


def _normalized(column: str) -> str:
    expression = column
    for letter, digit in HOMOGLYPHS:
        expression = f"replace({expression}, '{letter}', '{digit}')"
    return expression


def backfill(bind, table: str, source: str, condition: str) -> None:
    """near.keys() of every serial of ``source`` rows matching ``condition``, in SQL."""
    normalized = f"SELECT DISTINCT manufacturer, serial, {_normalized('serial')} AS n FROM {source} WHERE {condition}"
    longest = bind.execute(sa.text(f"SELECT max(length(serial)) FROM {source} WHERE {condition}")).scalar() or 0
    selects = ["SELECT manufacturer, n AS key, serial FROM t"]
    selects += [f"SELECT manufacturer, substr(n, 1, {i}) || substr(n, {i + 2}), serial FROM t "
                f"WHERE length(n) >= {MIN_EDIT_LENGTH} AND length(n) > {i}" for i in range(longest)]
    # One statement, its rows in key order: the index is filled front to back, not at random places.
    bind.execute(sa.text(f"INSERT INTO {table} (manufacturer, key, serial) WITH t AS ({normalized}) "
                         f"SELECT * FROM ({' UNION ALL '.join(selects)}) AS k WHERE 1 = 1 ORDER BY 1, 2, 3 "
                         "ON CONFLICT DO NOTHING"))


def upgrade() -> None:
    for table in KEY_TABLES:
        op.create_table(
            table,
            sa.Column("manufacturer", sa.String(length=64), nullable=False),
            sa.Column("key", sa.String(length=64), nullable=False),
            sa.Column("serial", sa.String(length=64), nullable=False),
            sa.PrimaryKeyConstraint("manufacturer", "key", "serial"),
            sqlite_with_rowid=False,  # the primary key is the table: half the size, one B-tree to write
        )
    with op.batch_alter_table("theft_alerts") as batch:
        batch.add_column(sa.Column("near_matches", sa.String(), nullable=True))
    bind = op.get_bind()
    backfill(bind, "theft_registry_keys", "theft_registry", "kind = 'reported'")
    types = ", ".join(f"'{t}'" for t in FUZZY_SIGHTING_TYPES)
    backfill(bind, "theft_sighting_keys", "theft_sightings", f"event_type IN ({types})")


def downgrade() -> None:
    with op.batch_alter_table("theft_alerts") as batch:
        batch.drop_column("near_matches")
    for table in KEY_TABLES:
        op.drop_table(table)
