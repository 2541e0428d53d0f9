"""`skewless monitor`: how the served models' inputs, scores and outcomes compare with training.

Over a window of the served-feature log, for each model version that served in it:

- **data quality**: the logged columns against the model's contract (present, of its type),
  served null and missing rates (Feast's per-value status) against the training baseline's
  null rate, and the share of values outside the training range (or unseen categories);
- **feature drift** against the baseline stored with the model at training time: PSI on the
  quantile bins fixed then, with a two-sample KS test (numeric, against the baseline's value
  sample) or a chi-squared test (categorical, against its frequencies); a feature drifted when
  its PSI reaches ``monitor_psi_threshold`` and its test is significant at ``monitor_p_value``;
- **prediction drift**: the served scores against the holdout's (PSI on the holdout's score
  quantiles, KS against its score sample);
- **delayed-label performance**: the labels known now, joined by event id (the first scoring
  of an event by a version counts), give ROC AUC, PR AUC, precision and recall at
  ``decision_threshold`` and calibration, overall, per time bucket and per subgroup; a cell
  with fewer than ``monitor_min_labels`` labels or ``monitor_min_positives`` positives is
  reported as too small, and the predictions still waiting for a label are counted.

The retraining policy is judged on the production version: any of its ``retrain_top_features``
most important features drifted, or its ROC AUC below ``retrain_auc_floor`` on at least
``retrain_min_labels`` labels. :func:`retrain` acts on it: a training set of the last
``retrain_window_days`` (point-in-time through Feast, or from the served logs), LightGBM, the
acceptance gate, promotion, and an audit event that records all of it.

The report's shape, its JSON and its terminal view are in :mod:`skewless.reports.monitor`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from scipy import stats as sps
from sklearn.metrics import average_precision_score, roc_auc_score

from skewless.contract import FeatureSpec
from skewless.errors import SkewlessError
from skewless.files import write_json_atomic, write_text_atomic
from skewless.reports.monitor import (
    Bins,
    CalibrationBin,
    Categories,
    Cell,
    Drift,
    FeatureDrift,
    FeatureQuality,
    MonitorReport,
    OfflineOnline,
    Performance,
    Policy,
    Quality,
    Retraining,
    RolloutPart,
    SchemaCheck,
    ScoreDrift,
    Thresholds,
    Trigger,
    VersionReport,
)
from skewless.reports.monitor import Window as ReportWindow
from skewless.settings import Settings
from training.backfill import accepts
from training.evaluation.metrics import bin_shares, calibration_table
from training.evaluation.slices import Subgroup, disaggregate
from training.served import LOG_TIMESTAMP, REQUEST_ID, load_served

ACTOR = "skewless monitor"
PSI_FLOOR = 1e-4  # a bin share of 0 would make PSI infinite
SCORE_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)  # the holdout score quantiles kept
OTHER = "(other)"


class MonitorError(SkewlessError):
    """The monitor could not run (no logs, no registry, a bad subgroup)."""


# Statistics ----------------------------------------------------------------------------


def psi(expected: Iterable[float], actual: Iterable[float]) -> float:
    """Population stability index of two share vectors over the same bins."""
    e = np.clip(np.asarray(list(expected), dtype=float), PSI_FLOOR, None)
    a = np.clip(np.asarray(list(actual), dtype=float), PSI_FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def numeric_drift(values: np.ndarray, base: dict[str, Any]) -> FeatureDrift:
    """PSI on the baseline's bins, and KS against its sample when it holds one."""
    edges = base["psi_bin_edges"]
    served = bin_shares(values, edges)
    bins = Bins(edges=edges, baseline=base["psi_bin_shares"], serving=served)
    drift = psi(base["psi_bin_shares"], served)
    sample = base.get("sample")
    if sample and values.size:
        ks = sps.ks_2samp(values, np.asarray(sample, dtype=float))
        return FeatureDrift(kind="numeric", psi=drift, bins=bins, test="ks",
                            statistic=float(ks.statistic), p_value=_finite(ks.pvalue))
    return FeatureDrift(kind="numeric", psi=drift, bins=bins, test=None,
                        note="the baseline holds no value sample (trained before monitoring "
                        "kept one): PSI only")


