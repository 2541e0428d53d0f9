"""Everything the hot path needs, resolved once at start-up, and the hot path itself.

Per request: one pipelined round trip to Redis, Feast's on-demand transformation, one
LightGBM call and an append to the log buffer. No registry access, no pandas.

The model follows the registry: the production version is loaded at start-up, and when it
changes (noticed by polling, or told by an admin call) the new version is loaded and
verified beside the old one — sha256 as registered, LightGBM text that parses, a contract
matching the current Feast definitions, a smoke prediction — and swapped in with one
assignment. Each request takes the model once, so it is scored by one version throughout;
the old model is freed after a grace period. A version that fails verification is refused
(log line and metric) and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from service.logbook import LogBook, LogBufferFull, LoggedRow, LogLayout
from service.metrics import Metrics
from service.online import PRESENT, STATUS_NAMES, FeatureRows, OnlinePlan
from service.scoring import Scorer
from skewless.artifact import ArtifactError, ModelArtifact, load_artifact
from skewless.contract import ServiceSpec, contract_differences, logging_destination
from skewless.errors import SkewlessError, Unavailable
from skewless.registry import Registry, load_registered
from skewless.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)
RETIRE_AFTER_SECONDS = 30.0  # a replaced model is freed once no request can still hold it


class ServiceUnavailable(Unavailable):
    """A dependency of the prediction path is missing; answered with 503 and its name."""


@dataclass
class Prediction:
    request_id: str
    score: float
    values: list[Any]
    statuses: list[int]
    contributions: dict[str, float] | None = None


@dataclass
class Timings:
    """Stage durations of one request, in milliseconds, for the Server-Timing header."""

    features: float = 0.0
    transform: float = 0.0
    model: float = 0.0
    log: float = 0.0

    def header(self) -> str:
        return (f"features;dur={self.features:.3f}, transform;dur={self.transform:.3f}, "
                f"model;dur={self.model:.3f}, log;dur={self.log:.3f}")


def redis_client(connection_string: str, timeout: float) -> aioredis.Redis:
    """An asyncio client for Feast's connection string that fails fast instead of retrying."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
    return aioredis.Redis(
        host=nodes[0]["host"], port=int(nodes[0]["port"]), **params,
        socket_timeout=timeout, socket_connect_timeout=timeout,
        # One immediate retry on a broken connection (a pooled socket Redis closed when it
        # restarted), none on a timeout: an outage answers within the timeout.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=0,
    )


