"""Who is calling: named tokens with a role (``skewless tokens``), checked per route.

Each protected route declares the least role it needs with :func:`require` — the admin API
(viewer, operator, approver), the catalog when ``SKEWLESS_CATALOG_AUTH=true`` (viewer), and
``/predict`` when ``SKEWLESS_PREDICT_AUTH=true`` (client). A bearer token is looked up by its
SHA-256 among the active tokens, which :class:`TokenBook` re-reads from the metadata database
at most every ``SKEWLESS_TOKEN_REFRESH_SECONDS``: a revoked token is refused within that time,
and a lookup costs a hash and a dictionary read. An expired token is refused at once. The
audit records the token's name. In development only, the shared ``SKEWLESS_ADMIN_TOKEN``
also works, as an approver (the caller may name themselves in ``X-Skewless-Actor``), never for
/predict; any other environment refuses it.

401 without a token, 403 with a token that is unknown, revoked or expired, or whose role does
not reach the route's; 503 naming the metadata database when the tokens were never read.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from skewless.db import DatabaseUnavailable
from skewless.tokens import Role, TokenStore, digest

logger = logging.getLogger(__name__)
bearer = HTTPBearer(auto_error=False, description="a named token (skewless tokens create) or, "
                    "for the admin API, SKEWLESS_ADMIN_TOKEN")
SHARED = "admin token"  # how the audit names a call made with SKEWLESS_ADMIN_TOKEN


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role
    shared: bool = False

    @property
    def actor(self) -> str:
        """What the audit records."""
        return self.name if self.shared else f"{self.name} ({self.role} token)"


class TokenBook:
    """The active named tokens, by the hash of their secret, re-read every ``refresh_seconds``."""

    def __init__(self, store: TokenStore, refresh_seconds: float) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._tokens: dict[str, tuple[str, Role, datetime]] = {}
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    async def find(self, secret: str) -> tuple[str, Role] | None:
        """The name and role of an active token with this secret (None: no such token)."""
        await self._fresh()
        found = self._tokens.get(digest(secret))
        if found is None or found[2] <= datetime.now(UTC):  # expired since the last read
            return None
        return found[0], found[1]

    async def _fresh(self) -> None:
        if self._loaded_at is not None and \
                time.monotonic() - self._loaded_at < self.refresh_seconds:
            return
        async with self._lock:
            if self._loaded_at is not None and \
                    time.monotonic() - self._loaded_at < self.refresh_seconds:
                return
            try:
                self._tokens = await asyncio.to_thread(self.store.active)
            except DatabaseUnavailable:
                if self._loaded_at is None:
                    raise  # never read: nothing to check a token against (503)
                # Keep the last read; try again at the next refresh. Revocations made during
                # the outage take effect once the database answers.
                logger.warning("API tokens not re-read (metadata database unavailable); "
                               "using those read %.0f s ago",
                               time.monotonic() - self._loaded_at)
            self._loaded_at = time.monotonic()


def require(role: Role) -> Callable[..., Awaitable[Caller]]:
    """A dependency admitting callers whose token's role reaches ``role``; it carries the
    role (``.role``), so the routes' roles can be listed."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        caller = await identify(request, credentials)
        if not caller.role.allows(role):
            raise HTTPException(403, f"token {caller.name} ({caller.role}) may not do this: "
                                     f"it needs {role}")
        return caller

    dependency.role = role  # type: ignore[attr-defined]
    return dependency


async def identify(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    """The caller a bearer token names; 401 without one, 403 when it is not accepted."""
    state = request.state
    if credentials is None:
        state.audit_actor = "anonymous"
        raise HTTPException(401, "token required (Authorization: Bearer …)",
                            headers={"WWW-Authenticate": "Bearer"})
    secret = credentials.credentials
    settings = request.app.state.settings
    shared = settings.admin_token.get_secret_value()
    if secrets.compare_digest(secret.encode(), shared.encode()):
        if settings.environment != "development":
            state.audit_actor = "wrong token"
            raise HTTPException(403, "the shared SKEWLESS_ADMIN_TOKEN works in development "
                                     "only: use a named token (skewless tokens create NAME "
                                     "--role ROLE)")
        name = request.headers.get("x-skewless-actor", "").strip()[:100]
        caller = Caller(f"{name} ({SHARED})" if name else SHARED, Role.APPROVER, shared=True)
    else:
        book: TokenBook | None = getattr(request.app.state, "tokens", None)
        found = await book.find(secret) if book is not None else None
        if found is None:
            state.audit_actor = "wrong token"
            raise HTTPException(403, "token not accepted (unknown, revoked or expired)")
        caller = Caller(found[0], found[1])
    state.audit_actor = caller.actor
    return caller


def install_tokens(app: Any, store: TokenStore, refresh_seconds: float) -> None:
    app.state.tokens = TokenBook(store, refresh_seconds)
