"""A model slot: one model version's life in the predictor, beside the request path.

A slot loads a model — pinned to a directory, or the version the registry holds in one stage
(production today) — verifies it (sha256 as registered, LightGBM text that parses, a contract
matching the current Feast definitions, a smoke prediction) and hands the request path a
scorer. It parses only what a check process parsed first: a registry version with a recorded
artefact check (``skewless.artifact_check``), or a pinned directory it checks so at start-up;
and only bytes with the checked sha256. When the stage's version changes (noticed by polling,
or told by an admin call) the new version is loaded and verified in a thread beside the
serving one and swapped in with one assignment; the old scorer is freed after a grace
period. A version that fails verification is refused (log line and metric) and the old one
keeps serving. So does a registry that cannot be reached: each failed poll is counted, the
outage and the recovery are logged once each, and the follower polls on. Each request takes a
slot's scorer once, so it is scored by one version throughout.

The request path (``service/predictor.py``) never loads anything. The challenger (a shadow or
a canary) is a second slot, :class:`ChallengerSlot`, following the registry's challenger with
the same verification and hot-swap rules; it publishes its scorer, stage and canary share as
one :class:`Challenger`, so a request sees one consistent route. A challenger that fails
verification is not served (production is unaffected); one that leaves its stage stops being
served at the next poll or admin call.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from service.metrics import Metrics
from service.scoring import Scorer
from skewless.artifact import (
    ArtifactError,
    ArtifactLimits,
    ModelArtifact,
    check_artifact,
    load_artifact,
    load_contract,
)
from skewless.contract import ServiceSpec, contract_differences
from skewless.registry import (
    ModelVersion,
    Registry,
    RegistryError,
    Stage,
    load_registered,
    not_checked,
)
from skewless.rollout import canary_limit

logger = logging.getLogger(__name__)
CHECK_ACTOR = "skewless serve"  # who the audit names for a check the predictor ran itself
RETIRE_AFTER_SECONDS = 30.0  # a replaced model is freed once no request can still hold it


@dataclass
class ModelSlot:
    """One model version at a time: pinned to ``pinned``, or following ``stage`` of the registry.

    ``scorer`` is what the request path reads; ``problem`` says why there is none.
    """

    spec: ServiceSpec
    metrics: Metrics
    registry: Registry | None = None  # None: a pinned model (SKEWLESS_MODEL_PATH)
    pinned: Path | None = None
    stage: Stage = Stage.PRODUCTION
    scorer: Scorer | None = None
    problem: str | None = None
    limits: ArtifactLimits = field(default_factory=ArtifactLimits)
    # The decision threshold of a model whose contract has none (SKEWLESS_DECISION_THRESHOLD).
    fallback_threshold: float = 0.5
    _refused: set[str] = field(default_factory=set, repr=False)  # versions not to retry
    _unreachable_since: float | None = field(default=None, repr=False)  # registry outage
    _swap_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def model_name(self) -> str:
        return self.spec.feature_service

    @property
    def version(self) -> str | None:
        return self.scorer.version if self.scorer else None

    def load(self) -> None:
        """Load the pinned model or the stage's version, or record why not."""
        try:
            if self.registry is None:
                if self.pinned is None:
                    raise ArtifactError("no model registry and no SKEWLESS_MODEL_PATH")
                scorer = self.verified_scorer(self.checked_pinned(self.pinned))
            else:
                row = self.registry.in_stage(self.model_name, self.stage)
                if row is None:
                    raise ArtifactError(
                        f"no {self.stage} version of {self.model_name} in the registry "
                        f"(skewless models promote {self.model_name} VERSION)")
                scorer = self.verified_scorer(load_registered(self.checked(row), self.limits))
        except ArtifactError as exc:
            self.scorer, self.problem = None, str(exc)
            self.metrics.model_loads.labels("refused").inc()
            logger.error("refusing to serve: %s", exc)
            return
        self._install(scorer)

    def checked(self, row: ModelVersion) -> ModelVersion:
        """``row`` with its artefact check recorded: a version registered before artefacts were
        checked is checked now, in a separate process, and the outcome recorded and audited
        (so an upgrade does not take the production model away)."""
        if not not_checked(row) or self.registry is None:
            return row
        logger.warning("model %s version %s has no recorded artefact check: checking it now",
                       row.name, row.version)
        try:
            return self.registry.ensure_checked(row.name, row.version, CHECK_ACTOR)
        except RegistryError as exc:  # refused by the check (ArtifactRefused) or gone
            raise ArtifactError(str(exc)) from exc

    def checked_pinned(self, directory: Path) -> ModelArtifact:
        """A pinned artefact, parsed by a check process first, then here from bytes with the
        sha256 that process checked (whatever the directory holds by then)."""
        contract = load_contract(directory, self.limits.max_bytes)
        assert contract.model is not None
        outcome = check_artifact(directory, contract.model.sha256, self.limits)
        logger.info("artefact %s checked in a separate process in %.2f s", directory,
                    outcome["seconds"])
        return load_artifact(directory, self.limits.max_bytes, sha256=contract.model.sha256)

    def verified_scorer(self, artifact: ModelArtifact) -> Scorer:
        """A scorer for ``artifact`` if its contract matches and a smoke prediction works."""
        problems = contract_differences(artifact.contract, self.spec)
        if problems:
            raise ArtifactError(
                f"model {artifact.version} does not match feature service "
                f"{self.spec.feature_service}: " + "; ".join(problems))
        # Scorer checks its single-row path against Booster.predict.
        scorer = Scorer(artifact, self.fallback_threshold)
        smoke = scorer.predict(scorer.matrix([[None] * len(self.spec.features)]))
        if len(smoke) != 1 or not math.isfinite(float(smoke[0])) or not 0 <= smoke[0] <= 1:
            scorer.close()
            raise ArtifactError(f"model {artifact.version} scored an empty row as {smoke}")
        return scorer

    async def refresh(self) -> str | None:
        """Serve the stage's version if it changed; returns the version served.

        Loading and verifying run in a thread beside the serving model; only the final
        assignment happens on the event loop.
        """
        if self.registry is None:
            return self.version
        registry = self.registry
        async with self._swap_lock:
            current = self.version
            try:  # the version only (cheap); the full row when it changed
                version = await asyncio.to_thread(registry.version_in_stage, self.model_name,
                                                  self.stage)
                row = None
                if version is not None and version != current and version not in self._refused:
                    row = await asyncio.to_thread(registry.get, self.model_name, version)
            except Exception as exc:  # the database is down: keep serving what we have
                self._registry_failed(exc, current)
                return current
            self._registry_answered()
            if row is None:
                return current
            started = time.perf_counter()
            try:
                scorer = await asyncio.to_thread(
                    lambda: self.verified_scorer(load_registered(self.checked(row), self.limits)))
            except ArtifactError as exc:
                self._refused.add(row.version)
                self.metrics.model_loads.labels("refused").inc()
                logger.error("refusing %s version %s of %s; still serving %s: %s",
                             self.stage, row.version, self.model_name, current, exc)
                return current
            self.metrics.model_load_seconds.observe(time.perf_counter() - started)
            old = self._install(scorer)
            logger.warning("now serving %s %s (was %s), loaded and verified in %.0f ms",
                           self.model_name, row.version, current,
                           (time.perf_counter() - started) * 1e3)
            if old is not None:
                asyncio.get_running_loop().call_later(RETIRE_AFTER_SECONDS, old.close)
            return row.version

    def _registry_failed(self, exc: Exception, current: str | None) -> None:
        self.metrics.registry_errors.inc()
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
            logger.warning("model registry unavailable (still serving %s; polling on): %s",
                           current, exc)

    def _registry_answered(self) -> None:
        since = self._unreachable_since
        if since is not None:
            self._unreachable_since = None
            logger.warning("model registry reachable again after %.1f s",
                           time.monotonic() - since)

    async def follow(self, poll_seconds: float) -> None:
        """Poll the registry's stage until cancelled."""
        while True:
            await asyncio.sleep(poll_seconds)
            try:
                await self.refresh()
            except Exception:  # never let the follower die; the next poll tries again
                logger.exception("following the model registry failed")

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()

    def _install(self, scorer: Scorer) -> Scorer | None:
        """Swap ``scorer`` in (one assignment); returns the one it replaced."""
        old, self.scorer, self.problem = self.scorer, scorer, None
        self.metrics.model_loads.labels("loaded").inc()
        self._announce(scorer)
        return old

    def _announce(self, scorer: Scorer) -> None:
        self.metrics.model.info({"version": scorer.version,
                                 "feature_service": self.spec.feature_service,
                                 "fingerprint": self.spec.fingerprint})
        self.metrics.model_age.contract = scorer.artifact.contract


