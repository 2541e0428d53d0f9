"""/admin: the registry's actions over HTTP, behind named tokens with roles, every call audited.

Each route needs a role (service/auth.py): viewer reads, operator also reloads and runs
shadows and canaries, approver also promotes, rolls back and archives. 401 without a token,
403 with one that is not accepted or whose role falls short. The audit names the token; with
the shared ``SKEWLESS_ADMIN_TOKEN`` (an approver) the caller may name themselves in
``X-Skewless-Actor`` (recorded as ``<name> (admin token)``). Every call — accepted, refused
or unauthenticated — is written to the audit table with its status, by a small middleware
that sees the final status code. A promotion or rollback makes the predictor reload at once
instead of at its next registry poll. Shadow, canary and the end of a rollout reach the
predictor at its next poll (``SKEWLESS_REGISTRY_POLL_SECONDS``). Registry errors carry their own
status (404 unknown, 409 refused or raced, 400 otherwise, 503 when the metadata database
cannot be reached); the app answers them, no route maps them. While the database is down a
call cannot be audited either: it is logged instead and counted in
``skewless_admin_unaudited_total``.
"""

import asyncio
import logging
import time
from datetime import datetime
from typing import Annotated, Any, Self

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from service.auth import Caller, require
from service.metrics import Metrics, StatusRecorder
from skewless.db import DatabaseUnavailable
from skewless.errors import Unavailable
from skewless.gate import Promoter
from skewless.registry import MAX_CANARY_PERCENT, Registry, RolloutStatus
from skewless.tokens import Role

logger = logging.getLogger(__name__)
async def _actor(caller: Caller) -> str:
    return caller.actor


# The least role each route needs (service/auth.py): what the audit records is the caller's
# token's name.
Viewer = Annotated[Caller, Depends(require(Role.VIEWER))]
Operator = Annotated[Caller, Depends(require(Role.OPERATOR))]
Approver = Annotated[Caller, Depends(require(Role.APPROVER))]


def registry_of(request: Request) -> Registry:
    return request.app.state.registry  # type: ignore[no-any-return]


RegistryDep = Annotated[Registry, Depends(registry_of)]


class Reason(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="Why; kept in the audit.")


class PromoteRequest(BaseModel):
    reason: str | None = Field(None, max_length=2000, description="Why; required with force.")
    force: bool = Field(False, description="Skip the acceptance gate (audited).")


class CanaryRequest(BaseModel):
    percent: float = Field(gt=0, le=MAX_CANARY_PERCENT, allow_inf_nan=False,
                           description="Share of requests the canary answers, in per cent.")
    reason: str = Field(min_length=1, max_length=2000, description="Why; kept in the audit.")


class RolloutResponse(BaseModel):
    """Where the rollout of one model name stands."""

    name: str
    production: str | None = Field(description="The production version, if any.")
    challenger: str | None = Field(description="The version in shadow or canary, if any.")
    stage: str | None = Field(description="The challenger's stage: shadow or canary.")
    traffic_percent: float | None = Field(description="A canary's share of requests.")
    since: datetime | None = Field(description="When the challenger reached its stage and "
                                               "share.")
    by: str | None
    reason: str | None
    started_at: datetime | None = Field(description="When the challenger left candidate.")
    started_by: str | None

    @classmethod
    def of(cls, status: RolloutStatus) -> Self:
        return cls.model_validate(status, from_attributes=True)


class RolloutChange(BaseModel):
    """The version a rollout call moved, its stage now, and the rollout after the call."""

    version: str
    stage: str
    rollout: RolloutResponse


async def _rollout_change(registry: Registry, name: str, version: str,
                          stage: str) -> RolloutChange:
    status = await asyncio.to_thread(registry.rollout, name)
    return RolloutChange(version=version, stage=stage, rollout=RolloutResponse.of(status))


async def _serving(request: Request) -> str | None:
    """Tell the predictor the registry changed; returns the version it now serves."""
    predictor = getattr(request.app.state, "predictor", None)
    return await predictor.refresh() if predictor is not None else None


router = APIRouter(prefix="/admin", tags=["admin"],
                   responses={400: {"description": "Body that cannot be read as JSON text"},
                              401: {"description": "No bearer token"},
                              403: {"description": "Wrong bearer token"},
                              503: {"description": "Metadata database unavailable (retry "
                                                   "after Retry-After seconds)"}})


