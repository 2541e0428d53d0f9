"""Model versions: the fingerprint column holds a whole fingerprint.

A fingerprint is ``sha256:`` and 64 hex digits (71 characters); 0001 made the column 64
characters wide, so PostgreSQL refused to register a real model (SQLite does not enforce the
width, but its declared type changes too, so the schema is the same everywhere).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite cannot alter a column in place: batch mode copies the table (and its indexes).
    with op.batch_alter_table("model_versions") as batch:
        batch.alter_column("fingerprint", type_=sa.String(100), existing_type=sa.String(64),
                           existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.alter_column("fingerprint", type_=sa.String(64), existing_type=sa.String(100),
                           existing_nullable=False)
