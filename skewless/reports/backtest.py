"""The backtest's report: how fast a model goes stale, measured on past cut-offs.

``training/evaluation/backtest.py`` fills it (and renders it as HTML); the CLI prints it;
training reads the latest one's maximum useful age into the model's contract
(:class:`skewless.contract.Staleness`).
"""

from __future__ import annotations

from rich.console import Console

from skewless.documents import JsonDocument


class CutoffRun(JsonDocument):
    """One past cut-off: the model trained with the labels known then, and what it scored."""

    cutoff: str
    train_rows: int  # train + validation + holdout of the model's own time split
    train_positives: int
    holdout_metric: float  # on the model's own holdout, the weeks before the cut-off
    best_iteration: int
    evaluated_rows: int  # events in [cutoff, cutoff + horizon) with a label known now
    evaluated_positives: int


class AgePoint(JsonDocument):
    """The metric of the models at one age (whole days since their cut-off)."""

    age_days: int
    rows: int
    positives: int
    # Mean over the cut-offs whose events at this age hold both classes; null when none do.
    metric: float | None
    low: float | None  # the bootstrap's 95% interval of that mean
    high: float | None
    per_cutoff: list[float | None]  # in the order of ``cutoffs``


class BacktestReport(JsonDocument):
    """``var/backtest/<feature service>.json``: the decay curve and the maximum useful age.

    The cut-offs are c_k = T − k·step (k = 1..n), T = the latest event with a label known at
    ``labels_known_at``, minus the horizon. The model of c_k learns from the label events
    known at c_k (its own validation and holdout windows end at c_k); it is evaluated on the
    events in [c_k, c_k + horizon) with the labels known at ``labels_known_at``.
    """

    feature_service: str
    generated_at: str
    labels_known_at: str
    latest_labelled_event: str
    metric: str
    aggregation: str  # how a point pools the cut-offs
    step_days: float
    horizon_days: float
    margin: float
    bootstrap: int
    seed: int
    cutoffs: list[CutoffRun]
    curve: list[AgePoint]
    fresh: float  # the metric at age 0
    threshold: float  # fresh − margin
    max_age_days: float
    max_age_seconds: float
    at_least: bool  # no age fell below the threshold: the horizon is a lower bound
    seconds: float  # how long the backtest took


def describe_max_age(report: BacktestReport) -> str:
    days = f"{report.max_age_days:g} day{'s' if report.max_age_days != 1 else ''}"
    if report.at_least:
        return (f"at least {days}: no age within the {report.horizon_days:g}-day horizon fell "
                f"below {report.threshold:.4f}")
    return (f"{days}: at that age {report.metric} fell below {report.threshold:.4f} "
            f"(fresh {report.fresh:.4f} − margin {report.margin:g})")


def print_backtest(report: BacktestReport, console: Console) -> None:
    """The cut-offs, the curve (one row per age) and the maximum useful age."""
    from rich.table import Table

    runs = Table(title=f"{report.feature_service}: {len(report.cutoffs)} cut-offs, every "
                 f"{report.step_days:g} days, evaluated over {report.horizon_days:g} days")
    for column in ("cut-off", "trained on", "positives", f"own holdout {report.metric}",
                   "evaluated", "positives"):
        runs.add_column(column, justify="left" if column == "cut-off" else "right")
    for run in report.cutoffs:
        runs.add_row(run.cutoff[:16].replace("T", " "), f"{run.train_rows:,}",
                     f"{run.train_positives:,}", f"{run.holdout_metric:.4f}",
                     f"{run.evaluated_rows:,}", f"{run.evaluated_positives:,}")
    console.print(runs)
    curve = Table(title=f"{report.metric} by model age ({report.aggregation})")
    for column in ("age (days)", "rows", "positives", report.metric, "95% interval", ""):
        curve.add_column(column, justify="right")
    for point in report.curve:
        fell = point.metric is not None and point.metric < report.threshold
        curve.add_row(
            str(point.age_days), f"{point.rows:,}", f"{point.positives:,}",
            "—" if point.metric is None else f"{point.metric:.4f}",
            "" if point.low is None or point.high is None
            else f"{point.low:.4f}–{point.high:.4f}",
            "[red]below[/]" if fell else "")
    console.print(curve)
    console.print(f"maximum useful age: [bold]{describe_max_age(report)}[/]", soft_wrap=True)
