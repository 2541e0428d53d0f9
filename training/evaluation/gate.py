"""The acceptance gate: a candidate is promoted only when every criterion holds.

From the candidate's own contract (its holdout, evaluated at training): a first version's
metric above ``gate_first_floor``; the best baseline beaten by ``gate_baseline_margin``; no
group rate's ratio confidently below ``gate_min_group_ratio``. Against production, both
versions scored on the same point-in-time holdout — the label events of the last
``holdout_days`` up to the latest event whose label has arrived, built through Feast like any
training set: the candidate's metric at least production's minus ``gate_margin``, and on
every slice with ``gate_slice_min_labels`` labels the paired ROC AUC difference not
confidently below −``gate_slice_margin`` (refused when its 95% interval's upper bound is,
warned when only the point estimate is). Every criterion's evidence is stored with the stage
transition; a refusal names each failing criterion and is audited with the same evidence.
``force`` skips the gate and is audited as such. The decision and the refusal are the shared
core's (``skewless.gate``): the service asks for promotions through them and is handed
:func:`promote` by whoever builds it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from skewless.artifact import ArtifactError, ModelArtifact
from skewless.contract import ModelContract, contract_differences, resolve_service
from skewless.gate import FAIL, PASS, SKIPPED, WARN, Criterion, GateDecision, PromotionRefused
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
from training.evaluation.plan import event_columns
from training.evaluation.slices import Subgroup, paired_slice_differences
from training.train import to_matrix


def score_on(artifact: ModelArtifact, holdout: TrainingSet) -> dict[str, Any]:
    return evaluate_scores(holdout.frame[holdout.label_column].to_numpy(),
                           scores_of(artifact, holdout))


def scores_of(artifact: ModelArtifact, holdout: TrainingSet) -> np.ndarray:
    x = to_matrix(holdout.frame, artifact.contract.features, artifact.contract.categories)
    return np.asarray(artifact.booster.predict(x))


def floor_criterion(settings: Settings, contract: ModelContract) -> Criterion:
    """A first version's own holdout metric above the absolute floor."""
    metric, floor = settings.gate_metric, settings.gate_first_floor
    own = _holdout_metric(contract, metric)
    evidence = {"metric": metric, "holdout": own, "floor": floor}
    if own is None:
        return Criterion("first-version floor", "SKEWLESS_GATE_FIRST_FLOOR", FAIL,
                         f"the candidate's contract holds no holdout {metric}", evidence)
    ok = own >= floor
    return Criterion("first-version floor", "SKEWLESS_GATE_FIRST_FLOOR", PASS if ok else FAIL,
                     f"holdout {metric} {own:.4f} {'≥' if ok else '<'} floor {floor:g}", evidence)


def baseline_criterion(settings: Settings, contract: ModelContract) -> Criterion:
    """The candidate beats the best of its baselines (same split, same holdout) by a margin."""
    metric, margin = settings.gate_metric, settings.gate_baseline_margin
    name, setting = "beats the baselines", "SKEWLESS_GATE_BASELINE_MARGIN"
    own = _holdout_metric(contract, metric)
    stored = contract.metrics.baselines if contract.metrics else {}
    baselines: dict[str, float] = {k: float(getattr(v, metric)) for k, v in stored.items()
                                   if getattr(v, metric, None) is not None}
    if own is None or not baselines:
        return Criterion(name, setting, WARN, "the candidate's contract holds no baselines "
                         "(trained before they were recorded): not judged",
                         {"metric": metric, "holdout": own})
    best = max(baselines, key=lambda k: baselines[k])
    evidence = {"metric": metric, "holdout": own, "baselines": baselines, "best": best,
                "margin": margin}
    ok = own >= baselines[best] + margin
    return Criterion(name, setting, PASS if ok else FAIL,
                     f"holdout {metric} {own:.4f} vs baseline {best} {baselines[best]:.4f} "
                     f"(must beat it by {margin:g})", evidence)


