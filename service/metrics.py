"""Prometheus metrics, one registry per app (tests build several apps in one process)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from skewless.contract import ModelContract
from skewless.files import JsonFiles
from skewless.reports.monitor import MonitorReport
from skewless.reports.rollout import RolloutReport
from skewless.reports.skew import SkewReport

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5)
# A served value's age (seconds): minutes for streaming views, hours and days for daily
# snapshots, months and years for attributes.
AGE_BUCKETS = (60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 6 * 3600, 12 * 3600, 86400,
               26 * 3600, 30 * 3600, 36 * 3600, 2 * 86400, 3 * 86400, 7 * 86400, 30 * 86400,
               365 * 86400)


class SkewCollector:
    """The last skew check's result per feature, read from its report file at scrape time."""

    def __init__(self, report_path: Path) -> None:
        self.report_path = report_path
        self.files = JsonFiles()

    def collect(self) -> Iterator[Metric]:
        mismatches = GaugeMetricFamily(
            "skewless_skew_mismatches", "Mismatching values per feature in the last skew check",
            labels=["feature"])
        rows = GaugeMetricFamily("skewless_skew_rows_checked", "Rows in the last skew check")
        checked_at = GaugeMetricFamily("skewless_skew_checked_timestamp_seconds",
                                       "When the last skew check ran")
        report = self.files.read_model(self.report_path, SkewReport)
        if report is None:
            return
        for feature, result in report.features.items():
            mismatches.add_metric([feature], result.mismatches)
        rows.add_metric([], report.rows)
        checked_at.add_metric([], datetime.fromisoformat(report.checked_at).timestamp())
        yield from (mismatches, rows, checked_at)


class MonitorCollector:
    """The last `skewless monitor` report's findings per model version, read at scrape time
    (parsed again only when the file changes)."""

    def __init__(self, report_path: Path) -> None:
        self.report_path = report_path
        self.files = JsonFiles()

    def collect(self) -> Iterator[Metric]:
        report = self.files.read_model(self.report_path, MonitorReport)
        if report is None:
            return
        version = ["model_version"]
        psi = GaugeMetricFamily("skewless_monitor_feature_psi",
                                "PSI of each feature against its training baseline",
                                labels=[*version, "feature"])
        drifted = GaugeMetricFamily(
            "skewless_monitor_feature_drifted",
            "1 when the feature drifted (PSI over the threshold, test significant)",
            labels=[*version, "feature"])
        score_psi = GaugeMetricFamily("skewless_monitor_score_psi",
                                      "PSI of the served scores against the holdout's",
                                      labels=version)
        auc = GaugeMetricFamily("skewless_monitor_roc_auc",
                                "ROC AUC on the delayed labels that arrived", labels=version)
        pr_auc = GaugeMetricFamily("skewless_monitor_pr_auc",
                                   "PR AUC on the delayed labels that arrived", labels=version)
        labels = GaugeMetricFamily("skewless_monitor_labels",
                                   "Served predictions whose label arrived", labels=version)
        outstanding = GaugeMetricFamily("skewless_monitor_labels_outstanding",
                                        "Served predictions still waiting for a label",
                                        labels=version)
        findings = GaugeMetricFamily(
            "skewless_monitor_quality_findings",
            "1 when the served values of a feature broke a quality rule in the last monitor "
            "run (null_rate, out_of_range, unseen_categories, missing, mistyped), 0 when the "
            "rule was checked and held", labels=[*version, "feature", "rule"])
        for v in report.versions:
            name = v.version
            if v.quality is not None:
                for feature, q in v.quality.features.items():
                    for rule, broken in q.rules.items():
                        findings.add_metric([name, feature, rule], 1.0 if broken else 0.0)
                for feature in v.quality.schema_.missing:
                    findings.add_metric([name, feature, "missing"], 1.0)
                for entry in v.quality.schema_.mistyped:
                    findings.add_metric([name, entry.split(":", 1)[0], "mistyped"], 1.0)
            for feature, d in (v.drift.features if v.drift is not None else {}).items():
                psi.add_metric([name, feature], d.psi)
                drifted.add_metric([name, feature], 1.0 if d.drifted else 0.0)
            if v.prediction_drift is not None:
                score_psi.add_metric([name], v.prediction_drift.psi)
            if v.performance is not None:
                overall = v.performance.overall
                labels.add_metric([name], overall.labelled)
                outstanding.add_metric([name], overall.outstanding or 0)
                if overall.ok and overall.roc_auc is not None and overall.pr_auc is not None:
                    auc.add_metric([name], overall.roc_auc)
                    pr_auc.add_metric([name], overall.pr_auc)
        due = GaugeMetricFamily("skewless_monitor_retrain_due",
                                "1 when the last monitor run found the retraining policy met "
                                "and did not retrain")
        due.add_metric([], 1.0 if report.trigger.retrain and report.retraining is None else 0.0)
        ran = GaugeMetricFamily("skewless_monitor_run_timestamp_seconds",
                                "When the last monitor report was made")
        ran.add_metric([], datetime.fromisoformat(report.generated_at).timestamp())
        yield from (psi, drifted, score_psi, auc, pr_auc, labels, outstanding, findings, due,
                    ran)


