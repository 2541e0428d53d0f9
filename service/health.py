"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def read_health() -> dict[str, str]:
    """Alive: the process answers. Checks no dependency."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready; detail names what is missing"}})
async def read_readiness(request: Request) -> JSONResponse:
    """Ready: a model whose contract matches is loaded, Redis answers, the log has room."""
    predictor = getattr(request.app.state, "predictor", None)
    if predictor is None:
        return JSONResponse({"detail": "not ready: starting"}, 503)
    problems: list[str] = []
    checks: dict[str, Any] = {}
    if predictor.production.scorer is None:
        problems.append(f"model not loaded: {predictor.production.problem}")
    else:
        checks["model_version"] = predictor.production.scorer.version
        checks["decision_threshold"] = predictor.production.scorer.threshold
    challenger = predictor.challenger
    if challenger is not None and (challenger.route is not None or challenger.problem):
        route = challenger.route
        checks["challenger"] = {
            "version": route.version if route else None,
            "stage": route.stage if route else None,
            "traffic_percent": challenger.percent if route else None,
            "problem": None if route else challenger.problem}
    redis_problem = await predictor.check_redis()
    if redis_problem:
        problems.append(redis_problem)
    book = predictor.logbook
    checks["feature_log"] = {"buffered_rows": book.depth, "capacity": book.capacity,
                             "rows_written": book.rows_written,
                             "rows_dead_lettered": book.rows_dead_lettered,
                             "durability": "spool" if book.spool is not None else "buffer",
                             "rows_replayed": book.rows_replayed,
                             "last_error": book.last_error}
    if book.depth >= book.capacity:
        problems.append(f"feature log buffer full ({book.depth} rows not yet written)")
    if book.spool is not None and book.spool.last_error:
        problems.append(f"feature log spool unavailable: {book.spool.last_error}")
    waited = book.stalled()
    if waited is not None:
        problems.append(
            f"feature log writer stalled: {book.depth} rows waiting, none written for "
            f"{waited:.1f} s (flush interval {book.flush_seconds:g} s"
            + (f"; last error: {book.last_error}" if book.last_error else "") + ")")
    if problems:
        return JSONResponse({"detail": "not ready: " + "; ".join(problems), **checks}, 503)
    return JSONResponse({"status": "ready", **checks})


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
async def read_metrics(request: Request) -> Response:
    """Prometheus exposition of the app's registry."""
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