@router.get("/models")
async def read_models(caller: Viewer, registry: RegistryDep,
                      name: Annotated[str | None, Query()] = None) -> list[dict[str, Any]]:
    """Every registered version (or those of one model name), with its stage."""
    rows = await asyncio.to_thread(registry.versions, name)
    return [row.summary() for row in rows]


@router.get("/models/{name}/versions/{version}", responses={404: {"description": "Unknown"}})
async def read_model_version(name: str, version: str, caller: Viewer,
                             registry: RegistryDep) -> dict[str, Any]:
    """One version in full: contract, metrics, training window and stage history."""
    row = await asyncio.to_thread(registry.get, name, version)
    return row.details()


@router.post("/models/{name}/versions/{version}/promote",
             responses={404: {"description": "Unknown version"},
                        409: {"description": "Refused by the gate, or production changed"}})
async def promote_model_version(name: str, version: str, body: PromoteRequest, caller: Approver,
                                request: Request, registry: RegistryDep) -> dict[str, Any]:
    """Promote through the acceptance gate (or past it with force and a reason)."""
    promote: Promoter | None = request.app.state.promote
    request.state.audit_detail = body.model_dump()
    if promote is None:
        raise Unavailable("this process has no acceptance gate to promote through; use "
                          "`skewless models promote` or the service `skewless serve` starts")
    row, decision = await asyncio.to_thread(
        promote, request.app.state.settings, registry, name, version, caller.actor, body.reason,
        body.force)
    return {"promoted": row.version, **(decision.evidence() if decision else {"gate": "skipped"}),
            "serving": await _serving(request)}


@router.post("/models/{name}/rollback",
             responses={400: {"description": "Nothing to roll back to"}})
async def rollback_model(name: str, body: Reason, caller: Approver, request: Request,
                         registry: RegistryDep) -> dict[str, Any]:
    """Return production to the version that was production before the current one."""
    request.state.audit_detail = body.model_dump()
    row = await asyncio.to_thread(registry.rollback, name, caller.actor, body.reason)
    return {"production": row.version, "serving": await _serving(request)}


@router.post("/models/{name}/versions/{version}/archive",
             responses={404: {"description": "Unknown version"},
                        409: {"description": "Production or already archived"}})
async def archive_model_version(name: str, version: str, body: Reason, caller: Approver,
                                request: Request, registry: RegistryDep) -> dict[str, Any]:
    """Archive a candidate."""
    request.state.audit_detail = body.model_dump()
    row = await asyncio.to_thread(registry.archive, name, version, caller.actor, body.reason)
    return {"archived": row.version}


CHALLENGE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown model or version"},
    409: {"description": "Another challenger, a version already production or archived, no "
                         "production to challenge, or an artefact the check refused"},
    422: {"description": "A field out of range or missing (named in detail)"}}


@router.post("/models/{name}/versions/{version}/shadow", responses=CHALLENGE_ERRORS)
async def create_shadow(name: str, version: str, body: Reason, caller: Operator, request: Request,
                        registry: RegistryDep) -> RolloutChange:
    """Make a candidate (or the canary) the shadow: scored beside production on the same
    vectors, never answering."""
    request.state.audit_detail = body.model_dump()
    row = await asyncio.to_thread(registry.shadow, name, version, caller.actor, body.reason)
    return await _rollout_change(registry, name, row.version, row.stage)


@router.post("/models/{name}/versions/{version}/canary", responses=CHALLENGE_ERRORS)
async def create_canary(name: str, version: str, body: CanaryRequest, caller: Operator,
                        request: Request, registry: RegistryDep) -> RolloutChange:
    """Make a candidate or the shadow the canary at ``percent`` per cent of requests, or change
    the canary's share: it answers the entities whose key hashes into its share."""
    request.state.audit_detail = body.model_dump()
    row = await asyncio.to_thread(registry.canary, name, version, body.percent, caller.actor,
                                  body.reason)
    return await _rollout_change(registry, name, row.version, row.stage)


@router.get("/models/{name}/rollout", responses={404: {"description": "Unknown model"}})
async def read_rollout(name: str, caller: Viewer, registry: RegistryDep) -> RolloutResponse:
    """Production, its challenger (shadow or canary, with its share), since when, by whom."""
    return RolloutResponse.of(await asyncio.to_thread(registry.rollout, name))


