"""What the catalog says about each object: one set of models for the JSON API and the pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class JoinKey(BaseModel):
    name: str
    dtype: str


PRIVACY = Field(description="the privacy class (the Feast tag privacy): none, pseudonymous "
                "or personal; null when unclassified")


class EntityInfo(BaseModel):
    name: str
    description: str
    owner: str
    tags: dict[str, str]
    join_keys: list[JoinKey]
    url: str
    privacy: str | None = PRIVACY


class SourceInfo(BaseModel):
    name: str
    type: str = Field(description="Feast data source class, e.g. FileSource")
    path: str | None
    timestamp_field: str | None
    created_timestamp_column: str | None
    description: str


class RequestField(BaseModel):
    source: str
    name: str
    dtype: str
    description: str
    privacy: str | None = PRIVACY


class Transformation(BaseModel):
    mode: str = Field(description="Feast on-demand mode: python, pandas or substrait")
    code: str = Field(description="the transformation's source, as registered")
    inputs: list[str] = Field(description="feature references it reads (view:feature)")
    request_fields: list[RequestField]


class FeatureInfo(BaseModel):
    ref: str = Field(description="Feast feature reference, view:feature")
    view: str
    name: str
    kind: str = Field(description="batch (a feature view) or on_demand")
    dtype: str
    description: str
    owner: str = Field(description="the owner of its feature view")
    tags: dict[str, str]
    view_tags: dict[str, str]
    entities: list[str]
    join_keys: list[str]
    feature_services: list[str]
    url: str
    privacy: str | None = PRIVACY


class ViewInfo(BaseModel):
    name: str
    kind: str
    description: str
    owner: str
    tags: dict[str, str]
    entities: list[str]
    join_keys: list[str]
    features: list[str]
    ttl_seconds: int | None = Field(description="0: values never expire; null: on-demand")
    online: bool
    source: SourceInfo | None
    transformation: Transformation | None
    last_materialized: datetime | None = Field(
        description="end of the last materialization interval in the Feast registry")
    url: str


class ServiceInfo(BaseModel):
    name: str
    description: str
    owner: str
    tags: dict[str, str]
    features: list[str]
    views: list[str]
    logging_path: str | None
    url: str


class Facets(BaseModel):
    tags: list[str] = Field(description="key=value of every tag on a feature or its view")
    owners: list[str]
    entities: list[str]
    privacy: list[str] = Field(description="the features' privacy classes ('unclassified' for "
                               "those without one)")


class CatalogIndex(BaseModel):
    query: str
    tag: str | None
    owner: str | None
    entity: str | None
    privacy: str | None
    entities: list[EntityInfo]
    feature_views: list[ViewInfo]
    on_demand_feature_views: list[ViewInfo]
    feature_services: list[ServiceInfo]
    features: list[FeatureInfo]
    facets: Facets
    total_features: int
    stats_computed_at: datetime | None


class OnlineSample(BaseModel):
    sampled_at: datetime
    sample: int = 0
    found: int = 0
    age_seconds_min: float | None = None
    age_seconds_median: float | None = None
    age_seconds_max: float | None = None
    past_ttl: int = 0
    error: str | None = None


class Freshness(BaseModel):
    latest_event_offline: datetime | None
    earliest_event_offline: datetime | None
    offline_rows: int | None
    last_materialized: datetime | None
    online: OnlineSample | None
    objective_seconds: float | None = Field(
        None, description="how old its online values may be (the view's freshness-objective "
        "tag); null without one")
    objective_met: bool | None = Field(
        None, description="the sampled online values' median age within the objective")


class Histogram(BaseModel):
    edges: list[float]
    counts: list[int]
    integer: bool = Field(description="one bar per integer value")
    clipped: bool = Field(False, description="edges span p1–p99 of a long tail; the outer "
                          "bars hold the values beyond them")


class FeatureStatistics(BaseModel):
    computed_from: str = Field(description="offline source, or served logs of a service")
    computed_at: datetime
    kind: str
    count: int
    non_null: int
    nulls: int
    null_rate: float | None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float | None] | None = None
    distinct: int | None = None
    distinct_approx: int | None = None
    top_values: list[tuple[str, int]] | None = None
    other_count: int | None = None
    histogram: Histogram | None = None


class ModelRef(BaseModel):
    name: str
    version: str
    stage: str
    production: bool
    feature_service: str
    created_at: datetime
    holdout: dict[str, Any] = Field(description="holdout roc_auc and pr_auc at training")
    url: str


class Lineage(BaseModel):
    feature_service: str
    url: str
    models: list[ModelRef]


class MissingRate(BaseModel):
    rows: int
    missing: int
    missing_rate: float | None
    statuses: dict[str, int]
    since: datetime
    computed_at: datetime


class SkewResult(BaseModel):
    checked_at: datetime
    source: str = Field(description="served logs, or the online store")
    checked: int
    mismatches: int
    causes: dict[str, int]


class ServingHealth(BaseModel):
    feature_service: str
    missing: MissingRate | None
    skew: SkewResult | None


class ValidationFinding(BaseModel):
    feature: str
    rule: str
    count: int = Field(description="offending rows")
    examples: list[str]


class ValidationRun(BaseModel):
    """One check of the view's table against its expectations (`skewless validate`, or before
    `skewless materialize` or `skewless dataset`)."""

    at: datetime
    step: str
    status: str = Field(description="passed, failed (the step stopped) or accepted (failed, "
                                    "and the step went on)")
    rows: int | None
    newest_event: datetime | None
    reference_time: datetime
    actor: str
    reason: str | None = Field(description="why failures were accepted")
    findings: list[ValidationFinding]


class Expectations(BaseModel):
    schema_ref: str | None = Field(description="the view's `expectations` tag: module.schema "
                                               "in the feature repo; null without one")
    latest: ValidationRun | None
    history: list[ValidationRun] = Field(description="the latest runs, newest first")
    note: str | None = Field(None, description="why there is no result to show")


class FeatureDetail(BaseModel):
    feature: FeatureInfo
    view: ViewInfo
    entities: list[EntityInfo]
    freshness: Freshness
    statistics: FeatureStatistics | None
    histogram_url: str | None
    lineage: list[Lineage]
    serving: list[ServingHealth]
    snippet: str
    expectations: Expectations | None = Field(
        None, description="the view's latest validation, its findings limited to this feature")
    not_computed: dict[str, str] = Field(
        description="sections without data yet, and what makes them")


class ViewDetail(BaseModel):
    view: ViewInfo
    entities: list[EntityInfo]
    features: list[FeatureInfo]
    freshness: Freshness | None
    feature_services: list[str]
    expectations: Expectations | None = None


class EntityDetail(BaseModel):
    entity: EntityInfo
    feature_views: list[ViewInfo]
    features: list[FeatureInfo]


class ServiceDetail(BaseModel):
    service: ServiceInfo
    features: list[FeatureInfo]
    models: list[ModelRef]
    not_computed: dict[str, str]


class Importance(BaseModel):
    feature: str = Field(description="the model's input name")
    ref: str | None = Field(description="the catalog feature it is, when still registered")
    gain: float
    share: float


class ExperimentLink(BaseModel):
    """The experiment run a model version was trained from."""

    experiment: int
    run: int
    number: int = Field(description="the run's trial number within its experiment")
    url: str


class GateCriterion(BaseModel):
    name: str
    setting: str = Field(description="the setting that decides it")
    status: str = Field(description="pass, warn, fail or skipped")
    message: str
    evidence: dict[str, Any]


class GateVerdict(BaseModel):
    """One time the gate judged this version: a promotion (stored with its transition) or a
    refusal (audited)."""

    at: datetime
    actor: str
    outcome: str = Field(description="promoted, refused or forced")
    accepted: bool | None
    explanation: str | None = Field(description="the refusal's message")
    criteria: list[GateCriterion]


class RolloutInfo(BaseModel):
    """The latest rollout report (`skewless rollout status|apply`), on the page of a version
    it names: the challenger against production on the same events, and the decision."""

    role: str = Field(description="this version's part in it: challenger or production")
    challenger: str
    production: str | None
    stage: str | None = Field(description="the challenger's: shadow or canary")
    traffic_percent: float | None = Field(description="a canary's share of the traffic")
    started_at: datetime | None
    events: int = Field(description="events logged with both versions since it started")
    error_rate: float | None = Field(description="events without a usable challenger score")
    score_psi: float | None = Field(description="the challenger's scores against production's")
    agreement: float | None = Field(description="same decision, each at its own threshold")
    production_p99_ms: float | None = Field(description="production's model time per row, p99")
    challenger_p99_ms: float | None = Field(description="the challenger's model time per row, p99")
    labels: int | None = Field(description="compared events whose label arrived")
    roc_auc_difference: float | None = Field(description="challenger − production")
    roc_auc_low: float | None = Field(description="its paired bootstrap 95% interval")
    roc_auc_high: float | None
    action: str = Field(description="the policy's decision: none, wait, abort, promote, hold")
    reasons: list[str]
    gate: str | None = Field(description="the acceptance gate's refusal, when held")
    applied: bool = Field(description="the registry was changed (or the hold audited)")
    command: str = Field(description="the report's command: status or apply")
    generated_at: datetime | None


class ModelDetail(BaseModel):
    model: ModelRef
    fingerprint: str
    sha256: str
    artifact_uri: str
    created_by: str
    metrics: dict[str, Any]
    training_window: dict[str, Any]
    features: list[FeatureInfo]
    unregistered_features: list[str] = Field(
        description="inputs of the model that the Feast registry no longer holds")
    importance: list[Importance] | None
    importance_url: str | None
    experiment: ExperimentLink | None = Field(
        description="the experiment run it was trained from, when it came from a search")
    gate: list[GateVerdict] = Field(
        description="the acceptance gate's verdicts on this version, newest first")
    decision: dict[str, Any] | None = Field(
        description="the cost-optimal decision threshold chosen at training, with its costs")
    staleness: dict[str, Any] | None = Field(
        description="the maximum useful age the latest backtest found when it was trained")
    rollout: RolloutInfo | None = Field(
        default=None, description="the latest rollout report, when it names this version as "
        "its challenger or its production version")
    not_computed: dict[str, str]


class RunCounts(BaseModel):
    complete: int
    pruned: int
    failed: int


class ExperimentSummary(BaseModel):
    id: int
    name: str
    feature_service: str
    state: str = Field(description="running, complete (best run registered) or failed")
    metric: str = Field(description="maximised on the validation window")
    seed: int
    trials: int = Field(description="trials asked for")
    runs: RunCounts = Field(description="runs recorded, by state")
    best_run: int | None = Field(description="the best run's id")
    best_number: int | None = Field(description="the best run's trial number")
    best_value: float | None
    model_version: str | None = Field(description="registered from the best run")
    model_url: str | None
    started_at: datetime
    finished_at: datetime | None
    url: str


class ExperimentIndex(BaseModel):
    feature_service: str | None = Field(description="the filter, when one was given")
    experiments: list[ExperimentSummary] = Field(description="newest first")


class ExperimentRunInfo(BaseModel):
    id: int
    number: int = Field(description="the trial's number within the search")
    state: str = Field(description="complete, pruned or failed")
    best: bool
    value: float | None = Field(
        description="the validation metric: at the best round, or at the last round judged "
                    "for a pruned run")
    params: dict[str, Any] = Field(description="the searched parameters")
    rounds: int | None = Field(description="boosting rounds run, early stopping's included")
    best_iteration: int | None = Field(description="the round the value was taken at")
    metrics: dict[str, Any]
    steps: dict[str, list[float | None]] = Field(
        description="LightGBM's validation metric per boosting round")
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    error: str | None


class ParameterImportance(BaseModel):
    parameter: str
    importance: float = Field(description="Optuna's (fANOVA), the parameters' sum is 1")


class DatasetInfo(BaseModel):
    uri: str
    sha256: str
    rows: int


class ExperimentDetail(BaseModel):
    experiment: ExperimentSummary
    search: dict[str, Any] = Field(description="sampler, pruner, search space, fixed parameters")
    dataset: DatasetInfo
    windows: dict[str, Any]
    git_commit: str | None
    libraries: dict[str, Any]
    created_by: str
    holdout: dict[str, Any] | None = Field(
        description="the registered model's holdout metrics")
    error: str | None
    parameters: list[str] = Field(description="the searched parameters, in the space's order")
    runs: list[ExperimentRunInfo] = Field(description="by trial number")
    importances: list[ParameterImportance] | None = Field(description="largest first")
    not_computed: dict[str, str] = Field(
        description="sections without data yet, and why")


class JobRunInfo(BaseModel):
    id: int
    job: str
    slot: datetime = Field(description="the scheduled time the run belongs to")
    trigger: str = Field(description="schedule (a worker) or manual (`skewless jobs run`)")
    worker: str = Field(description="host:pid of the worker that ran it")
    started_at: datetime
    ended_at: datetime | None
    seconds: float | None
    outcome: str = Field(description="running, succeeded, failed, timed_out, interrupted, "
                                     "skipped (its previous slot still ran) or abandoned")
    attempts: int
    error: str | None = Field(description="the last attempt's error: its exit and last lines")
    produced: dict[str, Any] | None = Field(
        description="what it produced: a report's path, a registered version, counts")


class JobSchedule(BaseModel):
    job: str
    does: str
    schedule: str = Field(description="cron (UTC), every N[s|m|h|d], or off")
    setting: str = Field(description="the environment variable that sets it")
    next_slot: datetime | None
    last_success: JobRunInfo | None
    last_run: JobRunInfo | None = Field(description="the latest run that ended")


class JobsIndex(BaseModel):
    job: str | None = Field(description="the filter, when one was given")
    jobs: list[JobSchedule] = Field(description="in the loop's order")
    runs: list[JobRunInfo] = Field(description="the latest runs first")