def categorical_drift(counts: dict[str, int], base: dict[str, Any]) -> FeatureDrift:
    """PSI and a chi-squared test over the baseline's categories (the rest as one)."""
    frequencies: dict[str, float] = base.get("frequencies", {})
    categories = list(frequencies)
    expected = [frequencies[c] for c in categories]
    rest = max(0.0, 1.0 - sum(expected))
    observed = [counts.get(c, 0) for c in categories]
    others = sum(n for c, n in counts.items() if c not in frequencies)
    if rest > 0 or others:
        categories.append(OTHER)
        expected.append(rest)
        observed.append(others)
    total = sum(observed)
    served = [n / total if total else 0.0 for n in observed]
    shares = Categories(names=categories, baseline=expected, serving=served)
    drift = psi(expected, served)
    if not total:
        return FeatureDrift(kind="categorical", psi=drift, categories=shares, test=None)
    floor = np.clip(np.asarray(expected), PSI_FLOOR, None)
    chi = sps.chisquare(observed, floor / floor.sum() * total)
    return FeatureDrift(kind="categorical", psi=drift, categories=shares, test="chi2",
                        statistic=float(chi.statistic), p_value=_finite(chi.pvalue))


def score_drift(scores: np.ndarray, holdout: dict[str, Any]) -> ScoreDrift:
    """Served scores against the holdout's: PSI on its quantile bins, KS on its sample."""
    quantiles = holdout.get("quantiles", {})
    levels = [q for q in SCORE_LEVELS if str(q) in quantiles]
    edges: list[float] = []
    shares: list[float] = []
    previous = 0.0
    for level in levels:
        edge = quantiles[str(level)]
        if edges and edge == edges[-1]:  # tied quantiles: one bin
            shares[-1] += level - previous
        else:
            edges.append(edge)
            shares.append(level - previous)
        previous = level
    shares.append(1.0 - previous)
    served = bin_shares(scores, edges)
    drift = ScoreDrift(psi=psi(shares, served), served_mean=float(scores.mean()),
                       holdout_mean=holdout.get("mean"),
                       bins=Bins(edges=edges, baseline=shares, serving=served), test=None)
    sample = holdout.get("sample")
    if sample:
        ks = sps.ks_2samp(scores, np.asarray(sample, dtype=float))
        drift.test = "ks"
        drift.statistic, drift.p_value = float(ks.statistic), _finite(ks.pvalue)
    return drift


@dataclass(frozen=True)
class CellPolicy:
    threshold: float
    min_labels: int
    min_positives: int


def performance_cell(y: np.ndarray, p: np.ndarray, policy: CellPolicy,
                     outstanding: int | None = None, start: str | None = None) -> Cell:
    """Metrics of one cell, or why it has none (too few labels or positives, one class)."""
    n, positives = int(y.size), int(y.sum())
    cell: dict[str, Any] = {"labelled": n, "positives": positives}
    if start is not None:
        cell["start"] = start
    if outstanding is not None:
        cell["outstanding"] = outstanding
    if n < policy.min_labels:
        return Cell(**cell, status=f"fewer than {policy.min_labels} labels")
    if positives < policy.min_positives or positives == n:
        return Cell(**cell, status=f"fewer than {policy.min_positives} positives"
                    if positives < policy.min_positives else "a single class")
    acted = p >= policy.threshold
    hits = int((acted & (y == 1)).sum())
    table = calibration_table(y, p)
    return Cell(
        **cell, status="ok",
        roc_auc=float(roc_auc_score(y, p)),
        pr_auc=float(average_precision_score(y, p)),
        threshold=policy.threshold,
        flagged=int(acted.sum()),
        precision=hits / int(acted.sum()) if acted.any() else None,
        recall=hits / positives,
        expected_calibration_error=sum(
            r["count"] * abs(r["mean_predicted"] - r["observed_rate"]) for r in table) / n,
        mean_score=float(p.mean()), observed_rate=positives / n,
        calibration=[CalibrationBin.model_validate(r) for r in table],
    )