class RolloutCollector:
    """The last `skewless rollout status|apply` report: the challenger against production on
    the same events and the policy's decision, read at scrape time (parsed again only when
    the file changes). Without a challenger only the report's time is exported."""

    def __init__(self, report_path: Path) -> None:
        self.report_path = report_path
        self.files = JsonFiles()

    def collect(self) -> Iterator[Metric]:
        report = self.files.read_model(self.report_path, RolloutReport)
        if report is None:
            return
        c, d = report.comparison, report.decision
        ran = GaugeMetricFamily("skewless_rollout_report_timestamp_seconds",
                                "When the last rollout report was made", labels=["model"])
        ran.add_metric([c.name], datetime.fromisoformat(report.generated_at).timestamp())
        if c.challenger is None:
            yield ran
            return
        pair = ["model", "challenger"]
        values = [c.name, c.challenger]
        events = GaugeMetricFamily("skewless_rollout_events",
                                   "Events logged with the challenger and production since "
                                   "the rollout started", labels=pair)
        error_rate = GaugeMetricFamily("skewless_rollout_error_rate",
                                       "Share of those events without a usable challenger "
                                       "score", labels=pair)
        score_psi = GaugeMetricFamily("skewless_rollout_score_psi",
                                      "PSI of the challenger's scores against production's on "
                                      "the events both scored", labels=pair)
        agreement = GaugeMetricFamily("skewless_rollout_agreement",
                                      "Share of the events both scored where both decide the "
                                      "same, each at its own threshold", labels=pair)
        # "percentile", not "quantile": promtool's linter keeps that label for summaries.
        model_seconds = GaugeMetricFamily(
            "skewless_rollout_model_seconds", "Model time per row of each version on the "
            "compared events, by percentile (50, 99)", labels=[*pair, "version", "percentile"])
        labels = GaugeMetricFamily("skewless_rollout_labels",
                                   "Compared events whose label arrived", labels=pair)
        auc = GaugeMetricFamily(
            "skewless_rollout_auc_difference", "ROC AUC of the challenger minus production's "
            "on the same labelled events, with its paired bootstrap 95% interval",
            labels=[*pair, "bound"])
        decision = GaugeMetricFamily("skewless_rollout_decision",
                                     "1 for the rollout policy's decision (none, wait, abort, "
                                     "promote or hold)", labels=[*pair, "action"])
        applied = GaugeMetricFamily("skewless_rollout_decision_applied",
                                    "1 when the decision was applied (the registry changed or "
                                    "the hold audited)", labels=pair)
        events.add_metric(values, c.events)
        if c.error_rate is not None:
            error_rate.add_metric(values, c.error_rate)
        if c.score_psi is not None:
            score_psi.add_metric(values, c.score_psi)
        if c.agreement is not None:
            agreement.add_metric(values, c.agreement)
        for version, latency in c.latency.items():
            for percentile, ms in (("50", latency.p50_ms), ("99", latency.p99_ms)):
                if ms is not None:
                    model_seconds.add_metric([*values, version, percentile], ms / 1000)
        labelled = c.labelled
        if labelled is not None:
            labels.add_metric(values, labelled.labels)
            roc = labelled.roc_auc
            if roc is not None and roc.difference is not None:
                for bound, value in (("estimate", roc.difference), ("low", roc.low),
                                     ("high", roc.high)):
                    if value is not None:
                        auc.add_metric([*values, bound], value)
        decision.add_metric([*values, d.action], 1.0)
        applied.add_metric(values, 1.0 if d.applied else 0.0)
        yield from (m for m in (events, error_rate, score_psi, agreement, model_seconds, labels,
                                auc, decision, applied, ran) if m.samples)


