"""The app factory: ``create_app(settings)`` and the lifespan that resolves everything once."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.admin import AdminAuditMiddleware
from service.admin import router as admin_router
from service.auth import install_tokens
from service.catalog.catalog import Catalog
from service.catalog.routes import install_catalog
from service.health import router as health_router
from service.metrics import Metrics, MetricsMiddleware
from service.prediction_routes import build_router
from service.predictor import Predictor
from skewless.contract import resolve_service
from skewless.errors import SkewlessError
from skewless.expectations import request_limits
from skewless.feast_cli import open_store
from skewless.gate import Promoter
from skewless.registry import Registry
from skewless.requirements import require_servable
from skewless.settings import Settings, export_for_feast
from skewless.tokens import TokenStore

logger = logging.getLogger(__name__)


class BodyLimitMiddleware:
    """413 for a body over the limit, by Content-Length or, without one, as it streams in."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._too_large(send)
                    return
                await self.app(scope, receive, send)
                return
        # No Content-Length (chunked): read the body up to the limit before the app sees it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        body = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class RepeatedQueryMiddleware:
    """422 for a query parameter given more than once: every parameter here takes one value,
    and which of two would count is not for the server to guess."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if b"&" in query or b";" in query:
            seen: set[str] = set()
            for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if name in seen:
                    await _unprocessable(send, [{
                        "type": "repeated", "loc": ["query", name[:100]],
                        "msg": "given more than once; this parameter takes one value"}])
                    return
                seen.add(name)
        await self.app(scope, receive, send)


async def _unprocessable(send: Any, errors: list[dict[str, Any]]) -> None:
    body = json.dumps({"detail": errors}).encode()
    await send({"type": "http.response.start", "status": 422,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


MAX_REPORTED_ERRORS = 10  # a 422 names at most this many problems


def install_error_handlers(app: FastAPI) -> None:
    """Known errors answer with their own status and detail; anything else is a generic 500.

    A 422 lists the first :data:`MAX_REPORTED_ERRORS` problems (type, field, message) and how
    many there were, never the values sent: a large malformed body gets a small answer.
    """

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        shown = [{key: error[key] for key in ("type", "loc", "msg") if key in error}
                 for error in errors[:MAX_REPORTED_ERRORS]]
        body: dict[str, Any] = {"detail": jsonable_encoder(shown)}
        if len(errors) > len(shown):
            body["error_count"] = len(errors)
        return JSONResponse(body, 422)

    @app.exception_handler(SkewlessError)
    async def known_error(request: Request, exc: SkewlessError) -> JSONResponse:
        if exc.status_code is None:  # not meant for the caller: the log has the details
            return await internal_error(request, exc)
        return JSONResponse({"detail": exc.detail()}, exc.status_code, headers=exc.headers())

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server log has the details"}, 500)


def create_app(settings: Settings, promote: Promoter | None = None) -> FastAPI:
    """Build the predictor app for ``settings``.

    The feature service is resolved here, because the request models (and so the OpenAPI
    schema) are derived from it; the lifespan loads the model, checks its contract, opens
    the Redis client and starts the served-feature log writer. ``promote`` is the acceptance
    gate ``POST /admin/…/promote`` goes through (the CLI hands in the training side's);
    without one that route answers 503.
    """
    problems = settings.serving_problems()
    if problems:
        raise SkewlessError("refusing to start: " + "; ".join(problems))
    export_for_feast(settings.redis, settings)
    store = open_store(settings)
    spec = resolve_service(store, settings.feature_service)
    require_servable(store.config, spec)  # before anything is opened: the doctor's words
    metrics = Metrics(skew_report=settings.skew_report_path,
                      monitor_report=settings.monitor_report_path,
                      rollout_report=settings.rollout_report_path)
    # The registry's schema must be migrated already (`skewless db upgrade`): migrations are
    # an explicit step, never run by the service.
    registry = Registry.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        predictor = Predictor.load(settings, store, spec, metrics, registry)
        app.state.predictor = predictor
        predictor.logbook.start()  # with spool durability, replays what a killed process left
        metrics.log_replayed.inc(predictor.logbook.rows_replayed)
        predictor.start()  # the shadow's scorer
        follower = asyncio.create_task(predictor.follow_registry(), name="registry follower")
        problem = await predictor.check_redis()
        if problem:
            logger.warning("starting without the online store: %s", problem)
        # Everything loaded so far lives as long as the process: move it out of the
        # collector's reach, so gen-2 collections do not rescan it under load.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            follower.cancel()
            await predictor.stop()  # rows waiting for a shadow score are logged first
            await predictor.logbook.close()
            await predictor.redis.aclose()
            predictor.close()
            registry.close()
            gc.unfreeze()

    app = FastAPI(
        title="Skewless predictor",
        description=f"Scores with the model trained on feature service "
        f"`{spec.feature_service}`, from the same Feast definitions.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.spec = spec
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.promote = promote
    app.include_router(build_router(spec, settings, request_limits(
        settings.repo_path.absolute(),
        [source for definition in spec.on_demand.values()
         for source in definition.view.source_request_sources.values()],
        [f.name for f in spec.request_fields])))
    app.include_router(health_router)
    app.include_router(admin_router)
    install_tokens(app, TokenStore(registry.url, registry.engine), settings.token_refresh_seconds)
    install_catalog(app, Catalog.open(settings, registry), auth=settings.catalog_auth)
    install_error_handlers(app)
    app.add_middleware(RepeatedQueryMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AdminAuditMiddleware, registry=registry, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def create_catalog_app(settings: Settings) -> FastAPI:
    """The feature catalog alone (`skewless catalog serve`): for a repo with no model yet.

    Lineage reads the metadata database when there is one; without it the pages say so.
    """
    export_for_feast(settings.redis, settings)
    registry = Registry.from_settings(settings, check=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # As in create_app: Feast's and the snapshot's long-lived objects out of the
        # collector's reach, or each full collection pauses a page for ~200 ms.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            registry.close()
            gc.unfreeze()

    app = FastAPI(title="Skewless feature catalog", lifespan=lifespan)
    app.state.settings = settings
    install_tokens(app, TokenStore(registry.url, registry.engine), settings.token_refresh_seconds)
    install_catalog(app, Catalog.open(settings, registry), auth=settings.catalog_auth)
    install_error_handlers(app)
    app.add_middleware(RepeatedQueryMiddleware)
    return app


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int | None = None,
                    timeout: float = 60.0, read_timeout: float | None = None) -> Iterator[str]:
    """Run ``app`` on uvicorn in a background thread (lifespan included); yield its base URL.

    Leaving the block shuts it down as SIGTERM would: requests drained, the log flushed.
    ``read_timeout`` defaults to ``SKEWLESS_REQUEST_READ_TIMEOUT_SECONDS``'s default.
    """
    import uvicorn

    from service.http_server import server_config
    from skewless.embedded_redis import free_port

    if read_timeout is None:
        read_timeout = Settings.model_fields["request_read_timeout_seconds"].default
    port = port or free_port()
    server = uvicorn.Server(server_config(app, host=host, port=port, read_timeout=read_timeout,
                                          log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the predictor did not start; see the log above")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