@dataclass
class Predictor:
    """The serving state: built by the app's lifespan, read by every request."""

    settings: Settings
    spec: ServiceSpec
    plan: OnlinePlan
    redis: aioredis.Redis
    logbook: LogBook
    metrics: Metrics
    registry: Registry | None = None  # None: a pinned model (SKEWLESS_MODEL_PATH)
    scorer: Scorer | None = None
    model_problem: str | None = None
    _missing: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)
    _refused: set[str] = field(default_factory=set, repr=False)  # versions not to retry
    _swap_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @classmethod
    def load(cls, settings: Settings, store: FeatureStore, spec: ServiceSpec,
             metrics: Metrics, registry: Registry | None = None) -> Predictor:
        from feast.feature_logging import FeatureServiceLoggingSource

        if not settings.redis:
            raise SkewlessError("no online store configured: set SKEWLESS_REDIS (host:port)")
        service = store.get_feature_service(settings.feature_service)
        feast_schema = FeatureServiceLoggingSource(service, store.project).get_schema(
            store.registry)
        layout = LogLayout.from_feast(
            feast_schema, [k.name for k in spec.entity_keys],
            [r.name for r in spec.request_fields], spec.feature_names,
            event_id=settings.event_id_column,
        )
        logbook = LogBook(
            logging_destination(store, settings.feature_service, settings.feature_log_dir),
            layout,
            capacity=settings.feature_log_capacity, flush_rows=settings.feature_log_flush_rows,
            flush_seconds=settings.feature_log_flush_seconds,
            fallback_directory=settings.var_dir / "feature_logs_unwritten",
            on_written=metrics.log_written, on_error=metrics.log_failed,
        )
        metrics.track_depth(lambda: logbook.depth)
        metrics.log_capacity.set(settings.feature_log_capacity)
        predictor = cls(
            settings=settings, spec=spec, plan=OnlinePlan.from_store(store, spec),
            redis=redis_client(settings.redis, settings.redis_timeout_seconds),
            logbook=logbook, metrics=metrics,
            registry=None if settings.model_path else registry,
        )
        predictor.load_model()
        return predictor

    @property
    def model_name(self) -> str:
        return self.spec.feature_service

    def load_model(self) -> None:
        """Load the pinned model or the registry's production version, or say why not."""
        try:
            if self.registry is None:
                if self.settings.model_path is None:
                    raise ArtifactError("no model registry and no SKEWLESS_MODEL_PATH")
                scorer = self.verified_scorer(load_artifact(self.settings.model_path))
            else:
                row = self.registry.production(self.model_name)
                if row is None:
                    raise ArtifactError(
                        f"no production version of {self.model_name} in the registry "
                        f"(skewless models promote {self.model_name} VERSION)")
                scorer = self.verified_scorer(load_registered(row))
        except ArtifactError as exc:
            self.scorer, self.model_problem = None, str(exc)
            self.metrics.model_loads.labels("refused").inc()
            logger.error("refusing to serve: %s", exc)
            return
        self._install(scorer)

    def verified_scorer(self, artifact: ModelArtifact) -> Scorer:
        """A scorer for ``artifact`` if its contract matches and a smoke prediction works."""
        problems = contract_differences(artifact.contract, self.spec)
        if problems:
            raise ArtifactError(
                f"model {artifact.version} does not match feature service "
                f"{self.spec.feature_service}: " + "; ".join(problems))
        scorer = Scorer(artifact)  # checks its single-row path against Booster.predict
        smoke = scorer.predict(scorer.matrix([[None] * len(self.spec.features)]))
        if len(smoke) != 1 or not math.isfinite(float(smoke[0])) or not 0 <= smoke[0] <= 1:
            scorer.close()
            raise ArtifactError(f"model {artifact.version} scored an empty row as {smoke}")
        return scorer

    def _install(self, scorer: Scorer) -> Scorer | None:
        """Swap ``scorer`` in (one assignment); returns the one it replaced."""
        old, self.scorer, self.model_problem = self.scorer, scorer, None
        self.metrics.model_loads.labels("loaded").inc()
        self.metrics.model.info({"version": scorer.version,
                                 "feature_service": self.spec.feature_service,
                                 "fingerprint": self.spec.fingerprint})
        return old

    async def refresh(self) -> str | None:
        """Serve the registry's production version if it changed; returns what is served.

        Loading and verifying run in a thread beside the serving model; only the final
        assignment happens on the event loop.
        """
        if self.registry is None:
            return self.scorer.version if self.scorer else None
        async with self._swap_lock:
            current = self.scorer.version if self.scorer else None
            try:  # the version only (cheap); the full row when it changed
                version = await asyncio.to_thread(self.registry.production_version,
                                                  self.model_name)
                if version is None or version == current or version in self._refused:
                    return current
                row = await asyncio.to_thread(self.registry.get, self.model_name, version)
            except Exception as exc:  # the database is down: keep serving what we have
                self.metrics.registry_errors.inc()
                logger.warning("model registry unavailable: %s", exc)
                return current
            started = time.perf_counter()
            try:
                scorer = await asyncio.to_thread(
                    lambda: self.verified_scorer(load_registered(row)))
            except ArtifactError as exc:
                self._refused.add(row.version)
                self.metrics.model_loads.labels("refused").inc()
                logger.error("refusing production version %s of %s; still serving %s: %s",
                             row.version, self.model_name, current, exc)
                return current
            self.metrics.model_load_seconds.observe(time.perf_counter() - started)
            old = self._install(scorer)
            logger.warning("now serving %s %s (was %s), loaded and verified in %.0f ms",
                           self.model_name, row.version, current,
                           (time.perf_counter() - started) * 1e3)
            if old is not None:
                asyncio.get_running_loop().call_later(RETIRE_AFTER_SECONDS, old.close)
            return row.version

    async def follow_registry(self) -> None:
        """Poll the registry's production version until cancelled."""
        while True:
            await asyncio.sleep(self.settings.registry_poll_seconds)
            try:
                await self.refresh()
            except Exception:  # never let the follower die; the next poll tries again
                logger.exception("following the model registry failed")

    async def predict(self, rows: Sequence[dict[str, Any]], explain: bool = False,
                      ) -> tuple[list[Prediction], str, Timings]:
        """Score rows; returns the predictions, the model version and the stage timings."""
        scorer = self.scorer
        if scorer is None:
            raise ServiceUnavailable(f"model not loaded: {self.model_problem}")
        n = len(rows)
        try:
            self.logbook.reserve(n)
        except LogBufferFull as exc:
            self.metrics.log_refused.inc()
            raise ServiceUnavailable(str(exc)) from exc
        timings = Timings()
        t0 = time.perf_counter()
        now = time.time()
        replies = await self._read(rows)
        t1 = time.perf_counter()
        self.metrics.redis_latency.observe(t1 - t0)
        features = self.plan.decode(replies, n, now)
        self.plan.transform(features, rows, now)
        t2 = time.perf_counter()
        x = scorer.matrix(features.values)
        scores = [scorer.predict_one(x[0])] if n == 1 and not explain else scorer.predict(x)
        contributions = scorer.contributions(x) if explain else None
        t3 = time.perf_counter()
        predictions = self._log(rows, features, scores, now, scorer.version, contributions)
        t4 = time.perf_counter()
        timings.features, timings.transform = (t1 - t0) * 1e3, (t2 - t1) * 1e3
        timings.model, timings.log = (t3 - t2) * 1e3, (t4 - t3) * 1e3
        return predictions, scorer.version, timings

    async def _read(self, rows: Sequence[dict[str, Any]]) -> list[Any]:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, fields in self.plan.commands(rows):
                    pipe.hmget(key, fields)  # type: ignore[arg-type]  # bytes keys are fine
                return await pipe.execute()
        except (TimeoutError, RedisError, OSError) as exc:
            self.metrics.redis_errors.inc()
            raise ServiceUnavailable(f"online store unavailable: {exc}") from exc

    def _log(self, rows: Sequence[dict[str, Any]], features: FeatureRows, scores: Any,
             now: float, version: str, contributions: list[dict[str, float]] | None,
             ) -> list[Prediction]:
        layout = self.logbook.layout
        keys, requests, event_id = layout.key_columns, layout.request_columns, \
            layout.event_id_column
        keep = self.settings.feature_log_enabled
        served_us = round(now * 1e6)
        logged = []
        predictions = []
        for i, row in enumerate(rows):
            request_id = uuid.uuid4().hex
            score = float(scores[i])
            statuses = features.statuses[i]
            missing = {(self.plan.views[pos], status)
                       for pos, status in enumerate(statuses) if status != PRESENT}
            for view_status in missing:
                self._count_missing(view_status)
            if keep:
                ident = row.get(event_id) if event_id else None
                logged.append(LoggedRow(
                    request_id, served_us, version, score,
                    None if ident is None else str(ident), tuple(row[k] for k in keys),
                    tuple(row[r] for r in requests), tuple(features.values[i]),
                    tuple(statuses), tuple(features.timestamps[i]),
                ))
            predictions.append(Prediction(request_id, score, features.values[i], statuses,
                                          contributions[i] if contributions else None))
        if logged:
            self.logbook.append(logged)
        self.metrics.predictions.inc(len(rows))
        return predictions

    def _count_missing(self, view_status: tuple[str, int]) -> None:
        child = self._missing.get(view_status)
        if child is None:
            child = self.metrics.feature_status.labels(view_status[0],
                                                       STATUS_NAMES[view_status[1]])
            self._missing[view_status] = child
        child.inc()

    def feature_payload(self, prediction: Prediction) -> dict[str, dict[str, Any]]:
        return {
            name: {"value": value, "status": STATUS_NAMES[status]}
            for name, value, status in zip(self.spec.feature_names, prediction.values,
                                           prediction.statuses, strict=True)
        }

    async def check_redis(self) -> str | None:
        """None when Redis answers a PING in time, else what is wrong."""
        try:
            await self.redis.ping()  # type: ignore[misc]
        except (TimeoutError, RedisError, OSError) as exc:
            return f"online store unavailable: {exc}"
        return None