@router.post("/models/{name}/rollout/end",
             responses={404: {"description": "Unknown model"},
                        409: {"description": "No challenger: no rollout to end"},
                        422: {"description": "No reason given"}})
async def end_rollout(name: str, body: Reason, caller: Operator, request: Request,
                      registry: RegistryDep) -> RolloutChange:
    """Send the challenger back to candidate."""
    request.state.audit_detail = body.model_dump()
    row = await asyncio.to_thread(registry.end_rollout, name, caller.actor, body.reason)
    return await _rollout_change(registry, name, row.version, row.stage)


@router.post("/reload")
async def reload_model(caller: Operator, request: Request) -> dict[str, Any]:
    """Check the registry now and swap to its production version if it changed."""
    return {"serving": await _serving(request)}


@router.get("/audit")
async def read_audit(caller: Viewer, registry: RegistryDep,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    """The latest audit events, newest first."""
    return [e.to_json() for e in await asyncio.to_thread(registry.audit_events, limit)]


UNAUTHENTICATED = ("anonymous", "wrong token")
DENIED_WINDOW_SECONDS = 60.0


class AdminAuditMiddleware:
    """Writes one audit event per /admin call with its final status (pure ASGI).

    Calls without a valid token are counted (``skewless_admin_denied_total`` by status) and
    audited at most once a minute per actor and status, the event saying how many such calls
    came since the last one: anyone can make them, and they must not grow the table without
    limit. What is stored of each call is clipped (``Registry.audit``).
    """

    def __init__(self, app: Any, registry: Registry, metrics: Metrics | None = None) -> None:
        self.app = app
        self.registry = registry
        self.metrics = metrics
        self._denied: dict[tuple[str, int], tuple[float, int]] = {}  # last audited, unaudited

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/admin"):
            await self.app(scope, receive, send)
            return
        recorder = StatusRecorder(send)
        audited = False

        async def send_audited(message: dict[str, Any]) -> None:
            # The event is committed before the response's last part leaves: a client that
            # has its answer finds its call in the audit.
            nonlocal audited
            if (message["type"] == "http.response.body" and not message.get("more_body")
                    and not audited):
                audited = True
                await self._audit(scope, recorder.status)
            await recorder(message)

        try:
            await self.app(scope, receive, send_audited)
        finally:
            if not audited:  # no response was completed (an error, a dropped client)
                await self._audit(scope, recorder.status)

    def _unaudited_before(self, actor: str, status: int) -> int | None:
        """For a call without a valid token: None when it is only counted, else how many such
        calls went unaudited since the last event (this one is audited)."""
        if self.metrics is not None:
            self.metrics.admin_denied.labels(str(status)).inc()
        now = time.monotonic()
        last, unaudited = self._denied.get((actor, status), (-DENIED_WINDOW_SECONDS, 0))
        if now - last < DENIED_WINDOW_SECONDS:
            self._denied[(actor, status)] = (last, unaudited + 1)
            return None
        self._denied[(actor, status)] = (now, 0)
        return unaudited

    async def _audit(self, scope: dict[str, Any], status: int) -> None:
        state = scope.get("state", {})
        actor = state.get("audit_actor", "anonymous")
        detail = state.get("audit_detail")
        if actor in UNAUTHENTICATED:
            unaudited = self._unaudited_before(actor, status)
            if unaudited is None:
                return
            detail = {"unaudited_calls_before": unaudited} if unaudited else detail
        try:
            await asyncio.to_thread(
                self.registry.audit, actor, f"{scope['method']} {scope['path']}",
                scope["path"], str(status), detail)
        except DatabaseUnavailable as exc:  # the call itself is done (a 503, most likely)
            self._unaudited()
            logger.error("could not audit %s %s by %s (answered %s): %s", scope["method"],
                         scope["path"], actor, status, exc)
        except Exception:  # the call itself is done; say loudly that its audit is not
            self._unaudited()
            logger.exception("could not audit %s %s", scope["method"], scope["path"])

    def _unaudited(self) -> None:
        if self.metrics is not None:
            self.metrics.admin_unaudited.inc()
