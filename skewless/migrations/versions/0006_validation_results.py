"""Validation results: each table's expectations, checked before a step, and what came of it.

One row per table (a feature view's, or a request source's events) per run of `skewless
validate` or of the check before `skewless materialize` and `skewless dataset`; the rows of one
run share ``run_id``. ``status`` is ``passed``, ``failed`` (the step stopped) or ``accepted``
(it failed and the step went on: ``actor`` and ``reason`` say who and why). The catalog's view
and feature pages show the latest; the volume rule compares with the latest that was not
``failed``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "validation_results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(36), nullable=False, index=True),
        sa.Column("step", sa.String(50), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("schema_ref", sa.String(400), nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=True),
        sa.Column("newest_event", WHEN, nullable=True),
        sa.Column("reference_time", WHEN, nullable=False),
        sa.Column("findings", sa.JSON, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("at", WHEN, nullable=False),
        sa.CheckConstraint("status IN ('passed', 'failed', 'accepted')",
                           name="ck_validation_results_status"),
        sa.CheckConstraint("status <> 'accepted' OR reason IS NOT NULL",
                           name="ck_validation_results_reason"),
    )
    # The catalog and the volume rule read the latest per table.
    op.create_index("ix_validation_results_target_at", "validation_results", ["target", "at"])


def downgrade() -> None:
    op.drop_index("ix_validation_results_target_at", table_name="validation_results")
    op.drop_table("validation_results")
