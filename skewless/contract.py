"""The feature contract: what a model was trained on, resolved from the Feast registry.

A contract names the feature service, the ordered ``<view>__<feature>`` columns with their
Feast types, the entity keys and request fields a caller must supply, and a fingerprint of
the definitions the values come from (views, sources' timestamp columns, TTLs and
transformation code; not the kind of source or its path, so both profiles agree). Two parties
agree on features exactly when their fingerprints and feature lists agree.

The definitions are read from one snapshot of Feast's registry (``skewless.definitions``),
without running any stored code: an on-demand view's transformation is fingerprinted by its
source text, which is the code that runs (``skewless.transformations``), and resolving a
service refuses a view whose pickled body is not that text compiled.

Two types hold it: :class:`FeatureContract` (the feature part, carried by a training set)
and :class:`ModelContract` (a trained model's ``contract.json``: the feature part plus the
encoding, training window, parameters, metrics, baseline and the artefact's checksum). Each
reads and writes the JSON stored beside a model; keys a newer version adds are kept.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, field_validator

from skewless.documents import JsonDocument

if TYPE_CHECKING:
    from feast import FeatureStore

    from skewless.definitions import OnDemandDefinition, RegistrySnapshot

NUMERIC_TYPES = {"Int32", "Int64", "Float32", "Float64", "Bool"}
MONOTONE = {"increasing": 1, "decreasing": -1}


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: ``<view>__<feature>`` with its Feast type."""

    name: str
    view: str
    feature: str
    dtype: str
    # Known direction of the effect on the target (tag "monotone": increasing/decreasing);
    # training turns it into a LightGBM monotone constraint.
    monotone: int = 0

    @property
    def is_categorical(self) -> bool:
        return self.dtype not in NUMERIC_TYPES


@dataclass(frozen=True)
class FieldSpec:
    name: str
    dtype: str


@dataclass
class ServiceSpec:
    """A feature service as the registry defines it now."""

    feature_service: str
    features: list[FeatureSpec]
    entity_keys: list[FieldSpec]
    request_fields: list[FieldSpec]
    definitions: dict[str, Any] = field(repr=False)
    # The registry read these came from, and the service's on-demand views in it (their
    # transformations checked, not loaded): whoever runs a view builds it from here, so the
    # code that runs is the text the fingerprint covers.
    registry: RegistrySnapshot | None = field(default=None, repr=False, compare=False)
    on_demand: dict[str, OnDemandDefinition] = field(default_factory=dict, repr=False,
                                                     compare=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.definitions)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


# What the fingerprint covers, by version. 1 also hashed each source's class and file name,
# so one definition set rendered for two engines (FileSource for DuckDB, SparkSource for
# Spark) fingerprinted differently; 2 hashes what defines the values, not where an engine
# reads them. A contract of version 1 is verified in version 2 terms (upgrade_definitions).
FINGERPRINT_VERSION = 2
_SOURCE_LOCATION_V1 = ("type", "file")


