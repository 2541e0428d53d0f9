"""The monitor's report: drift, data quality and delayed-label performance per served version.

``training/monitor.py`` fills it (and renders it as HTML); the CLI prints it; ``/metrics``
reads its JSON. A key that applies only sometimes (a version's ``note``, its
``prediction_drift``, the ``retraining`` that ran) is left out of the JSON when it does not
apply, while a value that can be unknown (``production``, a test's ``p_value``) is written as
null: a part holds the keys it was given, and reading a file back keeps the keys it had.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field
from rich.console import Console

from skewless.documents import JsonDocument
from skewless.reports.rollout import Comparison, Decision, print_comparison

# Drift -------------------------------------------------------------------------------------


class Bins(JsonDocument):
    """Shares of the baseline and of serving in the bins ``edges`` make."""

    edges: list[float]
    baseline: list[float]
    serving: list[float]


class Categories(JsonDocument):
    """Shares of the baseline and of serving per category (the rest as ``(other)``)."""

    names: list[str]
    baseline: list[float]
    serving: list[float]


class FeatureDrift(JsonDocument):
    """One feature against its training baseline: PSI, and a test when the baseline allows."""

    kind: Literal["numeric", "categorical"]
    psi: float
    bins: Bins | None = None  # numeric
    categories: Categories | None = None  # categorical
    test: Literal["ks", "chi2"] | None
    statistic: float | None = None  # with a test
    p_value: float | None = None  # with a test; null when not finite
    note: str | None = None  # why there is no test
    drifted: bool = False
    importance: float | None = None  # share of the model's gain


class ScoreDrift(JsonDocument):
    """Served scores against the holdout's."""

    psi: float
    served_mean: float
    holdout_mean: float | None
    bins: Bins
    test: Literal["ks"] | None
    statistic: float | None = None
    p_value: float | None = None
    drifted: bool = False


class Drift(JsonDocument):
    features: dict[str, FeatureDrift]
    drifted: list[str]  # largest PSI first


# Data quality ------------------------------------------------------------------------------


class SchemaCheck(JsonDocument):
    missing: list[str]  # contract features not in the logs
    mistyped: list[str]  # "name: logged type, expected type"


class FeatureQuality(JsonDocument):
    """One feature's served values against the contract and the training baseline."""

    dtype: str
    rows: int
    null_rate: float
    baseline_null_rate: float | None
    missing_rate: float | None = None  # with Feast's per-value status logged
    missing: dict[str, int] | None = None  # status → count, PRESENT left out
    unseen_rate: float | None = None  # categorical
    training_range: list[float] | None = None  # numeric: [min, max]
    below_range: int | None = None
    above_range: int | None = None
    out_of_range_rate: float | None = None
    issues: list[str]
    # Each check made, by rule (null_rate, out_of_range, unseen_categories): True when it found
    # a problem. What the gauge skewless_monitor_quality_findings exports.
    rules: dict[str, bool] = Field(default_factory=dict)


class Quality(JsonDocument):
    model_config = ConfigDict(populate_by_name=True)

    schema_: SchemaCheck = Field(alias="schema")  # `schema` would shadow a BaseModel method
    features: dict[str, FeatureQuality]


# Delayed-label performance -----------------------------------------------------------------


class CalibrationBin(JsonDocument):
    count: int
    mean_predicted: float
    observed_rate: float


class Cell(JsonDocument):
    """Metrics of one cell (overall, a time bucket, a subgroup), or ``status`` saying why
    there are none."""

    start: str | None = None  # a time bucket's start
    labelled: int
    positives: int
    outstanding: int | None = None  # overall and time buckets: still waiting for a label
    status: str  # "ok", or why not
    roc_auc: float | None = None
    pr_auc: float | None = None
    threshold: float | None = None
    flagged: int | None = None
    precision: float | None = None  # null when nothing was flagged
    recall: float | None = None
    expected_calibration_error: float | None = None
    mean_score: float | None = None
    observed_rate: float | None = None
    calibration: list[CalibrationBin] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class OfflineOnline(JsonDocument):
    """A version's holdout figure (with its training-time 95% interval) beside the same
    figure on its delayed labels online."""

    metric: str  # roc_auc or expected_cost_per_event
    offline: float | None
    low: float | None
    high: float | None
    online: float | None  # None: too few labels, or what prices it is not logged
    online_low: float | None = None
    online_high: float | None = None
    labelled: int
    # The online figure outside the offline interval, beyond its own sampling noise: its
    # 95% interval and the offline one do not meet.
    outside: bool | None
    note: str | None = None


class Performance(JsonDocument):
    scored_events: int
    without_event_id: int
    overall: Cell
    buckets: list[Cell]
    subgroups: dict[str, dict[str, Cell]]  # subgroup → cell label → cell
    subgroups_not_logged: list[str] | None = None
    # The decisions' cost per labelled event, priced as the version's contract prices them.
    expected_cost_per_event: float | None = None
    # The version's holdout figures beside these (when it is registered).
    offline_online: list[OfflineOnline] | None = None