def production_criterion(decision: GateDecision) -> Criterion:
    c, p = decision.candidate, decision.production or {}
    ok = bool(c["score"] >= p["score"] - decision.margin)
    return Criterion("not worse than production", "SKEWLESS_GATE_MARGIN", PASS if ok else FAIL,
                     f"candidate {c['version']} {decision.metric} {c['score']:.4f} vs production "
                     f"{p['version']} {p['score']:.4f} (margin {decision.margin:g})",
                     {"metric": decision.metric, "candidate": c["score"],
                      "production": p["score"], "margin": decision.margin})


def slice_criteria(settings: Settings, holdout: TrainingSet, candidate: np.ndarray,
                   production: np.ndarray) -> list[Criterion]:
    """Per slice of the settings with enough labels: the paired ROC AUC difference (candidate
    − production, one bootstrap over the same rows) must not be confidently below −margin."""
    specs = [Subgroup.parse(s) for s in settings.slices]
    if not specs:
        return []
    columns = event_columns(holdout.frame, holdout.id_column,
                            LabelSource.from_settings(settings), [g.column for g in specs])
    cells = paired_slice_differences(
        holdout.frame[holdout.label_column].to_numpy(), candidate, production, columns, specs,
        settings.evaluation_bootstrap, settings.seed)
    margin, least = settings.gate_slice_margin, settings.gate_slice_min_labels
    positives = settings.gate_slice_min_positives
    out = []
    for cell in cells:
        name = f"slice {cell.column} = {cell.value}"
        evidence = {"column": cell.column, "value": cell.value, "rows": cell.rows,
                    "positives": cell.positives, "difference": cell.difference,
                    "low": cell.low, "high": cell.high, "margin": margin, "metric": "roc_auc"}
        if cell.rows < least or cell.positives < positives:
            small, setting = ((f"{cell.rows} labelled rows < {least}", "LABELS")
                              if cell.rows < least else
                              (f"{cell.positives} positives < {positives}", "POSITIVES"))
            out.append(Criterion(name, f"SKEWLESS_GATE_SLICE_MIN_{setting}", SKIPPED, small,
                                 evidence))
            continue
        if cell.difference is None or cell.low is None or cell.high is None:
            out.append(Criterion(name, "SKEWLESS_GATE_SLICE_MARGIN", SKIPPED,
                                 "a single class: no ROC AUC", evidence))
            continue
        text = (f"ROC AUC candidate − production {cell.difference:+.4f}, 95% interval "
                f"[{cell.low:+.4f}, {cell.high:+.4f}] on {cell.rows:,} rows "
                f"({cell.positives:,} positives); margin {margin:g}")
        status = (FAIL if cell.high < -margin else WARN if cell.difference < -margin else PASS)
        out.append(Criterion(name, "SKEWLESS_GATE_SLICE_MARGIN", status, text, evidence))
    return out


def disparity_criteria(settings: Settings, contract: ModelContract) -> list[Criterion]:
    """Per configured group and rate: the smallest group's rate ÷ the largest's (fairlearn's
    ratio, on the candidate's holdout at its decision threshold) must not be confidently below
    the setting: refused when its 95% interval's upper bound is."""
    least = settings.gate_min_group_ratio
    inclusion = contract.metrics.inclusion if contract.metrics else None
    out = []
    for column, group in (inclusion.groups.items() if inclusion else []):
        for rate, ratio in group.ratios.items():
            low, high = (list(group.ratio_intervals.get(rate) or []) + [None, None])[:2]
            name = f"disparity {column}: {rate}"
            evidence = {"group": column, "rate": rate, "ratio": ratio, "low": low, "high": high,
                        "threshold": inclusion.threshold if inclusion else None,
                        "min_ratio": least,
                        "by_group": {v: r.rate for v, r in group.rates.get(rate, {}).items()}}
            if ratio is None or high is None:
                out.append(Criterion(name, "SKEWLESS_GATE_MIN_GROUP_RATIO", SKIPPED,
                                     "not computed (a group without the rate's rows)", evidence))
                continue
            text = (f"smallest ÷ largest group {ratio:.3f}, 95% interval "
                    f"[{low:.3f}, {high:.3f}]; at least {least:g}")
            status = FAIL if high < least else WARN if ratio < least else PASS
            out.append(Criterion(name, "SKEWLESS_GATE_MIN_GROUP_RATIO", status, text, evidence))
    return out


