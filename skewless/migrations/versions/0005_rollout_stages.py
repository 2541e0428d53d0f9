"""Model versions: rollout stages, a canary's share of traffic, one challenger per model name.

A version may now be ``shadow`` (scored beside production, its scores never returned) or
``canary`` (answering ``traffic_percent`` per cent of requests); together they are the
challenger, and a partial unique index lets the database hold at most one per model name, as
``uq_model_versions_one_production`` does for production. ``traffic_percent`` is set exactly
on a canary, above 0 and at most 50: a canary answering more than half of the traffic is no
longer the one being tried out (promote it instead); a check constraint holds both.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAGES = "stage IN ('candidate', 'production', 'archived', 'shadow', 'canary')"
STAGES_BEFORE = "stage IN ('candidate', 'production', 'archived')"
# IS NOT NULL: a comparison with NULL is unknown, which a check constraint lets through.
TRAFFIC = ("(stage = 'canary' AND traffic_percent IS NOT NULL AND traffic_percent > 0 "
           "AND traffic_percent <= 50) OR (stage <> 'canary' AND traffic_percent IS NULL)")
CHALLENGER_ONLY = sa.text("stage IN ('shadow', 'canary')")


def upgrade() -> None:
    # Batch mode: SQLite changes a check constraint by copying the table (and its indexes).
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("traffic_percent", sa.Float, nullable=True))
        batch.drop_constraint("ck_model_versions_stage", type_="check")
        batch.create_check_constraint("ck_model_versions_stage", STAGES)
        batch.create_check_constraint("ck_model_versions_traffic_percent", TRAFFIC)
    # At most one challenger (shadow or canary) per model name: the database enforces it.
    op.create_index("uq_model_versions_one_challenger", "model_versions", ["name"],
                    unique=True, sqlite_where=CHALLENGER_ONLY, postgresql_where=CHALLENGER_ONLY)


def downgrade() -> None:
    # A challenger goes back to being a candidate: the older schema has no stage for it.
    op.execute("UPDATE model_versions SET stage = 'candidate', traffic_percent = NULL "
               "WHERE stage IN ('shadow', 'canary')")
    op.drop_index("uq_model_versions_one_challenger", table_name="model_versions")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint("ck_model_versions_traffic_percent", type_="check")
        batch.drop_constraint("ck_model_versions_stage", type_="check")
        batch.create_check_constraint("ck_model_versions_stage", STAGES_BEFORE)
        batch.drop_column("traffic_percent")
