"""The request path: everything it needs, resolved once at start-up, and the path itself.

Per request: one pipelined round trip to Redis, Feast's on-demand transformation, one
LightGBM call and an append to the log buffer. No registry access, no pandas.

The model comes from a slot (``service/model_slot.py``), which owns loading, verifying,
swapping and following the registry; a request takes the slot's scorer once, so it is scored
by one version throughout, and its logged row and response name that version.

While a rollout is open, a second slot holds the challenger, scored on the very vector
production scored (no second feature read):

- a canary answers the rows whose entity (``SKEWLESS_CANARY_KEY``) hashes into its share
  (:func:`skewless.rollout.canary_bucket`), so an entity stays with one version; production
  scores those rows too, and answers them itself when the canary fails or scores non-finite;
- every other row is answered by production and scored by the challenger off the request
  path (``service/shadow.py``), within a budget, so a slow or failing challenger never fails
  or delays a request;
- every logged row carries the answering version and score, production's, and the
  challenger's with its outcome (``skewless/rollout.py``), so comparisons are paired.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from service.logbook import LogBook, LogBufferFull, LoggedRow, LogLayout
from service.metrics import Metrics
from service.model_slot import Challenger, ChallengerSlot, ModelSlot
from service.online import NULL_VALUE, PRESENT, STATUS_NAMES, FeatureRows, OnlinePlan
from service.scoring import Scorer
from service.shadow import ShadowJob, ShadowScorer
from service.spool import Spool, SpoolUnavailable
from skewless.artifact import ArtifactLimits
from skewless.contract import ServiceSpec, logging_destination
from skewless.errors import SkewlessError, Unavailable
from skewless.registry import Registry
from skewless.requirements import is_cluster, require_servable
from skewless.rollout import CANARY_ROLE, ERROR, NONFINITE, OVERLOADED, SCORED, canary_bucket
from skewless.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)


class NonFiniteScore(SkewlessError):
    """The model scored a row as NaN or infinite: answered 500, never returned, never logged."""

    status_code = 500


class ServiceUnavailable(Unavailable):
    """A dependency of the prediction path is missing; answered with 503 and its name."""


class PoolBusy(ServiceUnavailable):
    """Every model worker is taken and the queue is full: try again shortly."""

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class ModelPool:
    """Threads for the heavy model work of one request (explanations, large batches), so it
    never holds the event loop; at most ``workers`` run and ``queue`` wait, the rest are
    refused at once rather than queued without bound."""

    def __init__(self, workers: int, queue: int) -> None:
        self.limit = workers + queue
        self.in_flight = 0
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model")

    def admit(self) -> None:
        if self.in_flight >= self.limit:
            raise PoolBusy(f"model workers busy ({self.in_flight} heavy requests in flight); "
                           "retry shortly")
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Prediction:
    request_id: str
    score: float
    decision: bool  # score at or above the answering model's decision threshold
    values: list[Any]
    statuses: list[int]
    contributions: dict[str, float] | None = None
    model_version: str = ""  # the version that answered


@dataclass
class CanaryScores:
    """The canary's answers for the rows it was picked for: row → (score or None, outcome)."""

    route: Challenger
    answers: dict[int, tuple[float | None, str]]
    us: float | None  # model time per row, µs (None when the call raised)
    contributions: dict[int, dict[str, float]] | None = None


@dataclass
class Scored:
    """One request's vectors and scores: production's on every row, the canary's on its own."""

    features: FeatureRows
    x: np.ndarray  # the rows as production encoded them
    scores: Any  # production's, one per row
    contributions: list[dict[str, float]] | None
    transform_ms: float
    model_ms: float
    production_us: float  # production's model time per row
    canary: CanaryScores | None = None


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


def _nonfinite(scores: Any) -> int:
    """How many scores are NaN or infinite (one row without numpy's overhead)."""
    if len(scores) == 1:
        return 0 if math.isfinite(scores[0]) else 1
    return int(len(scores) - np.isfinite(scores).sum())


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any] | None) -> None:
    if target is None or target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(None)