class Challenger(NamedTuple):
    """What the request path reads of the challenger, in one assignment."""

    scorer: Scorer
    stage: str  # shadow or canary
    limit: int  # a canary answers the entities whose bucket is below this; 0 for a shadow

    @property
    def version(self) -> str:
        return self.scorer.version


@dataclass
class ChallengerSlot(ModelSlot):
    """The registry's challenger of the model name (shadow or canary), if any.

    ``route`` is what the request path reads: None while there is no challenger to serve
    (none in the registry, or one that failed verification, named by ``problem``).
    """

    route: Challenger | None = None
    percent: float | None = None  # a canary's share as the registry holds it

    def load(self) -> None:
        if self.registry is None:
            return  # a pinned model has no registry, so no challenger
        try:
            found = self.registry.challenger_route(self.model_name)
        except Exception as exc:  # the registry is down: serve production, poll on
            self._registry_failed(exc, None)
            return
        if found is not None:
            self._take(found, self._verified(found[0]))

    def _verified(self, version: str) -> Scorer | None:
        """A verified scorer for ``version``, or None (refused: logged, counted, not retried)."""
        assert self.registry is not None
        try:
            row = self.registry.get(self.model_name, version)
            return self.verified_scorer(load_registered(self.checked(row), self.limits))
        except (ArtifactError, RegistryError) as exc:
            self._refused.add(version)
            self.problem = f"challenger {version} refused: {exc}"
            self.metrics.model_loads.labels("refused").inc()
            logger.error("refusing challenger %s of %s; production serves alone: %s",
                         version, self.model_name, exc)
            return None

    def _take(self, found: tuple[str, str, float | None], scorer: Scorer | None) -> None:
        """Publish ``scorer`` as the challenger in the stage and share ``found`` names."""
        version, stage, percent = found
        old = self.scorer
        if scorer is None:
            self.scorer, self.route = None, None
        else:
            self.scorer, self.problem, self.percent = scorer, None, percent
            limit = canary_limit(percent) if stage == Stage.CANARY.value and percent else 0
            self.route = Challenger(scorer, stage, limit)
            if scorer is not old:
                self.metrics.model_loads.labels("loaded").inc()
            self._announce(scorer)
        if old is not None and old is not scorer:
            self._retire(old)

    def _vacate(self) -> None:
        old = self.scorer
        self.scorer, self.route, self.percent = None, None, None
        self.metrics.challenger.info({"version": "", "stage": ""})
        if old is not None:
            logger.warning("challenger %s of %s is no longer served", old.version,
                           self.model_name)
            self._retire(old)

    def _retire(self, old: Scorer) -> None:
        try:
            asyncio.get_running_loop().call_later(RETIRE_AFTER_SECONDS, old.close)
        except RuntimeError:  # no loop (start-up): nothing can hold it yet
            old.close()

    def _announce(self, scorer: Scorer) -> None:
        route = self.route
        self.metrics.challenger.info({"version": scorer.version,
                                      "stage": route.stage if route else ""})

    async def refresh(self) -> str | None:
        """Follow the registry's challenger: load a new one beside production, republish a
        changed stage or share, stop serving one that left. Returns the version served."""
        if self.registry is None:
            return None
        registry = self.registry
        async with self._swap_lock:
            current = self.version
            try:
                found = await asyncio.to_thread(registry.challenger_route, self.model_name)
            except Exception as exc:  # keep the route as it is; production is unaffected
                self._registry_failed(exc, current)
                return current
            self._registry_answered()
            if found is None:
                self.problem = None
                if current is not None or self.route is not None:
                    self._vacate()
                return None
            version = found[0]
            if version == current:
                if self.route is None or (found[1], found[2]) != (self.route.stage,
                                                                  self.percent):
                    self._take(found, self.scorer)
                    logger.warning("challenger %s of %s is now %s%s", version,
                                   self.model_name, found[1],
                                   f" at {found[2]:g}%" if found[2] else "")
                return version
            if version in self._refused:
                if current is not None:
                    self._vacate()
                return None
            started = time.perf_counter()
            scorer = await asyncio.to_thread(self._verified, version)
            if scorer is None:
                if current is not None:
                    self._vacate()
                return None
            self.metrics.model_load_seconds.observe(time.perf_counter() - started)
            self._take(found, scorer)
            logger.warning("challenger %s of %s loaded and verified in %.0f ms: %s%s",
                           version, self.model_name, (time.perf_counter() - started) * 1e3,
                           found[1], f" at {found[2]:g}%" if found[2] else "")
            return version