def _holdout_metric(contract: ModelContract, metric: str) -> float | None:
    if contract.metrics is None:
        return None
    value = getattr(contract.metrics.holdout, metric, None)
    return float(value) if value is not None else None


def decide(settings: Settings, registry: Registry, name: str, version: str,
           cutoff: datetime | None = None) -> GateDecision:
    """Judge the candidate on every criterion; compare it with production (overall and per
    slice) on one point-in-time holdout when there is a production version it can replace."""
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
    contract = candidate_artifact.contract
    current = registry.production(name)
    decision = GateDecision(
        accepted=True, metric=metric, margin=margin,
        candidate={"version": version, "training_holdout": _holdout_metric(contract, metric)},
        production=None if current is None else {"version": current.version},
        criteria=[baseline_criterion(settings, contract),
                  *disparity_criteria(settings, contract)])
    if current is None:
        decision.note = f"no production version of {name}: a first version"
        decision.criteria.insert(0, floor_criterion(settings, contract))
        return decision.judge()
    try:
        current = registry.ensure_checked(name, current.version)
        production_artifact = load_registered(current, registry.limits)
        stale = contract_differences(production_artifact.contract, spec)
    except (ArtifactError, ArtifactRefused) as exc:
        stale = [str(exc)]
    if stale:
        decision.note = (f"production {current.version} cannot serve the current definitions "
                         f"({'; '.join(stale)}): the candidate replaces it")
        decision.criteria.insert(0, floor_criterion(settings, contract))
        return decision.judge()
    known_at = cutoff or datetime.now(UTC)
    latest = latest_labelled_event(LabelSource.from_settings(settings), known_at)
    if latest is None:
        raise PromotionRefused(f"no labelled events known at {known_at.isoformat()} to compare "
                               f"{version} with production {current.version} on")
    since = latest - timedelta(days=settings.holdout_days)
    holdout = build_training_set(service_settings, cutoff=known_at, store=store, since=since)
    y = holdout.frame[holdout.label_column].to_numpy()
    scores = {version: scores_of(candidate_artifact, holdout),
              current.version: scores_of(production_artifact, holdout)}
    evaluated = {v: evaluate_scores(y, p) for v, p in scores.items()}
    decision.candidate["score"] = evaluated[version][metric]
    decision.production = {"version": current.version,
                           "score": evaluated[current.version][metric]}
    decision.holdout = {"from": since.isoformat(), "to": latest.isoformat(),
                        "labels_known_at": known_at.isoformat(),
                        "rows": len(holdout.frame), "positives": int(y.sum())}
    decision.criteria.insert(0, production_criterion(decision))
    decision.criteria[1:1] = slice_criteria(settings, holdout, scores[version],
                                            scores[current.version])
    return decision.judge()


def promote(settings: Settings, registry: Registry, name: str, version: str, actor: str,
            reason: str | None = None, force: bool = False,
            evidence: dict[str, Any] | None = None,
            ) -> tuple[ModelVersion, GateDecision | None]:
    """Promote ``version`` through the gate (or past it with ``force`` and a reason);
    ``evidence`` (e.g. the rollout's) is recorded beside the gate's."""
    extra = {"rollout": evidence} if evidence else {}
    if force:
        if not reason:
            raise RegistryError("a forced promotion needs a reason (--reason): it is audited")
        return registry.force_promote(name, version, actor, reason,
                                      {"gate": "skipped (forced)", **extra}), None
    try:
        decision = decide(settings, registry, name, version)
    except PromotionRefused as exc:
        registry.audit(actor, "promote", f"{name}/{version}", "refused", {"error": str(exc)})
        raise
    if not decision.accepted:
        refused = PromotionRefused(f"candidate {version} refused: {decision.explain()}", decision)
        registry.audit(actor, "promote", f"{name}/{version}", "refused by the gate",
                       {**decision.evidence(), "error": str(refused)})
        raise refused
    expected = decision.production["version"] if decision.production else None
    row = registry.promote(name, version, actor, reason or "passed the acceptance gate",
                           {**decision.evidence(), **extra}, expected_production=expected)
    return row, decision