# The report --------------------------------------------------------------------------------


class VersionReport(JsonDocument):
    """One model version that served in the window."""

    version: str
    rows: int
    served_from: str
    served_to: str
    registered: bool
    stage: str | None
    note: str | None = None  # not in the registry: nothing to compare with
    top_features: list[str] | None = None
    quality: Quality | None = None
    drift: Drift | None = None
    prediction_drift: ScoreDrift | None = None
    performance: Performance | None = None

    @property
    def drifted(self) -> list[str]:
        return self.drift.drifted if self.drift is not None else []


class Window(JsonDocument):
    since: str
    until: str


class Thresholds(JsonDocument):
    psi: float
    p_value: float
    decision: float
    min_labels: int
    min_positives: int
    bucket_hours: float


class Policy(JsonDocument):
    psi_threshold: float
    top_features: int
    auc_floor: float
    min_labels: int


class Trigger(JsonDocument):
    """The retraining policy applied to the production version's findings."""

    retrain: bool
    reasons: list[str]
    policy: Policy
    note: str | None = None  # why the policy could not be judged
    version: str | None = None  # the version judged


class RetrainingWindow(JsonDocument):
    since: str
    cutoff: str


class Retraining(JsonDocument):
    """What a retraining did: its data, the candidate, the gate's verdict."""

    reasons: list[str]
    source: str
    dataset: str
    rows: int
    window: RetrainingWindow
    candidate: str
    training_holdout: dict[str, Any]
    outcome: Literal["promoted", "refused"] | None = None
    gate: dict[str, Any] | None = None
    explanation: str | None = None
    production: str | None = None


class RolloutPart(JsonDocument):
    comparison: Comparison
    decision: Decision


class MonitorReport(JsonDocument):
    feature_service: str
    log_dir: str
    window: Window
    labels_known_at: str
    generated_at: str
    rows: int
    production: str | None
    thresholds: Thresholds
    versions: list[VersionReport]
    registry: str | None = None  # why the registry could not be read
    findings: list[str]
    trigger: Trigger
    retraining: Retraining | None = None  # only when a retraining ran
    # The open rollout's challenger against production since it started, and what the
    # rollout policy would decide (`skewless rollout apply` acts on it).
    rollout: RolloutPart | None = None

    @classmethod
    def from_json(cls, doc: Any) -> MonitorReport:
        return cls.model_validate(doc)


def _offline(version: VersionReport, metric: str) -> str:
    """The holdout figure with its interval, marked when the online one falls outside it."""
    figures = version.performance.offline_online if version.performance is not None else None
    found = next((o for o in figures or [] if o.metric == metric), None)
    if found is None or found.offline is None:
        return "—"
    interval = (f" [{found.low:.3f}, {found.high:.3f}]"
                if found.low is not None and found.high is not None else "")
    return f"{found.offline:.3f}{interval}" + (" [red]✗[/]" if found.outside else "")


def print_monitor(report: MonitorReport, console: Console) -> None:
    """One row per version, the findings, and what the retraining policy says."""
    from rich.table import Table

    table = Table(title=f"{report.feature_service}: {report.rows:,} predictions served "
                  f"{report.window.since[:16]} to {report.window.until[:16]}")
    table.add_column("version", no_wrap=True)
    for column in ("rows", "drifted", "score PSI", "labels", "outstanding", "ROC AUC",
                   "holdout ROC AUC (95%)", "PR AUC", "cost/event", "holdout cost/event (95%)"):
        table.add_column(column, justify="right")
    table.caption = "* production; drifted features are listed below"
    for v in report.versions:
        overall = v.performance.overall if v.performance is not None else None
        table.add_row(
            v.version + (" *" if v.version == report.production else ""),
            f"{v.rows:,}", str(len(v.drifted)),
            f"{v.prediction_drift.psi:.3f}" if v.prediction_drift is not None else "—",
            f"{overall.labelled if overall else 0:,}",
            f"{(overall.outstanding or 0) if overall else 0:,}",
            f"{overall.roc_auc:.4f}" if overall and overall.ok else
            (overall.status if overall else "—"),
            _offline(v, "roc_auc"),
            f"{overall.pr_auc:.4f}" if overall and overall.ok else "",
            f"{v.performance.expected_cost_per_event:.3f}" if v.performance is not None
            and v.performance.expected_cost_per_event is not None else "—",
            _offline(v, "expected_cost_per_event"))
    console.print(table)
    for line in report.findings:
        console.print(f"  [yellow]•[/] {line}")
    if report.rollout is not None:
        print_comparison(report.rollout.comparison, report.rollout.decision, console)
    trigger = report.trigger
    if not trigger.retrain:
        console.print("[green]nothing calls for retraining[/]"
                      + (f" ({trigger.note})" if trigger.note else ""))
    elif report.retraining is None:
        console.print(f"[red]retraining is due[/]: {'; '.join(trigger.reasons)} "
                      "(run with --retrain to act on it)")
    else:
        done = report.retraining
        console.print(f"retrained ({done.outcome}): {done.explanation}; production is "
                      f"{done.production}")