# The run -------------------------------------------------------------------------------


@dataclass
class Window:
    since: datetime
    until: datetime
    labels_known_at: datetime


def default_window(settings: Settings, since: datetime | None, until: datetime | None,
                   now: datetime | None = None) -> Window:
    now = now or datetime.now(UTC)
    until = until or now
    return Window(since or until - timedelta(days=settings.monitor_window_days), until, now)


def _versions(settings: Settings) -> tuple[dict[str, Any], str | None, str | None]:
    """Registered versions of the feature service (version → row), production, and why not."""
    from skewless.registry import Registry, RegistryError

    try:
        registry = Registry.from_settings(settings)
    except RegistryError as exc:
        return {}, None, str(exc)
    try:
        rows = {r.version: r for r in registry.versions(settings.feature_service)}
        return rows, registry.production_version(settings.feature_service), None
    finally:
        registry.close()


def _values(column: pa.ChunkedArray) -> np.ndarray:
    """The non-null values of a numeric column as floats."""
    return pc.cast(pc.drop_null(column), pa.float64()).to_numpy(zero_copy_only=False)


def _quality(settings: Settings, name: str, dtype: str, column: pa.ChunkedArray,
             status: pa.ChunkedArray | None, base: dict[str, Any],
             categories: list[str] | None) -> FeatureQuality:
    rows = len(column)
    nulls = column.null_count
    out: dict[str, Any] = {"dtype": dtype, "rows": rows, "null_rate": nulls / rows if rows else 0.0,
                           "baseline_null_rate": base.get("null_rate")}
    if status is not None:
        counts = pc.value_counts(status).to_pylist()
        statuses = {FieldStatus.Name(int(c["values"])): int(c["counts"]) for c in counts
                    if c["values"] is not None}
        present = statuses.pop("PRESENT", 0)
        out["missing_rate"] = (rows - present) / rows if rows else 0.0
        out["missing"] = statuses
    if categories is not None:
        known = pc.is_in(pc.drop_null(column), value_set=pa.array(categories, pa.string()))
        unseen = int(len(known) - pc.sum(known).as_py()) if len(known) else 0
        out["unseen_rate"] = unseen / rows if rows else 0.0
        out["out_of_range_rate"] = out["unseen_rate"]
    elif "min" in base:
        values = _values(column)
        below, above = int((values < base["min"]).sum()), int((values > base["max"]).sum())
        out.update(training_range=[base["min"], base["max"]],
                   below_range=below, above_range=above,
                   out_of_range_rate=(below + above) / rows if rows else 0.0)
    issues = []
    rules: dict[str, bool] = {}
    if base.get("null_rate") is not None:
        rules["null_rate"] = out["null_rate"] - base["null_rate"] > settings.monitor_null_tolerance
        if rules["null_rate"]:
            issues.append(f"null rate {out['null_rate']:.1%} vs {base['null_rate']:.1%} in "
                          "training")
    if "out_of_range_rate" in out:
        rule = "unseen_categories" if categories is not None else "out_of_range"
        rules[rule] = out["out_of_range_rate"] > settings.monitor_out_of_range_tolerance
        if rules[rule]:
            what = "unseen categories" if categories is not None else "outside the training range"
            issues.append(f"{out['out_of_range_rate']:.1%} {what}")
    return FeatureQuality(**out, issues=issues, rules=rules)


def _feature_drift(settings: Settings, spec: FeatureSpec, column: pa.ChunkedArray,
                   base: dict[str, Any]) -> FeatureDrift | None:
    if spec.is_categorical:
        if "frequencies" not in base:
            return None
        counts = {str(c["values"]): int(c["counts"])
                  for c in pc.value_counts(pc.drop_null(pc.cast(column, pa.string()))).to_pylist()}
        drift = categorical_drift(counts, base)
    else:
        if "psi_bin_edges" not in base:
            return None
        values = _values(column)
        if not values.size:
            return None
        drift = numeric_drift(values, base)
    p_value = drift.p_value
    drift.drifted = bool(drift.psi >= settings.monitor_psi_threshold
                         and (drift.test is None
                              or (p_value is not None and p_value < settings.monitor_p_value)))
    return drift


