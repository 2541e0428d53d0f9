"""The acceptance gate: a candidate is promoted only if it is not worse than production.

Both versions are scored on the same point-in-time holdout — the label events of the last
``holdout_days`` up to the latest event whose label has arrived, built through Feast like
any training set — and the
candidate passes when its metric is at least production's minus the configured margin. The
evidence (both scores, the holdout window and size) is stored with the stage transition; a
refusal is audited with the same evidence. ``force`` skips the gate and is audited as such.
The decision and the refusal are the shared core's (``skewless.gate``): the service asks for
promotions through them and is handed :func:`promote` by whoever builds it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from skewless.artifact import ArtifactError, ModelArtifact
from skewless.contract import contract_differences, resolve_service
from skewless.gate import GateDecision, PromotionRefused
from skewless.registry import (
    ArtifactRefused,
    ModelVersion,
    Registry,
    RegistryError,
    Stage,
    load_registered,
)
from skewless.settings import Settings
from skewless.transformations import TransformationError
from training.dataset import (
    LabelSource,
    TrainingSet,
    build_training_set,
    latest_labelled_event,
    open_store,
)
from training.evaluation.metrics import evaluate_scores
from training.train import to_matrix


def score_on(artifact: ModelArtifact, holdout: TrainingSet) -> dict[str, Any]:
    x = to_matrix(holdout.frame, artifact.contract.features, artifact.contract.categories)
    p = np.asarray(artifact.booster.predict(x))
    return evaluate_scores(holdout.frame[holdout.label_column].to_numpy(), p)


def decide(settings: Settings, registry: Registry, name: str, version: str,
           cutoff: datetime | None = None) -> GateDecision:
    """Compare the candidate with the current production version on one holdout."""
    candidate = registry.get(name, version)
    if candidate.stage == Stage.PRODUCTION.value:
        raise RegistryError(f"model {name} version {version} is already production")
    metric, margin = settings.gate_metric, settings.gate_margin
    try:  # parsed here (maybe in the service) only after a check process parsed it
        candidate = registry.ensure_checked(name, version)
        candidate_artifact = load_registered(candidate, registry.limits)
    except (ArtifactError, ArtifactRefused) as exc:
        raise PromotionRefused(f"candidate {version} refused: {exc}") from exc
    service_settings = settings.model_copy(update={"feature_service": candidate.feature_service})
    store = open_store(service_settings)
    try:
        spec = resolve_service(store, candidate.feature_service)
    except TransformationError as exc:
        raise PromotionRefused(f"candidate {version} refused: the current definitions cannot "
                               f"be loaded: {exc}") from exc
    problems = contract_differences(candidate_artifact.contract, spec)
    if problems:
        raise PromotionRefused(f"candidate {version} does not match the current definitions of "
                               f"{candidate.feature_service}: " + "; ".join(problems))
    current = registry.production(name)
    decision = GateDecision(
        accepted=True, metric=metric, margin=margin,
        candidate={"version": version,
                   "training_holdout": candidate.metrics.get("holdout", {}).get(metric)},
        production=None if current is None else {"version": current.version})
    if current is None:
        decision.note = f"no production version of {name}: the first one is accepted"
        return decision
    try:
        current = registry.ensure_checked(name, current.version)
        production_artifact = load_registered(current, registry.limits)
        stale = contract_differences(production_artifact.contract, spec)
    except (ArtifactError, ArtifactRefused) as exc:
        stale = [str(exc)]
    if stale:
        decision.note = (f"production {current.version} cannot serve the current definitions "
                         f"({'; '.join(stale)}): the candidate replaces it")
        return decision
    known_at = cutoff or datetime.now(UTC)
    latest = latest_labelled_event(LabelSource.from_settings(settings), known_at)
    if latest is None:
        raise PromotionRefused(f"no labelled events known at {known_at.isoformat()} to compare "
                               f"{version} with production {current.version} on")
    since = latest - timedelta(days=settings.holdout_days)
    holdout = build_training_set(service_settings, cutoff=known_at, store=store, since=since)
    scores = {v: score_on(a, holdout) for v, a in
              ((version, candidate_artifact), (current.version, production_artifact))}
    decision.candidate["score"] = scores[version][metric]
    decision.production = {"version": current.version, "score": scores[current.version][metric]}
    decision.holdout = {"from": since.isoformat(), "to": latest.isoformat(),
                        "labels_known_at": known_at.isoformat(),
                        "rows": len(holdout.frame),
                        "positives": int(holdout.frame[holdout.label_column].sum())}
    decision.accepted = bool(decision.candidate["score"] >= decision.production["score"] - margin)
    return decision


def promote(settings: Settings, registry: Registry, name: str, version: str, actor: str,
            reason: str | None = None, force: bool = False) -> tuple[ModelVersion, GateDecision | None]:
    """Promote ``version`` through the gate (or past it with ``force`` and a reason)."""
    if force:
        if not reason:
            raise RegistryError("a forced promotion needs a reason (--reason): it is audited")
        return registry.force_promote(name, version, actor, reason,
                                      {"gate": "skipped (forced)"}), None
    try:
        decision = decide(settings, registry, name, version)
    except PromotionRefused as exc:
        registry.audit(actor, "promote", f"{name}/{version}", "refused", {"error": str(exc)})
        raise
    if not decision.accepted:
        registry.audit(actor, "promote", f"{name}/{version}", "refused by the gate",
                       decision.evidence())
        raise PromotionRefused(f"candidate {version} refused: {decision.explain()}", decision)
    expected = decision.production["version"] if decision.production else None
    row = registry.promote(name, version, actor, reason or "passed the acceptance gate",
                           decision.evidence(), expected_production=expected)
    return row, decision