def canary_key(settings: Settings, spec: ServiceSpec) -> str | None:
    """The field a canary's share is hashed on: ``SKEWLESS_CANARY_KEY`` (an entity key or a
    request field of the service), else the service's first entity key."""
    names = [k.name for k in spec.entity_keys] + [r.name for r in spec.request_fields]
    if settings.canary_key is not None:
        if settings.canary_key not in names:
            raise SkewlessError(f"SKEWLESS_CANARY_KEY={settings.canary_key!r} is not an entity "
                                f"key or request field of {spec.feature_service} ({names})")
        return settings.canary_key
    return names[0] if names else None


def redis_client(connection_string: str, timeout: float,
                 cluster: bool = False) -> aioredis.Redis | aioredis.RedisCluster:
    """An asyncio client for Feast's connection string that fails fast instead of retrying:
    one Redis, or (``cluster``) Redis Cluster from the nodes the string lists, whose
    pipeline sends one batch per node."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
    common: dict[str, Any] = dict(
        socket_timeout=timeout, socket_connect_timeout=timeout,
        # One immediate retry on a broken connection (a pooled socket Redis closed when it
        # restarted), none on a timeout: an outage answers within the timeout.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=0)
    if cluster:
        from redis.asyncio.cluster import ClusterNode

        return aioredis.RedisCluster(
            startup_nodes=[ClusterNode(n["host"], int(n["port"])) for n in nodes],
            **params, **common)
    return aioredis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **params, **common)


def cluster_nodes(client: aioredis.RedisCluster) -> list[tuple[str, int]]:
    """Every node the client knows (from the cluster's slots) or started from."""
    known = {(n.host, int(n.port)) for n in client.get_nodes()}
    known |= {(n.host, int(n.port)) for n in client.nodes_manager.startup_nodes.values()}
    return sorted(known)


async def silent_nodes(client: aioredis.RedisCluster, timeout: float) -> list[str]:
    """The cluster's nodes that do not answer a PING within ``timeout`` (host:port), each
    asked on a connection of its own: only when a read failed, to name what is down."""

    async def answers(host: str, port: int) -> bool:
        node = aioredis.Redis(host=host, port=port, socket_timeout=timeout,
                              socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
        try:
            return bool(await node.ping())  # type: ignore[misc]
        except (TimeoutError, RedisError, OSError):
            return False
        finally:
            await node.aclose()

    nodes = cluster_nodes(client)
    alive = await asyncio.gather(*(answers(host, port) for host, port in nodes))
    return [f"{host}:{port}" for (host, port), up in zip(nodes, alive, strict=True) if not up]


@dataclass
class Predictor:
    """The serving state: built by the app's lifespan, read by every request."""

    settings: Settings
    spec: ServiceSpec
    plan: OnlinePlan
    redis: aioredis.Redis | aioredis.RedisCluster
    logbook: LogBook
    metrics: Metrics
    production: ModelSlot
    pool: ModelPool
    challenger: ChallengerSlot | None = None
    shadow: ShadowScorer | None = None
    canary_key: str | None = None  # the entity key (or request field) a canary share hashes
    _missing: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._answers = {role: self.metrics.answers.labels(role)
                         for role in ("production", CANARY_ROLE)}
        self._canary_outcomes = {o: self.metrics.challenger_outcomes.labels(o)
                                 for o in (SCORED, ERROR, NONFINITE, OVERLOADED)}
        self._production_seconds = self.metrics.model_call_seconds.labels("production")
        self._challenger_seconds = self.metrics.model_call_seconds.labels("challenger")
        self._alike: tuple[Scorer, Scorer, bool] | None = None  # last encoding comparison
        # Each batch view's age histogram and a position holding its event time (every
        # feature of a view shares it): ages come from what the read returned.
        self._ages = [(self.metrics.feature_age.labels(view.name), view.output[0])
                      for group in self.plan.groups for view in group.views if view.output
                      ] if self.settings.feature_age_metrics else []

    def _encodes_alike(self, production: Scorer, challenger: Scorer) -> bool:
        """Whether the challenger can score production's encoded rows (cached per pair)."""
        alike = self._alike
        if alike is None or alike[0] is not production or alike[1] is not challenger:
            alike = (production, challenger, production.encodes_like(challenger))
            self._alike = alike
        return alike[2]

    @classmethod
    def load(cls, settings: Settings, store: FeatureStore, spec: ServiceSpec,
             metrics: Metrics, registry: Registry | None = None) -> Predictor:
        from feast.feature_logging import FeatureServiceLoggingSource

        require_servable(store.config, spec)
        if not settings.redis:
            raise SkewlessError("no online store configured: set SKEWLESS_REDIS (host:port)")
        # Feast's logging schema from the registry read the spec came from (a second read
        # could see another registry, and Feast's own lookups would load its code).
        definitions = spec.registry
        if definitions is None:
            raise SkewlessError("the service spec carries no registry snapshot: resolve it "
                                "with skewless.contract.resolve_service")
        service = definitions.feature_service(settings.feature_service)
        feast_schema = FeatureServiceLoggingSource(service, store.project).get_schema(
            definitions)  # type: ignore[arg-type]  # answers the lookups get_schema makes
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
            dead_letter_directory=settings.var_dir / "feature_logs_dead_letter",
            spool=(Spool(settings.spool_dir, on_sync=metrics.spool_synced)
                   if settings.feature_log_durability == "spool" else None),
            on_written=metrics.log_written, on_error=metrics.log_failed,
            on_dead_letter=metrics.log_dead_letter,
        )
        metrics.track_depth(lambda: logbook.depth)
        metrics.log_capacity.set(settings.feature_log_capacity)
        production = ModelSlot(spec, metrics, None if settings.model_path else registry,
                               pinned=settings.model_path,
                               limits=ArtifactLimits.from_settings(settings),
                               fallback_threshold=settings.decision_threshold)
        production.load()
        challenger = ChallengerSlot(spec, metrics, None if settings.model_path else registry,
                                    limits=ArtifactLimits.from_settings(settings),
                                    fallback_threshold=settings.decision_threshold)
        challenger.load()
        pool = ModelPool(settings.model_workers, settings.model_queue)
        metrics.track_pool(lambda: pool.in_flight)
        predictor = cls(
            settings=settings, spec=spec, plan=OnlinePlan.from_store(store, spec),
            redis=redis_client(settings.redis, settings.redis_timeout_seconds,
                               cluster=is_cluster(store.config)),
            logbook=logbook, metrics=metrics, production=production, pool=pool,
            challenger=challenger, canary_key=canary_key(settings, spec),
        )
        from skewless.freshness import objectives

        for view, seconds in objectives(
                [definitions.feature_view(v) for v, d in spec.definitions["views"].items()
                 if d["kind"] == "batch"]).items():
            metrics.freshness_objective.labels(view).set(seconds)
        predictor.shadow = ShadowScorer(settings.shadow_budget_ms / 1e3,
                                        settings.shadow_queue_rows, metrics,
                                        predictor._shadow_scored)
        return predictor

    def start(self) -> None:
        """Start what runs beside requests (on the running loop): the shadow's scorer."""
        if self.shadow is not None:
            self.shadow.start()

    async def stop(self) -> None:
        """Log every row still waiting for its shadow score (before the log closes)."""
        if self.shadow is not None:
            await self.shadow.stop()

    @property
    def model_name(self) -> str:
        return self.spec.feature_service

    @property
    def slots(self) -> tuple[ModelSlot, ...]:
        return (self.production, self.challenger) if self.challenger else (self.production,)

    async def refresh(self) -> str | None:
        """Check the registry now (production and challenger); returns the production
        version served."""
        version = await self.production.refresh()
        if self.challenger is not None:
            await self.challenger.refresh()
        return version

    async def follow_registry(self) -> None:
        """Let every slot follow its registry stage until cancelled."""
        await asyncio.gather(*(slot.follow(self.settings.registry_poll_seconds)
                               for slot in self.slots))

    def close(self) -> None:
        self.pool.close()
        for slot in self.slots:
            slot.close()

    async def predict(self, rows: Sequence[dict[str, Any]], explain: bool = False,
                      ) -> tuple[list[Prediction], str, Timings]:
        """Score rows; returns the predictions, the model version and the stage timings."""
        scorer = self.production.scorer
        if scorer is None:
            raise ServiceUnavailable(f"model not loaded: {self.production.problem}")
        route = self.challenger.route if self.challenger is not None else None
        n = len(rows)
        # A single row takes microseconds and stays on the loop; heavy work goes to the pool.
        heavy = explain or n > self.settings.model_offload_rows
        if heavy:
            try:
                self.pool.admit()
            except PoolBusy:
                self.metrics.pool_refused.inc()
                raise
        try:
            return await self._predict(scorer, route, rows, explain, heavy)
        finally:
            if heavy:
                self.pool.release()

    async def _predict(self, scorer: Scorer, route: Challenger | None,
                       rows: Sequence[dict[str, Any]], explain: bool,
                       heavy: bool) -> tuple[list[Prediction], str, Timings]:
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
        if heavy:
            scored = await self.pool.run(self._score, scorer, route, replies, rows, now,
                                         explain)
        else:
            scored = self._score(scorer, route, replies, rows, now, explain)
        timings.transform, timings.model = scored.transform_ms, scored.model_ms
        t3 = time.perf_counter()
        predictions, durable = self._log(rows, scored, now, scorer, route)
        for pending in durable:  # spool durability: answer once the rows are synced
            try:
                await pending
            except SpoolUnavailable as exc:
                self.metrics.spool_failures.inc()
                raise ServiceUnavailable(str(exc)) from exc
        self.metrics.predictions.inc(n)
        t4 = time.perf_counter()
        timings.features, timings.log = (t1 - t0) * 1e3, (t4 - t3) * 1e3
        return predictions, scorer.version, timings

    def _score(self, scorer: Scorer, route: Challenger | None, replies: list[Any],
               rows: Sequence[dict[str, Any]], now: float, explain: bool) -> Scored:
        """Decode, transform and score: the vectors, production's scores (and the canary's
        on its rows), contributions and the transform and model stages' milliseconds."""
        n = len(rows)
        t1 = time.perf_counter()
        features = self.plan.decode(replies, n, now)
        for histogram, position in self._ages:
            for stamps in features.timestamps:
                stamp = stamps[position]
                if stamp is not None:
                    histogram.observe(now - stamp)
        self.plan.transform(features, rows, now)
        t2 = time.perf_counter()
        x = scorer.matrix(features.values)
        scores = [scorer.predict_one(x[0])] if n == 1 and not explain else scorer.predict(x)
        t_model = time.perf_counter()
        self._production_seconds.observe(t_model - t2)
        nonfinite = _nonfinite(scores)
        if nonfinite:
            self.metrics.nonfinite_predictions.inc(nonfinite)
            raise NonFiniteScore(f"model returned a non-finite score ({nonfinite} of {n} rows; "
                                 f"model {scorer.version})")
        contributions = scorer.contributions(x) if explain else None
        production_us = (t_model - t2) * 1e6 / n
        canary = None
        if route is not None and route.limit and self.canary_key is not None:
            key, limit = self.canary_key, route.limit
            picked = [i for i, row in enumerate(rows) if canary_bucket(row[key]) < limit]
            if picked:
                canary = self._canary(route, features.values, x, picked, explain,
                                      self._encodes_alike(scorer, route.scorer))
        t3 = time.perf_counter()
        return Scored(features, x, scores, contributions, (t2 - t1) * 1e3, (t3 - t2) * 1e3,
                      production_us, canary)

    def _canary(self, route: Challenger, values: list[list[Any]], encoded: np.ndarray,
                picked: list[int], explain: bool, alike: bool) -> CanaryScores:
        """The canary's scores on its rows; a call that raises answers none of them (production
        does), a non-finite score answers not its row."""
        challenger = route.scorer
        started = time.perf_counter()
        try:
            x = (encoded[picked] if alike
                 else challenger.matrix([values[i] for i in picked]))
            raw = ([challenger.predict_one(x[0])] if len(picked) == 1 and not explain
                   else [float(s) for s in challenger.predict(x)])
            contributions = challenger.contributions(x) if explain else None
        except Exception:  # the canary fails no request: production answers these rows
            logger.exception("the canary %s failed to score %d rows", challenger.version,
                             len(picked))
            self._canary_outcomes[ERROR].inc(len(picked))
            return CanaryScores(route, {i: (None, ERROR) for i in picked}, None)
        seconds = time.perf_counter() - started
        self._challenger_seconds.observe(seconds)
        answers: dict[int, tuple[float | None, str]] = {}
        for i, score in zip(picked, raw, strict=True):
            answers[i] = (score, SCORED) if math.isfinite(score) else (None, NONFINITE)
        bad = sum(1 for _, outcome in answers.values() if outcome == NONFINITE)
        if bad:
            self._canary_outcomes[NONFINITE].inc(bad)
        self._canary_outcomes[SCORED].inc(len(picked) - bad)
        return CanaryScores(
            route, answers, seconds * 1e6 / len(picked),
            dict(zip(picked, contributions, strict=True)) if contributions else None)

    async def _read(self, rows: Sequence[dict[str, Any]]) -> list[Any]:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, fields in self.plan.commands(rows):
                    pipe.hmget(key, fields)  # type: ignore[arg-type]  # bytes keys are fine
                return await pipe.execute()
        except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:
            self.metrics.redis_errors.inc()
            raise ServiceUnavailable(await self._redis_problem(exc)) from exc

    async def _redis_problem(self, exc: BaseException) -> str:
        """What a failed read or PING says: for Redis Cluster, the nodes that do not answer
        (the error itself may only say the cluster is down, or quote a command's keys)."""
        if isinstance(self.redis, aioredis.RedisCluster):
            down = await silent_nodes(self.redis, self.settings.redis_timeout_seconds)
            if down:
                return (f"online store unavailable: Redis Cluster node{'s' * (len(down) > 1)} "
                        f"{', '.join(down)} not answering")
            return f"online store unavailable: Redis Cluster: {type(exc).__name__}"
        return f"online store unavailable: {exc}"

    def _log(self, rows: Sequence[dict[str, Any]], scored: Scored, now: float,
             scorer: Scorer, route: Challenger | None,
             ) -> tuple[list[Prediction], list[asyncio.Future[Any]]]:
        """The predictions, their rows handed to the log (or to the shadow, to wait for the
        challenger's scores), and with spool durability the futures to await before
        answering."""
        layout = self.logbook.layout
        keys, requests, event_id = layout.key_columns, layout.request_columns, \
            layout.event_id_column
        keep = self.settings.feature_log_enabled
        features, scores, contributions = scored.features, scored.scores, scored.contributions
        canary = scored.canary.answers if scored.canary is not None else {}
        shadow = self.shadow if route is not None and keep else None
        production, production_us = scorer.version, scored.production_us
        served_us = round(now * 1e6)
        logged: list[LoggedRow] = []
        waiting: list[tuple[Any, ...]] = []  # rows' fields up to production's, by position
        positions: list[int] = []
        predictions = []
        answered_by_canary = 0
        for i, row in enumerate(rows):
            request_id = uuid.uuid4().hex
            score = float(scores[i])
            statuses = features.statuses[i]
            missing = {(self.plan.views[pos], status)
                       for pos, status in enumerate(statuses) if status != PRESENT}
            for view_status in missing:
                self._count_missing(view_status)
            answer, version, threshold, explained = score, production, scorer.threshold, \
                contributions[i] if contributions else None
            mine = canary.get(i)
            if mine is not None and mine[0] is not None:
                assert route is not None and scored.canary is not None
                answer, version, threshold = mine[0], route.version, route.scorer.threshold
                if scored.canary.contributions is not None:
                    explained = scored.canary.contributions[i]
                answered_by_canary += 1
            if keep:
                ident = row.get(event_id) if event_id else None
                served = (request_id, served_us, version, answer,
                          None if ident is None else str(ident), tuple(row[k] for k in keys),
                          tuple(row[r] for r in requests), tuple(features.values[i]),
                          tuple(statuses), tuple(features.timestamps[i]),
                          production, score, production_us)
                if route is None:
                    logged.append(LoggedRow(*served))
                elif mine is not None:  # scored by the canary already
                    assert scored.canary is not None
                    logged.append(LoggedRow(
                        *served, route.version, route.stage, mine[0], mine[1],
                        None if mine[1] == ERROR else scored.canary.us))
                else:
                    waiting.append(served)
                    positions.append(i)
            predictions.append(Prediction(request_id, answer, answer >= threshold,
                                          features.values[i], statuses, explained, version))
        if answered_by_canary:
            self._answers[CANARY_ROLE].inc(answered_by_canary)
        if answered_by_canary < len(rows):
            self._answers["production"].inc(len(rows) - answered_by_canary)
        durable: list[asyncio.Future[Any]] = []
        if waiting and shadow is not None and route is not None:
            if shadow.has_room(len(waiting)):
                alike = self._encodes_alike(scorer, route.scorer)
                vectors = (scored.x if len(positions) == len(rows) else scored.x[positions]) \
                    if alike else [features.values[i] for i in positions]
                job = ShadowJob(route.scorer, route.stage, vectors, waiting,
                                time.monotonic() + shadow.budget)
                if self.logbook.spool is not None:
                    job.logged = asyncio.get_running_loop().create_future()
                    durable.append(job.logged)
                self.logbook.held += len(waiting)
                shadow.submit(job)
            else:
                self._canary_outcomes[OVERLOADED].inc(len(waiting))
                logged.extend(LoggedRow(*(served + (route.version, route.stage, None, OVERLOADED)))
                              for served in waiting)
        if logged:
            appended = self.logbook.append(logged)
            if appended is not None:
                durable.insert(0, appended)
        return predictions, durable

    def _shadow_scored(self, job: ShadowJob, scores: list[float | None], outcomes: list[str],
                       us: float | None) -> None:
        """Rows back from the shadow (on the loop): logged with the challenger's scores."""
        self.logbook.held -= len(job.rows)
        version, stage = job.scorer.version, job.stage
        rows = [LoggedRow(*(served + (version, stage, score, outcome,
                                      us if score is not None or outcome == NONFINITE
                                      else None)))
                for served, score, outcome in zip(job.rows, scores, outcomes, strict=True)]
        durable = self.logbook.append(rows)
        if job.logged is not None and not job.logged.done():
            if durable is None:
                job.logged.set_result(None)
            else:  # the answer waits for the spool's sync of these rows too
                durable.add_done_callback(lambda f: _chain(f, job.logged))

    def _count_missing(self, view_status: tuple[str, int]) -> None:
        child = self._missing.get(view_status)
        if child is None:
            child = self.metrics.feature_status.labels(view_status[0],
                                                       STATUS_NAMES[view_status[1]])
            self._missing[view_status] = child
        child.inc()

    def feature_payload(self, prediction: Prediction) -> dict[str, dict[str, Any]]:
        """Each feature's value and status for the response. JSON has no NaN or infinity: such
        a value is answered as null with status NULL_VALUE (the log keeps what the model saw)."""
        payload = {}
        for name, value, status in zip(self.spec.feature_names, prediction.values,
                                       prediction.statuses, strict=True):
            if isinstance(value, float) and not math.isfinite(value):
                value, status = None, NULL_VALUE
            payload[name] = {"value": value, "status": STATUS_NAMES[status]}
        return payload

    async def check_redis(self) -> str | None:
        """None when Redis answers a PING in time, else what is wrong."""
        try:
            if isinstance(self.redis, aioredis.RedisCluster):
                await self.redis.ping(  # type: ignore[misc]
                    target_nodes=aioredis.RedisCluster.ALL_NODES)
            else:
                await self.redis.ping()  # type: ignore[misc]
        except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:
            return await self._redis_problem(exc)
        return None
