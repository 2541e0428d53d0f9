"""The worker's job runs: one row per (job, scheduled slot), whichever worker ran it.

``job_runs``: the job, the slot (its scheduled time), the trigger (``schedule`` or
``manual``), the worker, when it started and ended, the deadline after which a row still
``running`` is taken as abandoned, the outcome, the attempts, the error, what it produced
(JSON) and its log. Unique (job, slot): a slot runs at most once across all workers.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = sa.DateTime(timezone=True)
OUTCOMES = ("running", "succeeded", "failed", "timed_out", "interrupted", "skipped",
            "abandoned")


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job", sa.String(50), nullable=False),
        sa.Column("slot", WHEN, nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("deadline_at", WHEN, nullable=False),
        sa.Column("ended_at", WHEN, nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("produced", sa.JSON, nullable=True),
        sa.Column("log_path", sa.String(500), nullable=True),
        sa.UniqueConstraint("job", "slot", name="uq_job_runs_job_slot"),
        sa.CheckConstraint(f"outcome IN {OUTCOMES}", name="ck_job_runs_outcome"),
    )
    op.create_index("ix_job_runs_job_started", "job_runs", ["job", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_job_runs_job_started", table_name="job_runs")
    op.drop_table("job_runs")
