"""Named, scoped API tokens: stored hashed, with a role, an expiry and a revocation.

``api_tokens``: one row per token, its name unique. Only the SHA-256 of the secret is stored
(a token is 256 random bits: a fast hash is enough, and a lookup must cost microseconds), and
the secret's first characters (``prefix``) so a leaked token can be recognised. ``role`` is
``viewer``, ``operator``, ``approver`` or ``client``; ``expires_at`` is required; a revoked
token keeps its row (``revoked_at``, ``revoked_by``) so the audit's names stay resolvable.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("revoked_at", WHEN, nullable=True),
        sa.Column("revoked_by", sa.String(200), nullable=True),
        sa.CheckConstraint("role IN ('viewer', 'operator', 'approver', 'client')",
                           name="ck_api_tokens_role"),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