def fingerprint(definitions: dict[str, Any]) -> str:
    canonical = json.dumps(definitions, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def upgrade_definitions(definitions: dict[str, Any]) -> dict[str, Any]:
    """Stored definitions in the current version's terms (a copy; the current as they are)."""
    if definitions.get("fingerprint_version", 1) >= FINGERPRINT_VERSION:
        return definitions
    views = {}
    for name, view in definitions.get("views", {}).items():
        if isinstance(view, dict) and isinstance(view.get("source"), dict):
            view = {**view, "source": {k: v for k, v in view["source"].items()
                                       if k not in _SOURCE_LOCATION_V1}}
        views[name] = view
    return {**definitions, "views": views, "fingerprint_version": FINGERPRINT_VERSION}


def current_fingerprint(contract: FeatureContract) -> str:
    """A stored contract's fingerprint in the current version's terms.

    A version-1 contract is upgraded only when its definitions are the ones its fingerprint
    was made of; otherwise its own fingerprint is kept, and it agrees with nothing current.
    """
    definitions = contract.definitions
    if definitions.get("fingerprint_version", 1) >= FINGERPRINT_VERSION:
        return contract.fingerprint
    if not definitions or fingerprint(definitions) != contract.fingerprint:
        return contract.fingerprint
    return fingerprint(upgrade_definitions(definitions))


def _dtype(field_: Any) -> str:
    return str(field_.dtype)


def _source_definition(source: Any) -> dict[str, Any]:
    """What a view's source contributes to its values: the columns it is read by. Not its
    class or location: the same parquet file is a FileSource for DuckDB, a SparkSource for
    Spark."""
    return {
        "name": source.name,
        "timestamp_field": source.timestamp_field,
        "created_timestamp_column": source.created_timestamp_column,
        "field_mapping": dict(source.field_mapping),
    }


def resolve_service(store: FeatureStore, name: str) -> ServiceSpec:
    """Resolve a feature service into its ordered features, inputs and definitions.

    Reads the registry once and runs none of its code; raises
    :class:`~skewless.transformations.TransformationError` for an on-demand view whose code
    cannot be trusted to be its source text.
    """
    from skewless.definitions import RegistrySnapshot

    return resolve_definitions(RegistrySnapshot.read(store), name)


def resolve_definitions(registry: RegistrySnapshot, name: str) -> ServiceSpec:
    """:func:`resolve_service` over a registry already read."""
    service = registry.feature_service(name)
    features: list[FeatureSpec] = []
    keys: dict[str, str] = {}
    requests: dict[str, str] = {}
    definitions: dict[str, Any] = {"feature_service": name, "views": {},
                                   "fingerprint_version": FINGERPRINT_VERSION}
    on_demand: dict[str, OnDemandDefinition] = {}
    odfv_names = registry.on_demand_names
    for projection in service.feature_view_projections:
        view_name = projection.name_to_use()
        if projection.name in odfv_names:
            found = registry.on_demand(projection.name)
            found.source.check()
            on_demand[view_name] = found
            odfv = found.view
            view_tags = odfv.tags
            for source in odfv.source_request_sources.values():
                for f in source.schema:
                    requests[f.name] = _dtype(f)
            definitions["views"][view_name] = {
                "kind": "on_demand",
                "mode": odfv.mode,
                "sources": sorted(
                    [f"{p.name}:{','.join(sorted(x.name for x in p.features))}"
                     for p in odfv.source_feature_view_projections.values()]
                    + [f"request:{r}" for r in odfv.source_request_sources]
                ),
                "features": [[f.name, _dtype(f)] for f in projection.features],
                # The source text: the code that runs (not the pickle Feast also stores).
                "transformation": found.source.text or None,
            }
        else:
            fv = registry.feature_view(projection.name)
            view_tags = fv.tags
            join_keys = [
                projection.join_key_map.get(c.name, c.name) if projection.join_key_map else c.name
                for c in fv.entity_columns
            ]
            for column, key in zip(fv.entity_columns, join_keys, strict=True):
                keys[key] = _dtype(column)
            definitions["views"][view_name] = {
                "kind": "batch",
                "entities": join_keys,
                "ttl_seconds": int(fv.ttl.total_seconds()) if fv.ttl else 0,
                "features": [[f.name, _dtype(f)] for f in projection.features],
                "source": _source_definition(fv.batch_source),
            }
        for feat in projection.features:
            # On-demand outputs carry no per-field tags (see feature_repo/on_demand.py), so
            # their direction is a view tag "monotone:<feature>".
            tag = feat.tags.get("monotone") or view_tags.get(f"monotone:{feat.name}", "")
            features.append(FeatureSpec(f"{view_name}__{feat.name}", view_name, feat.name,
                                        _dtype(feat), MONOTONE.get(tag, 0)))
    # A request field that is also an entity key is supplied once, as the key.
    for key in keys:
        requests.pop(key, None)
    return ServiceSpec(
        feature_service=name,
        features=features,
        entity_keys=[FieldSpec(k, t) for k, t in keys.items()],
        request_fields=[FieldSpec(k, t) for k, t in requests.items()],
        definitions=definitions,
        registry=registry,
        on_demand=on_demand,
    )


class _Document(JsonDocument):
    """A contract part: declared keys typed, unknown keys kept (a newer writer's)."""

    model_config = ConfigDict(extra="allow")


class FeatureContract(_Document):
    """The contract's feature part: what a training set was built from and a model needs."""

    feature_service: str
    fingerprint: str
    features: list[FeatureSpec]
    entity_keys: list[FieldSpec] = Field(default_factory=list)
    request_fields: list[FieldSpec] = Field(default_factory=list)
    definitions: dict[str, Any] = Field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


class Evaluation(_Document):
    """Metrics of scores against labels (``training.evaluation.metrics.evaluate_scores``); a model
    trained elsewhere may bring only its ROC AUC."""

    rows: int | None = None
    positives: int | None = None
    roc_auc: float
    pr_auc: float | None = None
    log_loss: float | None = None
    brier: float | None = None
    expected_calibration_error: float | None = None
    calibration: list[dict[str, Any]] = Field(default_factory=list)
    bayes_auc: float | None = None  # when the true probabilities are known (the demo)
    auc_to_bayes: float | None = None


class SliceCell(_Document):
    """ROC AUC of the holdout rows in one cell of a slice (``column`` = value), with its
    bootstrap interval; a cell with one class has a ``status`` and no AUC."""

    column: str
    value: str
    rows: int
    positives: int
    roc_auc: float | None = None
    low: float | None = None
    high: float | None = None
    status: str = "ok"


class Slices(_Document):
    """The holdout's ROC AUC overall and per slice cell, each with a bootstrap interval."""

    overall: SliceCell
    cells: list[SliceCell] = Field(default_factory=list)
    bootstrap: int
    level: float = 0.95


class InclusionRate(_Document):
    """One group's rate at the decision threshold, with its bootstrap interval."""

    rows: int
    positives: int
    rate: float | None = None
    low: float | None = None
    high: float | None = None


class InclusionGroup(_Document):
    """One group column: per rate (``selection_rate``, ``true_positive_rate``,
    ``false_positive_rate``), each group's value, and the smallest ÷ largest group ratio
    with its bootstrap interval ``[low, high]``."""

    rates: dict[str, dict[str, InclusionRate]]
    ratios: dict[str, float | None]
    ratio_intervals: dict[str, list[float | None]]


class Inclusion(_Document):
    """The inclusion groups' rates on the holdout at ``threshold`` (fairlearn)."""

    threshold: float
    bootstrap: int
    level: float = 0.95
    groups: dict[str, InclusionGroup] = Field(default_factory=dict)


class BaselineEvaluation(Evaluation):
    """A simple model's holdout metrics (``training.evaluation.baselines``): what the candidate
    must beat to be worth its complexity."""

    description: str
    train_rows: int  # the train-window rows it was fitted on (a seeded sample of a large one)
    feature: str | None = None  # the one feature a one-feature rule scores by


class ContractMetrics(_Document):
    holdout: Evaluation
    # Simple models on the same split, by name (logistic_regression, one_rule).
    baselines: dict[str, BaselineEvaluation] = Field(default_factory=dict)
    slices: Slices | None = None
    inclusion: Inclusion | None = None


class CostInterval(_Document):
    """A bootstrap interval of the expected cost per event."""

    low: float
    high: float
    level: float = 0.95
    resamples: int
    seed: int


class DecisionOutcome(_Document):
    """What the decision threshold does on one window: flags, misses and what they cost."""

    rows: int
    positives: int
    flagged: int
    missed_positives: int
    expected_cost: float
    expected_cost_per_event: float
    expected_cost_per_event_interval: CostInterval | None = None  # the holdout's


class DecisionPolicy(_Document):
    """The score at or above which an event is flagged, chosen to minimise the expected cost
    (``training.evaluation.decision``): a missed positive costs its amount (``amount_column``)
    or ``missed_cost``, every flagged event ``review_fee``."""

    threshold: float
    chosen_on: str = "validation"
    amount_column: str | None = None
    missed_cost: float | None = None
    review_fee: float
    validation: DecisionOutcome
    holdout: DecisionOutcome


class TrainingInfo(_Document):
    """What the model was trained on: the data set, the label cut-off and the time split."""

    dataset: str | None = None
    # The data set's identity, whatever its path: the file's sha256 and its row count.
    dataset_sha256: str | None = None
    dataset_rows: int | None = None
    # The code that trained it: the checkout's commit (``-dirty`` with uncommitted changes).
    git_commit: str | None = None
    cutoff: str | None = None
    windows: dict[str, str] = Field(default_factory=dict)
    rows: dict[str, int] = Field(default_factory=dict)
    positives: dict[str, int] = Field(default_factory=dict)
    # The experiment run whose parameters it was trained with (id, experiment, number).
    experiment_run: dict[str, int] | None = None


class Baseline(_Document):
    """The training rows' profile per feature and the holdout's scores: what drift is
    measured against."""

    features: dict[str, dict[str, Any]]
    holdout_scores: dict[str, Any] = Field(default_factory=dict)


class ModelInfo(_Document):
    """The artefact: its version, format, file name and the file's sha256."""

    version: str
    format: str = "lightgbm-text"
    file: str = "model.txt"
    sha256: str

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        """A file name in the artefact's own directory, so a contract cannot point the loader
        anywhere else."""
        # No separator of either kind means no absolute path either; a drive ("C:x") neither.
        if (not value or value in (".", "..") or any(c in value for c in "/\\\0")
                or PureWindowsPath(value).drive):
            raise ValueError(f"must be a plain file name in the artefact's directory (no path, "
                             f"no '/', '\\' or '..'), not {value[:200]!r}")
        return value


class Staleness(_Document):
    """How old the model may grow before its metric falls by ``margin`` below a fresh one's,
    as the latest ``skewless backtest`` of its feature service measured it when it was
    trained; ``at_least`` when no age within the backtest's horizon fell that far."""

    max_age_seconds: float
    at_least: bool = False
    margin: float
    metric: str
    backtest_at: str  # when the backtest's report was made
    report: str | None = None  # its path


class ModelContract(FeatureContract):
    """A trained model's ``contract.json``; ``model`` is set when the artefact is saved."""

    categories: dict[str, list[str]] = Field(default_factory=dict)
    label: str | None = None
    training: TrainingInfo | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    metrics: ContractMetrics | None = None
    # The cost-minimising threshold; None when no cost is configured (the predictor then
    # flags at SKEWLESS_DECISION_THRESHOLD).
    decision: DecisionPolicy | None = None
    baseline: Baseline | None = None
    feature_importance_gain: dict[str, float] = Field(default_factory=dict)
    libraries: dict[str, str] = Field(default_factory=dict)
    model: ModelInfo | None = None
    staleness: Staleness | None = None

    @property
    def version(self) -> str:
        if self.model is None:
            raise ValueError("the contract belongs to no saved artefact yet")
        return self.model.version


def service_summary(spec: ServiceSpec) -> FeatureContract:
    """The contract's feature part, as stored beside a model."""
    return FeatureContract(
        feature_service=spec.feature_service, fingerprint=spec.fingerprint,
        features=spec.features, entity_keys=spec.entity_keys,
        request_fields=spec.request_fields, definitions=spec.definitions,
    )


def contract_differences(contract: FeatureContract, spec: ServiceSpec) -> list[str]:
    """What differs between a stored contract and the current definitions (empty: agree)."""
    problems: list[str] = []
    if contract.feature_service != spec.feature_service:
        problems.append(
            f"feature service {contract.feature_service!r} != {spec.feature_service!r}"
        )
    stored = [(f.name, f.dtype) for f in contract.features]
    current = [(f.name, f.dtype) for f in spec.features]
    if stored != current:
        stored_map, current_map = dict(stored), dict(current)
        for name in stored_map.keys() - current_map.keys():
            problems.append(f"feature {name} is no longer served")
        for name in current_map.keys() - stored_map.keys():
            problems.append(f"feature {name} is served but the model was not trained on it")
        for name in stored_map.keys() & current_map.keys():
            if stored_map[name] != current_map[name]:
                problems.append(
                    f"feature {name} type {stored_map[name]} != served {current_map[name]}"
                )
        if not problems:
            problems.append("feature order differs")
    if current_fingerprint(contract) != spec.fingerprint:
        old = upgrade_definitions(contract.definitions).get("views", {})
        new = spec.definitions.get("views", {})
        changed = sorted(v for v in old.keys() | new.keys() if old.get(v) != new.get(v))
        problems.append(
            "definitions fingerprint differs"
            + (f" (changed views: {', '.join(changed)})" if changed else "")
        )
    return problems


def logging_destination(store: FeatureStore, feature_service: str,
                        override: Path | None = None) -> Path:
    """Where the feature service's served features are logged (its FileLoggingDestination);
    a relative destination is in the repo."""
    from skewless.feast_cli import in_repo
    from skewless.requirements import UnsupportedRepo, logging_destination_problem

    if override is not None:
        return override
    config = store.get_feature_service(feature_service).logging_config
    path = getattr(getattr(config, "destination", None), "path", None)
    if not path:
        raise UnsupportedRepo(
            f"cannot log served features: {logging_destination_problem(feature_service)}")
    return Path(in_repo(store.repo_path, path))