class ModelAgeCollector:
    """The served model's age (now − its training cut-off), computed at scrape time, and the
    maximum useful age its contract carries from a backtest (not exported without one: an
    alert comparing the two stays quiet for such a model rather than guessing)."""

    def __init__(self) -> None:
        self.contract: ModelContract | None = None  # replaced, never mutated, on a swap

    def collect(self) -> Iterator[Metric]:
        contract = self.contract
        training = contract.training if contract is not None else None
        if contract is None or contract.model is None or training is None or not training.cutoff:
            return
        labels = ["model", "model_version"]
        values = [contract.feature_service, contract.model.version]
        age = GaugeMetricFamily("skewless_model_age_seconds",
                                "Seconds since the served model's training cut-off (the "
                                "labels it learned from)", labels=labels)
        age.add_metric(values, time.time() - datetime.fromisoformat(training.cutoff).timestamp())
        yield age
        if contract.staleness is not None:
            max_age = GaugeMetricFamily(
                "skewless_model_max_age_seconds", "The served model's maximum useful age, "
                "from the backtest stored in its contract", labels=labels)
            max_age.add_metric(values, contract.staleness.max_age_seconds)
            yield max_age


class Metrics:
    def __init__(self, skew_report: Path | None = None, monitor_report: Path | None = None,
                 rollout_report: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("skewless_http_requests_total", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("skewless_http_request_seconds",
                                 "HTTP request latency by route and status",
                                 ["route", "method", "status"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.predictions = Counter("skewless_predictions_total", "Rows scored", registry=r)
        self.feature_status = Counter(
            "skewless_feature_missing_total",
            "Served features without a value, by view and status "
            "(NOT_FOUND, NULL_VALUE, OUTSIDE_MAX_AGE)", ["view", "status"], registry=r)
        self.redis_latency = Histogram("skewless_redis_seconds",
                                       "Online store round trip per prediction request",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.feature_age = Histogram(
            "skewless_feature_age_seconds", "Age of each served feature value by view: the "
            "request's time minus the event time stored with it online", ["view"],
            buckets=AGE_BUCKETS, registry=r)
        self.freshness_objective = Gauge(
            "skewless_feature_freshness_objective_seconds", "How old a view's served values "
            "may be (its freshness-objective tag)", ["view"], registry=r)
        self.redis_errors = Counter("skewless_redis_errors_total",
                                    "Online store reads that failed", registry=r)
        self.model = Info("skewless_model", "The model being served", registry=r)
        self.challenger = Info("skewless_challenger", "The challenger served beside "
                               "production (shadow or canary; empty when none)", registry=r)
        self.challenger_outcomes = Counter(
            "skewless_challenger_scores_total", "Rows the challenger was asked to score, by "
            "outcome (scored, late, error, nonfinite, overloaded)", ["outcome"], registry=r)
        self.answers = Counter("skewless_answers_total", "Rows answered, by the role of the "
                               "version that answered (production or canary)", ["role"],
                               registry=r)
        self.model_call_seconds = Histogram(
            "skewless_model_call_seconds", "Duration of one model call (one or more rows), by "
            "role (production, challenger)", ["role"], buckets=LATENCY_BUCKETS, registry=r)
        self.model_age = ModelAgeCollector()
        r.register(self.model_age)
        self.model_loads = Counter(
            "skewless_model_loads_total", "Model versions loaded (swapped in) or refused "
            "(corrupt, missing or mismatched artefact; the previous model keeps serving)",
            ["outcome"], registry=r)
        self.model_load_seconds = Histogram(
            "skewless_model_load_seconds", "Time to load and verify a model version",
            registry=r)
        self.registry_errors = Counter(
            "skewless_registry_errors_total", "Failed reads of the model registry", registry=r)
        self.log_depth = Gauge("skewless_feature_log_buffer_rows",
                               "Served rows accepted and not yet written", registry=r)
        self.log_capacity = Gauge("skewless_feature_log_buffer_capacity",
                                  "Rows the served-feature log buffer holds at most", registry=r)
        self.log_rows = Counter("skewless_feature_log_rows_written_total",
                                "Served rows written to the offline store", registry=r)
        self.log_write_seconds = Histogram("skewless_feature_log_write_seconds",
                                           "Time to write one batch of served rows",
                                           registry=r)
        self.log_errors = Counter("skewless_feature_log_write_errors_total",
                                  "Failed writes of served rows (retried)", registry=r)
        if skew_report is not None:
            r.register(SkewCollector(skew_report))
        if monitor_report is not None:
            r.register(MonitorCollector(monitor_report))
        if rollout_report is not None:
            r.register(RolloutCollector(rollout_report))
        self.log_refused = Counter("skewless_feature_log_refused_total",
                                   "Predictions refused because the log buffer was full",
                                   registry=r)
        self.admin_denied = Counter(
            "skewless_admin_denied", "Calls under /admin whose caller was not authenticated (no "
            "or a wrong token, or refused before the token was read), by status",
            ["status"], registry=r)
        self.admin_unaudited = Counter(
            "skewless_admin_unaudited", "Calls under /admin whose audit event could not be "
            "written (the metadata database unavailable); each is in the service log instead",
            registry=r)
        self.pool_in_flight = Gauge(
            "skewless_model_pool_in_flight", "Heavy prediction requests running in or waiting "
            "for the model worker pool", registry=r)
        self.pool_refused = Counter(
            "skewless_model_pool_refused", "Heavy prediction requests (explanations, large "
            "batches) refused with 503 because every model worker was taken", registry=r)
        self.nonfinite_predictions = Counter(
            "skewless_nonfinite_predictions", "Rows the model scored as NaN or infinite "
            "(answered 500, never returned)", registry=r)
        self.log_dead_lettered = Counter(
            "skewless_feature_log_dead_lettered_total",
            "Served rows the log schema could not hold, kept in the dead-letter file instead",
            registry=r)
        self.spool_sync_seconds = Histogram(
            "skewless_feature_log_spool_sync_seconds", "Time to write and sync one group of "
            "spooled rows (spool durability; every answer in the group waits for it)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r)
        self.spool_failures = Counter(
            "skewless_feature_log_spool_failures", "Groups of rows the spool could not sync "
            "(their requests answered 503)", registry=r)
        self.log_replayed = Counter(
            "skewless_feature_log_replayed_rows", "Spooled rows a previous process had not "
            "logged, logged at start-up", registry=r)

    def track_depth(self, depth: Callable[[], float]) -> None:
        self.log_depth.set_function(depth)

    def track_pool(self, in_flight: Callable[[], float]) -> None:
        self.pool_in_flight.set_function(in_flight)

    def log_written(self, rows: int, seconds: float) -> None:
        self.log_rows.inc(rows)
        self.log_write_seconds.observe(seconds)

    def log_failed(self, exc: BaseException) -> None:
        self.log_errors.inc()

    def log_dead_letter(self, rows: int) -> None:
        self.log_dead_lettered.inc(rows)

    def spool_synced(self, rows: int, seconds: float) -> None:
        self.spool_sync_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class StatusRecorder:
    """An ASGI ``send`` that remembers the response status (500 until one is sent)."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.status = 500

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class MetricsMiddleware:
    """Counts and times every request by route template and status (pure ASGI: cheap)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        recorder = StatusRecorder(send)
        try:
            await self.app(scope, receive, recorder)
        finally:
            status = recorder.status
            route = scope.get("route")
            key = (getattr(route, "path", "unmatched"), scope["method"], status)
            children = self._children.get(key)
            if children is None:
                labels = (key[0], key[1], str(status))
                children = (self.metrics.requests.labels(*labels),
                            self.metrics.latency.labels(*labels))
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