def _version_report(settings: Settings, version: str, served: pa.Table, row: Any) -> VersionReport:
    stamps = served[LOG_TIMESTAMP]
    out = VersionReport(
        version=version, rows=served.num_rows,
        served_from=pc.min(stamps).as_py().isoformat(),
        served_to=pc.max(stamps).as_py().isoformat(),
        registered=row is not None, stage=row.stage if row is not None else None,
    )
    if row is None:
        out.note = ("not in the registry: no contract or baseline to compare with "
                    "(served with SKEWLESS_MODEL_PATH?)")
        return out
    contract = row.contract
    baseline = row.baseline or {}
    gain = contract.feature_importance_gain
    total_gain = sum(gain.values()) or 1.0
    out.top_features = sorted(gain, key=lambda f: -gain[f])[:settings.retrain_top_features]
    schema_missing, schema_mistyped = [], []
    quality: dict[str, FeatureQuality] = {}
    drift: dict[str, FeatureDrift] = {}
    for spec in contract.features:
        name, dtype = spec.name, spec.dtype
        if name not in served.column_names:
            schema_missing.append(name)
            continue
        column = served[name]
        if not accepts(dtype, column.type):
            schema_mistyped.append(f"{name}: {column.type} logged, {dtype} expected")
            continue
        base = baseline.get("features", {}).get(name, {})
        status_column = f"{name}__status"
        quality[name] = _quality(
            settings, name, dtype, column,
            served[status_column] if status_column in served.column_names else None, base,
            contract.categories.get(name) if spec.is_categorical else None)
        result = _feature_drift(settings, spec, column, base)
        if result is not None:
            result.importance = gain.get(name, 0.0) / total_gain
            drift[name] = result
    out.quality = Quality(schema=SchemaCheck(missing=schema_missing, mistyped=schema_mistyped),
                          features=quality)
    out.drift = Drift(features=drift,
                      drifted=sorted((f for f, d in drift.items() if d.drifted),
                                     key=lambda f: -drift[f].psi))
    holdout = baseline.get("holdout_scores")
    if holdout and served.num_rows:
        scores = served["score"].to_numpy(zero_copy_only=False).astype(float)
        prediction = score_drift(scores, holdout)
        prediction.drifted = prediction.psi >= settings.monitor_psi_threshold
        out.prediction_drift = prediction
    return out


def labelled_events(settings: Settings, served: pa.Table, known_at: datetime,
                    extra: list[str], per: tuple[str, ...] = ("model_version",)) -> pa.Table:
    """Each event (per ``per`` columns: by default each (version, event)) scored in the
    window once — its first scoring — with its label when known at ``known_at`` (null when
    still outstanding); in the order they were served, so a bootstrap over them repeats."""
    import duckdb

    from training.dataset import LabelSource, check_unique_labels, first_scorings, ident

    source = LabelSource.from_settings(settings)
    key = ident(source.id_column)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        check_unique_labels(con, source)
        first_scorings(con, served, source.id_column, ["score", *extra], per=list(per))
        return con.sql(
            f"""WITH known AS (
                    SELECT CAST({key} AS VARCHAR) AS label_key,
                           CAST({ident(source.label_column)} AS INTEGER) AS label
                    FROM read_parquet(?)
                    WHERE CAST({ident(source.label_timestamp_column)} AS TIMESTAMPTZ) <= ?)
                SELECT f.*, k.label AS "__label" FROM firsts f
                LEFT JOIN known k ON CAST(f.{key} AS VARCHAR) = k.label_key
                ORDER BY f."{LOG_TIMESTAMP}", f."{REQUEST_ID}" """,
            params=[str(source.labels_path), known_at]).to_arrow_table()
    finally:
        con.close()


