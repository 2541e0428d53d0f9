"""Named, scoped API tokens: who may do what to a running service, and the audit's names.

A token is created for a person or a system (``skewless tokens create NAME --role R``): its
secret is shown once and stored only as its SHA-256, with a role, an expiry and, when it is
revoked, who revoked it and when. Roles are cumulative for the admin API and the catalog —
``viewer`` (the catalog, read-only admin), ``operator`` (+ reload, shadow, canary, end a
rollout), ``approver`` (+ promote, rollback, archive, force) — while ``client`` is apart: it
may call ``/predict`` and nothing else. Table ``api_tokens`` (migration 0007).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Integer, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from skewless.db import Base, MetadataStore, utcnow
from skewless.errors import InvalidInput
from skewless.registry import Conflict, NotFound, Registry, clip
from skewless.settings import Settings

SECRET_PREFIX = "skw_"  # marks a Skewless token wherever it leaks (logs, a repo's history)
PREFIX_CHARS = 12  # of the secret, kept in clear to recognise it
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
MAX_DAYS = 3650


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    CLIENT = "client"

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may: the admin roles are cumulative; a
        client token only does what a client does, and no admin role does that."""
        if Role.CLIENT in (self, needed):
            return self is needed
        return ADMIN_ORDER.index(self) >= ADMIN_ORDER.index(needed)


ADMIN_ORDER = (Role.VIEWER, Role.OPERATOR, Role.APPROVER)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'operator', 'approver', 'client')",
                        name="ck_api_tokens_role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(200))

    def state(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= (now or utcnow()) else "active"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "prefix": self.prefix,
                "state": self.state(), "created_at": self.created_at.isoformat(),
                "created_by": self.created_by, "expires_at": self.expires_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "revoked_by": self.revoked_by}


class TokenStore(MetadataStore):
    """Creating, listing and revoking tokens; every change audited."""

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenStore:
        from skewless.registry import RegistryError

        return cls(settings.resolved_database_url).check_schema(RegistryError)

    def create(self, name: str, role: Role | str, days: int, actor: str) -> tuple[ApiToken, str]:
        """A new token: its row and its secret (shown once, never stored)."""
        if not NAME.match(name):
            raise InvalidInput(f"token name {name!r}: 1-100 letters, digits and ._@- , "
                               "starting with a letter or digit")
        try:
            role = Role(role)
        except ValueError:
            raise InvalidInput(f"role {role!r} is not one of "
                               f"{', '.join(r.value for r in Role)}") from None
        if not 1 <= days <= MAX_DAYS:
            raise InvalidInput(f"expiry of {days} days: from 1 to {MAX_DAYS}")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        row = ApiToken(name=name, role=role.value, token_sha256=digest(secret),
                       prefix=secret[:PREFIX_CHARS], created_at=now, created_by=clip(actor, 200),
                       expires_at=now + timedelta(days=days))
        try:
            with self.session() as session:
                session.add(row)
                session.add(Registry._event(actor, "create token", name, "created",
                                            {"role": role.value, "expires_at":
                                             row.expires_at.isoformat()}))
        except IntegrityError:
            raise Conflict(f"a token named {name} exists already (revoked ones keep their "
                           "name: choose another)") from None
        return row, secret

    def revoke(self, name: str, actor: str) -> ApiToken:
        with self.session() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.name == name)
                                 .with_for_update())
            if row is None:
                raise NotFound(f"no token named {name}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                row.revoked_by = clip(actor, 200)
                session.add(Registry._event(actor, "revoke token", name, "revoked",
                                            {"role": row.role}))
            return row

    def tokens(self) -> list[ApiToken]:
        with self.reading() as session:
            return list(session.scalars(select(ApiToken).order_by(ApiToken.name)))

    def active(self) -> dict[str, tuple[str, Role, datetime]]:
        """Every token neither revoked nor expired, by the hash of its secret: name, role and
        expiry (what a running service checks a bearer token against)."""
        now = utcnow()
        with self.reading() as session:
            rows = session.execute(select(
                ApiToken.token_sha256, ApiToken.name, ApiToken.role, ApiToken.expires_at)
                .where(ApiToken.revoked_at.is_(None), ApiToken.expires_at > now)).all()
        return {sha: (name, Role(role), expires) for sha, name, role, expires in rows}
