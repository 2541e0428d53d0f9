"""Model versions: when a check process last parsed the version's artefact.

A new version is registered only after a child process has read its model file, hashed it
(the registered sha256), parsed it with LightGBM and scored it; ``artifact_checked_at`` says
when. Versions registered before have none (NULL), and no serving process parses them until
``skewless models check`` (or a promotion or rollback to them) has checked them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite alters a table by copying it (and its indexes); PostgreSQL in place.
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("artifact_checked_at", sa.DateTime(timezone=True),
                                   nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("artifact_checked_at")