def _performance(settings: Settings, served: pa.Table, window: Window,
                 subgroups: list[Subgroup], contracts: dict[str, Any] | None = None,
                 ) -> dict[str, Performance]:
    """Delayed-label performance per version: overall, per time bucket, per subgroup; each
    version's decisions at its own threshold (its contract's, else the setting), and its
    expected cost per event when its contract prices decisions."""
    id_column = settings.event_id_column
    if id_column not in served.column_names:
        return {}
    contracts = contracts or {}
    present = [g for g in subgroups if g.column in served.column_names]
    amount = settings.decision_amount_column
    logged_amount = amount if amount and amount in served.column_names else None
    joined = labelled_events(settings, served, window.labels_known_at,
                       list(dict.fromkeys([*(g.column for g in present),
                                           *([logged_amount] if logged_amount else [])])))
    versions = np.asarray(joined["model_version"].to_numpy(zero_copy_only=False), dtype=object)
    label_column = joined["__label"]
    has_label = np.asarray(pc.is_valid(label_column).to_numpy(zero_copy_only=False), dtype=bool)
    y_all = pc.fill_null(label_column, 0).to_numpy(zero_copy_only=False).astype(int)
    p_all = joined["score"].to_numpy(zero_copy_only=False).astype(float)
    stamps = pc.cast(joined[LOG_TIMESTAMP], pa.int64()).to_numpy(zero_copy_only=False)
    bucket_us = int(settings.monitor_bucket_hours * 3_600_000_000)
    buckets = stamps // bucket_us * bucket_us
    groups = {g.name: (g, g.checked(g.labels(joined[g.column]))) for g in present}
    without_id = _without_event_id(served, id_column)
    missing = [g.column for g in subgroups if g.column not in served.column_names]
    out: dict[str, Performance] = {}
    amounts = (pc.fill_null(pc.cast(joined[logged_amount], pa.float64()), 0.0)
               .to_numpy(zero_copy_only=False) if logged_amount else None)
    for version in sorted(set(versions.tolist())):
        mine = versions == version
        scored = mine & has_label
        y, p = y_all[scored], p_all[scored]
        decision = getattr(contracts.get(version), "decision", None)
        policy = CellPolicy(decision.threshold if decision else settings.decision_threshold,
                            settings.monitor_min_labels, settings.monitor_min_positives)
        report = Performance(
            scored_events=int(mine.sum()),
            without_event_id=without_id.get(version, 0),
            overall=performance_cell(y, p, policy, int((mine & ~has_label).sum())),
            buckets=[
                performance_cell(y_all[scored & (buckets == b)], p_all[scored & (buckets == b)],
                                 policy, int((mine & ~has_label & (buckets == b)).sum()),
                                 start=datetime.fromtimestamp(int(b) / 1e6, UTC).isoformat())
                for b in np.unique(buckets[mine])],
            subgroups={name: _subgroup_cells(y, p, cells[scored], group, policy)
                       for name, (group, cells) in groups.items()},
        )
        if missing:
            report.subgroups_not_logged = missing
        online = _online_figures(y, p, decision, amounts[scored] if amounts is not None
                                 else None, settings.evaluation_bootstrap, settings.seed
                                 ) if report.overall.ok else {}
        if "expected_cost_per_event" in online:
            report.expected_cost_per_event = online["expected_cost_per_event"][0]
        if version in contracts:
            report.offline_online = offline_online(contracts[version], report.overall, online)
        out[version] = report
    return out


