"""Experiments and their runs; a model version names the run it was trained from.

``experiments``: one hyperparameter search each (data set and its sha256, windows, metric,
seed, search settings, git commit, library versions, best run, importances, the model version
registered from it). ``experiment_runs``: one trial each (parameters, metric per boosting
round, final metrics, state complete/pruned/failed, timing). ``model_versions`` gains
``experiment_run_id``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("feature_service", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("metric", sa.String(50), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("trials", sa.Integer, nullable=False),
        sa.Column("search", sa.JSON, nullable=False),
        sa.Column("dataset_uri", sa.Text, nullable=False),
        sa.Column("dataset_sha256", sa.String(64), nullable=False),
        sa.Column("dataset_rows", sa.Integer, nullable=False),
        sa.Column("windows", sa.JSON, nullable=False),
        sa.Column("git_commit", sa.String(100), nullable=True),
        sa.Column("libraries", sa.JSON, nullable=False),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("best_run_number", sa.Integer, nullable=True),
        sa.Column("importances", sa.JSON, nullable=True),
        sa.Column("model_version", sa.String(100), nullable=True),
        sa.Column("holdout", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.CheckConstraint("state IN ('running', 'complete', 'failed')",
                           name="ck_experiments_state"),
    )
    op.create_index("ix_experiments_feature_service", "experiments", ["feature_service"])
    op.create_table(
        "experiment_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("experiment_id", sa.Integer,
                  sa.ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("finished_at", WHEN, nullable=False),
        sa.Column("duration_seconds", sa.Float, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.UniqueConstraint("experiment_id", "number", name="uq_experiment_runs_number"),
        sa.CheckConstraint("state IN ('complete', 'pruned', 'failed')",
                           name="ck_experiment_runs_state"),
    )
    op.create_index("ix_experiment_runs_experiment_id", "experiment_runs", ["experiment_id"])
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("experiment_run_id", sa.Integer, nullable=True))
        batch.create_foreign_key("fk_model_versions_experiment_run", "experiment_runs",
                                 ["experiment_run_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint("fk_model_versions_experiment_run", type_="foreignkey")
        batch.drop_column("experiment_run_id")
    op.drop_index("ix_experiment_runs_experiment_id", "experiment_runs")
    op.drop_table("experiment_runs")
    op.drop_index("ix_experiments_feature_service", "experiments")
    op.drop_table("experiments")