def _online_figures(y: np.ndarray, p: np.ndarray, decision: Any, amounts: np.ndarray | None,
                    bootstrap: int, seed: int) -> dict[str, tuple[float, float, float]]:
    """The version's online ROC AUC and, when its contract prices decisions (and what prices
    them is logged), its expected cost per event — each with a bootstrap 95% interval, by
    the same code that measured them on the holdout at training."""
    from training.evaluation.decision import outcome
    from training.evaluation.slices import slice_metrics

    out: dict[str, tuple[float, float, float]] = {}
    overall = slice_metrics(y, p, pd.DataFrame(index=range(y.size)), [], bootstrap, seed).overall
    if overall.roc_auc is not None and overall.low is not None and overall.high is not None:
        out["roc_auc"] = (overall.roc_auc, overall.low, overall.high)
    if decision is None or (decision.amount_column is not None and amounts is None):
        return out
    missed = (np.clip(amounts, 0.0, None) if decision.amount_column is not None and
              amounts is not None else np.full(y.size, float(decision.missed_cost or 0.0)))
    cost = outcome(p, y, missed, decision.threshold, decision.review_fee, bootstrap, seed)
    interval = cost.expected_cost_per_event_interval
    if interval is not None:
        out["expected_cost_per_event"] = (cost.expected_cost_per_event, interval.low,
                                          interval.high)
    return out


def offline_online(contract: Any, cell: Cell,
                   online: dict[str, tuple[float, float, float]]) -> list[OfflineOnline]:
    """A version's holdout figures (ROC AUC, expected cost per event, with their training-time
    intervals) beside its delayed-label online ones (with theirs); ``outside`` when the two
    intervals do not meet — the online figure is off the holdout's beyond both samples'
    noise, so a steady world stays quiet while a decayed model is flagged."""
    out: list[OfflineOnline] = []
    metrics = contract.metrics
    overall = metrics.slices.overall if metrics is not None and metrics.slices else None
    labelled = cell.labelled
    offline: list[tuple[str, float | None, float | None, float | None]] = []
    if overall is not None:
        offline.append(("roc_auc", overall.roc_auc, overall.low, overall.high))
    decision = getattr(contract, "decision", None)
    if decision is not None:
        interval = decision.holdout.expected_cost_per_event_interval
        offline.append(("expected_cost_per_event", decision.holdout.expected_cost_per_event,
                        interval.low if interval else None, interval.high if interval else None))
    for metric, value, low, high in offline:
        figure = online.get(metric)
        note = None
        if figure is None and cell.ok and decision is not None and metric != "roc_auc":
            note = f"{decision.amount_column} is not in the served log"
        out.append(OfflineOnline(
            metric=metric, offline=value, low=low, high=high,
            online=figure[0] if figure else None, online_low=figure[1] if figure else None,
            online_high=figure[2] if figure else None, labelled=labelled,
            outside=None if figure is None or low is None or high is None
            else bool(figure[2] < low or figure[1] > high), note=note))
    return out


def _subgroup_cells(y: np.ndarray, p: np.ndarray, cells: np.ndarray, group: Subgroup,
                    policy: CellPolicy) -> dict[str, Cell]:
    """One performance cell per subgroup value: the disaggregation slices and inclusion
    groups use, with the monitor's cell as its metric."""
    if not y.size:
        return {}
    frame = disaggregate(y, p, cells, {"cell": lambda yy, pp: performance_cell(yy, pp, policy)})
    return {str(value): frame.by_group.loc[value, "cell"]
            for value in group.ordered(set(cells.tolist()))}


def _without_event_id(served: pa.Table, id_column: str) -> dict[str, int]:
    """Rows without an event id, per version."""
    nulls = served.filter(pc.is_null(served[id_column]))
    if not nulls.num_rows:
        return {}
    return {c["values"]: c["counts"] for c in pc.value_counts(nulls["model_version"]).to_pylist()}


def judge(settings: Settings, production: str | None, versions: list[VersionReport]) -> Trigger:
    """The retraining policy, applied to the production version's findings."""
    policy = Policy(psi_threshold=settings.monitor_psi_threshold,
                    top_features=settings.retrain_top_features,
                    auc_floor=settings.retrain_auc_floor, min_labels=settings.retrain_min_labels)
    entry = next((v for v in versions if v.version == production), None)
    if entry is None:
        return Trigger(retrain=False, reasons=[], policy=policy,
                       note=f"the production version ({production or 'none'}) served nothing "
                       "in the window")
    reasons = []
    drifted = set(entry.drifted)
    top = [f for f in entry.top_features or [] if f in drifted]
    if top and entry.drift is not None:
        features = entry.drift.features
        reasons.append(f"PSI ≥ {settings.monitor_psi_threshold:g} on top feature"
                       f"{'s' if len(top) > 1 else ''} " + ", ".join(
                           f"{f} ({features[f].psi:.3f})" for f in top))
    overall = entry.performance.overall if entry.performance is not None else None
    if overall is not None and overall.ok and overall.roc_auc is not None \
            and overall.labelled >= settings.retrain_min_labels \
            and overall.roc_auc < settings.retrain_auc_floor:
        reasons.append(f"ROC AUC {overall.roc_auc:.4f} < {settings.retrain_auc_floor:g} on "
                       f"{overall.labelled:,} labels")
    return Trigger(retrain=bool(reasons), reasons=reasons, policy=policy, version=production)


def monitor(settings: Settings, window: Window, log_dir: Path | None = None,
            store: Any = None) -> MonitorReport:
    """Every finding over the window, as one report."""
    from skewless.contract import logging_destination
    from training.dataset import open_store

    subgroups = [Subgroup.parse(s) for s in settings.slices]
    if log_dir is None:
        store = store or open_store(settings)
        log_dir = logging_destination(store, settings.feature_service, settings.feature_log_dir)
    rows, production, registry_problem = _versions(settings)
    columns = [settings.event_id_column, REQUEST_ID, "model_version", "score",
               *(g.column for g in subgroups),
               *([settings.decision_amount_column] if settings.decision_amount_column else [])]
    for row in rows.values():
        for f in row.contract.features:
            columns += [f.name, f"{f.name}__status"]
    served = load_served(log_dir, window.since, window.until, columns=columns)
    entries: list[VersionReport] = []
    if served.num_rows:
        contracts = {v: row.contract for v, row in rows.items()}
        performance = _performance(settings, served, window, subgroups, contracts)
        versions = served["model_version"]
        for version in sorted(pc.unique(versions).drop_null().to_pylist()):
            part = served.filter(pc.equal(versions, version))
            entry = _version_report(settings, version, part, rows.get(version))
            if version in performance:
                entry.performance = performance[version]
            entries.append(entry)
    report = MonitorReport(
        feature_service=settings.feature_service, log_dir=str(log_dir),
        window=ReportWindow(since=window.since.isoformat(), until=window.until.isoformat()),
        labels_known_at=window.labels_known_at.isoformat(),
        generated_at=datetime.now(UTC).isoformat(), rows=served.num_rows,
        production=production,
        thresholds=Thresholds(psi=settings.monitor_psi_threshold,
                              p_value=settings.monitor_p_value,
                              decision=settings.decision_threshold,
                              min_labels=settings.monitor_min_labels,
                              min_positives=settings.monitor_min_positives,
                              bucket_hours=settings.monitor_bucket_hours),
        versions=entries, findings=findings(entries),
        trigger=judge(settings, production, entries),
    )
    if registry_problem:
        report.registry = registry_problem
    else:
        report.rollout = _rollout(settings, log_dir, window.labels_known_at)
    return report


def _rollout(settings: Settings, log_dir: Path, known_at: datetime) -> RolloutPart | None:
    """The open rollout of the feature service's model, compared as `skewless rollout
    status` does (None when there is none)."""
    from skewless.registry import Registry, RegistryError
    from training.rollout import compare, judge

    registry = Registry.from_settings(settings)
    try:
        comparison = compare(settings, registry, log_dir=log_dir, now=known_at)
    except RegistryError:  # no version of the model registered: no rollout
        return None
    finally:
        registry.close()
    if comparison.challenger is None:
        return None
    return RolloutPart(comparison=comparison, decision=judge(settings, comparison))


def findings(versions: list[VersionReport]) -> list[str]:
    """What a person should look at, one line each (empty when all is well)."""
    lines = []
    for v in versions:
        name = v.version
        if v.quality is not None:
            schema = v.quality.schema_
            if schema.missing:
                lines.append(f"{name}: features not in the logs: {', '.join(schema.missing)}")
            lines += [f"{name}: {m}" for m in schema.mistyped]
            for feature, q in v.quality.features.items():
                lines += [f"{name}: {feature}: {issue}" for issue in q.issues]
        if v.drift is not None:
            for feature in v.drift.drifted:
                d = v.drift.features[feature]
                test = f", {d.test} p={d.p_value:.2g}" if d.test and d.p_value is not None else ""
                lines.append(f"{name}: {feature} drifted (PSI {d.psi:.3f}{test})")
        for o in (v.performance.offline_online if v.performance is not None else None) or []:
            if o.outside:
                lines.append(f"{name}: online {o.metric} {o.online:.4f} "
                             f"[{o.online_low:.4f}, {o.online_high:.4f}] on {o.labelled:,} "
                             f"labels is outside its holdout interval [{o.low:.4f}, "
                             f"{o.high:.4f}] (holdout {o.offline:.4f})")
        prediction = v.prediction_drift
        if prediction is not None and prediction.drifted:
            lines.append(f"{name}: scores drifted from the holdout's (PSI {prediction.psi:.3f}, "
                         f"mean {prediction.served_mean:.4f} vs "
                         f"{prediction.holdout_mean:.4f})")
    return lines


# Acting on it --------------------------------------------------------------------------


def retrain(settings: Settings, report: MonitorReport, now: datetime | None = None) -> Retraining:
    """Build a training set, train, pass the gate, promote; audited whatever the outcome."""
    from skewless.gate import PromotionRefused
    from skewless.registry import Registry
    from training.dataset import TrainingSet, write_from_logs, write_training_set
    from training.evaluation.gate import promote
    from training.evaluation.plan import EvaluationPlan
    from training.train import train_model

    now = now or datetime.now(UTC)
    reasons = report.trigger.reasons
    since = now - timedelta(days=settings.retrain_window_days)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    path = settings.var_dir / "datasets" / f"{settings.feature_service}-retrain-{stamp}.parquet"
    if settings.retrain_source == "served-logs":
        write_from_logs(settings, path, cutoff=now, since=since)
    else:
        write_training_set(settings, path, cutoff=now, since=since)
    ts = TrainingSet.read(path)
    result = train_model(ts, settings.model_dir, settings.holdout_days, settings.validation_days,
                         seed=settings.seed, truth_path=settings.resolved_truth_path,
                         dataset_path=path, evaluation=EvaluationPlan.from_settings(settings))
    why = "monitor: " + "; ".join(reasons)
    record: dict[str, Any] = {
        "reasons": reasons, "source": settings.retrain_source, "dataset": str(path),
        "rows": len(ts.frame), "window": {"since": since.isoformat(), "cutoff": now.isoformat()},
        "candidate": result.contract.version,
        "training_holdout": {k: getattr(result.holdout, k)
                             for k in ("roc_auc", "pr_auc", "rows", "positives")},
    }
    with Registry.from_settings(settings) as registry:
        row = registry.register(result.directory, actor=ACTOR, reason=why)
        try:
            _, decision = promote(settings, registry, row.name, row.version, ACTOR, why)
            record.update(outcome="promoted",
                          gate=decision.evidence()["gate"] if decision else None,
                          explanation=decision.explain() if decision else "")
        except PromotionRefused as exc:
            record.update(outcome="refused", explanation=str(exc),
                          gate=exc.decision.evidence()["gate"] if exc.decision else None)
        record["production"] = registry.production_version(row.name)
        registry.audit(ACTOR, "retrain", f"{row.name}/{row.version}", record["outcome"],
                       {k: v for k, v in record.items() if k != "gate"})
    return Retraining.model_validate(record)


def write_report(report: MonitorReport, directory: Path, name: str) -> tuple[Path, Path]:
    """``<name>.json`` and the self-contained ``<name>.html``, each replaced atomically."""
    from training.monitor_report import render_html

    return (write_json_atomic(directory / f"{name}.json", report.to_json()),
            write_text_atomic(directory / f"{name}.html", render_html(report)))
