"""The catalog: the Feast registry's snapshot joined with what Skewless knows of each feature.

Sources, each read cheaply per request and each optional ("not yet computed" where absent):
the statistics document of `skewless catalog refresh`, the last skew report of each feature
service, the latest rollout report and the metadata database's model versions (lineage).
Nothing is computed from feature data here: a page costs dictionary lookups, a stat or two
and one small query.

An experiment's page is nothing but the metadata database's rows (the search, its runs,
Optuna's importances), so it does not degrade like a feature's: without the database it
answers 503, naming it.

A model version's page shows its importances from the artefact itself, so the artefact is
parsed in this (serving) process: only when a check process parsed it first (the registry
records it), and once per version and sha256, the outcome remembered, a failure too. Anyone
may GET a page; no GET starts a process or re-reads a file that already failed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from service.catalog.index import (
    RegistryWatcher,
    Snapshot,
    experiment_url,
    model_url,
    service_url,
)
from service.catalog.schemas import (
    CatalogIndex,
    DatasetInfo,
    EntityDetail,
    Expectations,
    ExperimentDetail,
    ExperimentIndex,
    ExperimentLink,
    ExperimentRunInfo,
    ExperimentSummary,
    Facets,
    FeatureDetail,
    FeatureInfo,
    FeatureStatistics,
    Freshness,
    GateCriterion,
    GateVerdict,
    Importance,
    JobRunInfo,
    JobSchedule,
    JobsIndex,
    Lineage,
    MissingRate,
    ModelDetail,
    ModelRef,
    OnlineSample,
    ParameterImportance,
    RolloutInfo,
    ServiceDetail,
    ServingHealth,
    SkewResult,
    ValidationFinding,
    ValidationRun,
    ViewDetail,
    ViewInfo,
)
from skewless.artifact import ArtifactError
from skewless.db import DatabaseUnavailable
from skewless.errors import SkewlessError
from skewless.experiments import (
    Experiment,
    ExperimentNotFound,
    ExperimentRun,
    Experiments,
    ExperimentState,
)
from skewless.files import JsonFiles
from skewless.jobs import JOBS, JobRun, JobRuns
from skewless.registry import (
    ModelVersion,
    NotFound,
    Registry,
    Stage,
    load_registered,
    not_checked,
)
from skewless.reports.rollout import RolloutReport
from skewless.reports.skew import SkewReport
from skewless.settings import Settings

HISTORY_RUNS = 5  # validation runs a view page shows
NOT_REFRESHED = "not yet computed: run `skewless catalog refresh`"
# The largest id the metadata database's INTEGER keys hold (PostgreSQL's): a larger one
# names nothing, and is not sent to the database.
MAX_ID = 2**31 - 1
T = TypeVar("T")
S = TypeVar("S")


class CatalogNotFound(SkewlessError):
    """No such object in the catalog; the message names what was looked for (404)."""

    status_code = 404


class CatalogUnavailable(DatabaseUnavailable):
    """A page made of the metadata database's rows cannot be made without it (503)."""


def feast_snippet(repo_path: Path, feature: FeatureInfo, view: ViewInfo) -> str:
    """Copy-ready code that fetches ``feature`` with Feast, online and point in time."""
    request = [f.name for f in view.transformation.request_fields] if view.transformation else []
    row = ", ".join(f'"{k}": ...' for k in [*feature.join_keys, *request])
    columns = ", ".join([*feature.join_keys, "event_timestamp", *request])
    return (
        "from feast import FeatureStore\n\n"
        f'store = FeatureStore(repo_path="{repo_path}")\n\n'
        "# Serving: the latest value of each entity, from the online store.\n"
        "online = store.get_online_features(\n"
        f'    features=["{feature.ref}"],\n'
        f"    entity_rows=[{{{row}}}],\n"
        ").to_dict()\n\n"
        "# Training: the value known at each event's time (point in time).\n"
        f"# events: a DataFrame with columns {columns}\n"
        "training = store.get_historical_features(\n"
        "    entity_df=events,\n"
        f'    features=["{feature.ref}"],\n'
        ").to_df()\n"
    )


def _model_ref(row: ModelVersion) -> ModelRef:
    holdout = (row.metrics or {}).get("holdout", {})
    return ModelRef(
        name=row.name, version=row.version, stage=row.stage,
        production=row.stage == Stage.PRODUCTION.value, feature_service=row.feature_service,
        created_at=row.created_at, url=model_url(row.name, row.version),
        holdout={k: holdout[k] for k in ("roc_auc", "pr_auc", "rows") if k in holdout})


def _trained_on(row: ModelVersion, ref: str) -> bool:
    return any(f"{f.view}:{f.feature}" == ref for f in row.contract.features)


def _experiment_summary(experiment: Experiment) -> ExperimentSummary:
    version = experiment.model_version
    return ExperimentSummary(
        **experiment.summary(), best_number=experiment.best_run_number,
        model_url=model_url(experiment.feature_service, version) if version else None,
        url=experiment_url(experiment.id))


def _run_info(run: ExperimentRun, best_number: int | None) -> ExperimentRunInfo:
    # The rounds run are the per-round record's length: a complete run's booster (and so
    # its metrics' "rounds") keeps only the rounds up to its best one.
    rounds = max((len(v) for v in run.steps.values()), default=0) or run.metrics.get("rounds")
    return ExperimentRunInfo(
        **run.details(), best=run.number == best_number, rounds=rounds,
        best_iteration=run.metrics.get("best_iteration"))


def _experiment_notes(experiment: Experiment) -> dict[str, str]:
    """Why a section of an experiment's page is empty."""
    notes: dict[str, str] = {}
    running = experiment.state == ExperimentState.RUNNING.value
    failed = experiment.state == ExperimentState.FAILED.value
    if not experiment.runs:
        notes["runs"] = "no run recorded yet" if running else "no run recorded"
    if experiment.importances is None:
        notes["importances"] = (
            "computed when the search ends" if running
            else "not computed: the search failed" if failed
            else "not computed: Optuna needs at least two complete runs")
    if experiment.model_version is None:
        notes["model"] = ("registered from the best run when the search ends" if running
                          else "none registered: the search failed" if failed
                          else "none registered")
    return notes


class Catalog:
    """What `/catalog`, `/api/catalog` and `skewless catalog search` show."""

    def __init__(self, settings: Settings, store: Any, registry: Registry | None) -> None:
        self.settings = settings
        self.watcher = RegistryWatcher(store)
        self.registry = registry
        # Experiments are read over the registry's engine: the same database and pool.
        self.experiment_store = (Experiments(str(registry.engine.url), engine=registry.engine)
                                 if registry is not None else None)
        self.job_runs = (JobRuns(str(registry.engine.url), engine=registry.engine)
                         if registry is not None else None)
        self.files = JsonFiles()
        # (name, version, sha256) → gains, or why the artefact could not be read
        self._verified: dict[tuple[str, str, str], list[tuple[str, float]] | str] = {}
        self._verifying = threading.Lock()  # one parse per artefact, whoever asks meanwhile

    @classmethod
    def open(cls, settings: Settings, registry: Registry | None = None) -> Catalog:
        """A catalog over its own FeatureStore (registry refreshes do not touch the predictor's)."""
        from skewless.feast_cli import open_store

        return cls(settings, open_store(settings), registry)

    @property
    def snapshot(self) -> Snapshot:
        return self.watcher.snapshot()

    def stats(self) -> dict[str, Any] | None:
        return self.files.read(self.settings.catalog_stats_path)  # type: ignore[no-any-return]

    def _registry_call(self, fn: Callable[[Registry], T], notes: dict[str, str],
                       section: str) -> T | None:
        if self.registry is None:
            notes[section] = "no metadata database configured"
            return None
        try:
            return fn(self.registry)
        except (SQLAlchemyError, DatabaseUnavailable) as exc:  # a page, not a failure
            cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else exc
            notes[section] = f"metadata database unavailable: {type(cause or exc).__name__}"
            return None

    def _experiments_call(self, fn: Callable[[Experiments], T]) -> T:
        """``fn`` over the experiments' store; a failing database is a 503 naming it."""
        return self._metadata_call(self.experiment_store, fn, "experiments")

    def _metadata_call(self, store: S | None, fn: Callable[[S], T], what: str) -> T:
        """``fn`` over a store of the metadata database; a failing database is a 503 naming
        it."""
        if store is None:
            raise CatalogUnavailable(f"no metadata database configured: {what} are recorded "
                                     "there")
        try:
            return fn(store)
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else exc
            raise CatalogUnavailable(
                f"metadata database unavailable: {type(cause or exc).__name__}") from exc

    # The index ---------------------------------------------------------------------------

    def index(self, query: str = "", tag: str | None = None, owner: str | None = None,
              entity: str | None = None, privacy: str | None = None) -> CatalogIndex:
        snap = self.snapshot
        features = snap.search(query, tag, owner, entity, privacy)
        words = query.lower().split()
        filtered = bool(words or tag or owner or entity or privacy)
        text_only = bool(words) and not (tag or owner or entity or privacy)

        def keep(name: str, related: set[str], text: str) -> bool:
            """Unfiltered, or holding a matching feature, or (text search only) matching."""
            return (not filtered or name in related
                    or (text_only and all(w in text.lower() for w in words)))

        views = {f.view for f in features}
        services = {s for f in features for s in f.feature_services}
        entities = {e for f in features for e in f.entities}

        def keep_view(v: ViewInfo) -> bool:
            return keep(v.name, views, f"{v.name} {v.description} {v.owner}")

        tags, owners, entity_names, classes = snap.facets
        stats = self.stats()
        return CatalogIndex(
            query=query, tag=tag, owner=owner, entity=entity, privacy=privacy,
            entities=[e for e in snap.entities.values()
                      if keep(e.name, entities, f"{e.name} {e.description}")],
            feature_views=[v for v in snap.views.values() if v.kind == "batch" and keep_view(v)],
            on_demand_feature_views=[v for v in snap.views.values()
                                     if v.kind == "on_demand" and keep_view(v)],
            feature_services=[s for s in snap.services.values()
                              if keep(s.name, services, f"{s.name} {s.description}")],
            features=features, total_features=len(snap.features),
            facets=Facets(tags=tags, owners=owners, entities=entity_names, privacy=classes),
            stats_computed_at=stats.get("computed_at") if stats else None,
        )

    # Features ----------------------------------------------------------------------------

    def _feature(self, view: str, name: str) -> tuple[Snapshot, FeatureInfo]:
        snap = self.snapshot
        if view not in snap.views:
            raise CatalogNotFound(f"no feature view named {view!r}")
        found = snap.features.get(f"{view}:{name}")
        if found is None:
            raise CatalogNotFound(f"feature view {view!r} has no feature named {name!r}")
        return snap, found

    def freshness(self, view: ViewInfo) -> Freshness:
        stats = self.stats() or {}
        offline = stats.get("views", {}).get(view.name, {})
        online = stats.get("online", {}).get(view.name)
        sample = None
        if online:
            ages = online.get("age_seconds") or {}
            sample = OnlineSample(
                sampled_at=online["sampled_at"], sample=online.get("sample", 0),
                found=online.get("found", 0), age_seconds_min=ages.get("min"),
                age_seconds_median=ages.get("median"), age_seconds_max=ages.get("max"),
                past_ttl=online.get("past_ttl", 0), error=online.get("error"))
        from skewless.freshness import FRESHNESS_TAG, FreshnessError, parse_objective

        try:
            objective = parse_objective(view.name, view.tags.get(FRESHNESS_TAG))
        except FreshnessError:  # the doctor names it; the page shows none
            objective = None
        median = sample.age_seconds_median if sample is not None else None
        return Freshness(
            latest_event_offline=offline.get("latest_event"),
            earliest_event_offline=offline.get("earliest_event"),
            offline_rows=offline.get("rows"), last_materialized=view.last_materialized,
            online=sample, objective_seconds=objective,
            objective_met=(None if objective is None or median is None
                           else median <= objective))

    def expectations(self, view: ViewInfo, feature: str | None = None) -> Expectations:
        """The view's expectations and its latest validation results (``feature``: only the
        findings about it), from the metadata database: one indexed query."""
        from skewless.expectations import EXPECTATIONS_TAG
        from skewless.validations import ValidationStore

        reference = view.tags.get(EXPECTATIONS_TAG)
        if reference is None:
            return Expectations(schema_ref=None, latest=None, history=[],
                                note=f"none declared (the view's `{EXPECTATIONS_TAG}` tag)")
        notes: dict[str, str] = {}
        rows = self._registry_call(
            lambda r: ValidationStore(r.url, r.engine).history(view.name, HISTORY_RUNS),
            notes, "expectations")
        if rows is None:
            return Expectations(schema_ref=reference, latest=None, history=[],
                                note=notes["expectations"])
        runs = [ValidationRun(
            at=row.at, step=row.step, status=row.status, rows=row.rows,
            newest_event=row.newest_event, reference_time=row.reference_time, actor=row.actor,
            reason=row.reason, findings=[
                ValidationFinding(feature=f.feature, rule=f.rule, count=f.count,
                                  examples=list(f.examples))
                for f in row.finding_list if feature is None or f.feature == feature])
            for row in rows]
        return Expectations(schema_ref=reference, latest=runs[0] if runs else None,
                            history=runs, note=None if runs else
                            "not validated yet: run `skewless validate`")

    def statistics(self, ref: str) -> FeatureStatistics | None:
        stats = self.stats()
        found = (stats or {}).get("features", {}).get(ref)
        if not found:
            return None
        return FeatureStatistics(computed_from=found.get("from", ""),
                                 computed_at=stats["computed_at"], **found)  # type: ignore[index]

    def serving_health(self, feature: FeatureInfo) -> list[ServingHealth]:
        stats = self.stats() or {}
        health = []
        for service in feature.feature_services:
            served = stats.get("serving", {}).get(service, {})
            missing = served.get("features", {}).get(feature.ref)
            report = self.files.read_model(self.settings.skew_report_for(service), SkewReport)
            skew = report.features.get(f"{feature.view}__{feature.name}") if report else None
            health.append(ServingHealth(
                feature_service=service,
                missing=MissingRate(**missing, since=served["since"],
                                    computed_at=stats["computed_at"]) if missing else None,
                skew=SkewResult(
                    checked_at=datetime.fromisoformat(report.checked_at), checked=skew.checked,
                    mismatches=skew.mismatches, causes=dict(skew.causes),
                    source="online store" if report.log_dir == SkewReport.ONLINE_STORE
                    else "served logs") if report and skew else None))
        return health

    def feature(self, view: str, name: str) -> FeatureDetail:
        snap, feature = self._feature(view, name)
        view_info = snap.views[view]
        notes: dict[str, str] = {}
        statistics = self.statistics(feature.ref)
        if statistics is None:
            notes["statistics"] = (
                NOT_REFRESHED if view_info.kind == "batch" or not feature.feature_services
                else NOT_REFRESHED + " after the feature is served (on-demand features are "
                "profiled from the served-feature logs)")
        freshness = self.freshness(view_info)
        if view_info.kind == "on_demand":
            notes["freshness"] = ("computed at request time from "
                                  + ", ".join(view_info.transformation.inputs  # type: ignore[union-attr]
                                              or ["request fields only"]))
        elif freshness.latest_event_offline is None:
            notes["freshness"] = NOT_REFRESHED
        serving = self.serving_health(feature)
        if not feature.feature_services:
            notes["serving"] = "in no feature service, so never served"
        elif not any(h.missing or h.skew for h in serving):
            notes["serving"] = (NOT_REFRESHED + " after serving; the skew result comes from "
                                "`skewless skew-check`")
        rows = self._registry_call(
            lambda r: r.versions(feature_services=feature.feature_services), notes, "lineage")
        lineage = [Lineage(feature_service=s, url=service_url(s), models=[
            _model_ref(row) for row in rows or []
            if row.feature_service == s and _trained_on(row, feature.ref)])
            for s in feature.feature_services]
        if not feature.feature_services:
            notes.setdefault("lineage", "in no feature service, so no model is trained on it")
        histogram = statistics.histogram if statistics else None
        return FeatureDetail(
            feature=feature, view=view_info,
            entities=[snap.entities[e] for e in feature.entities], freshness=freshness,
            statistics=statistics, lineage=lineage, serving=serving,
            histogram_url=f"{feature.url}/histogram.svg" if histogram else None,
            snippet=feast_snippet(self.settings.repo_path, feature, view_info),
            expectations=(self.expectations(view_info, name) if view_info.kind == "batch"
                          else None),
            not_computed=notes)

    # Views, entities, services --------------------------------------------------------------

    def view(self, name: str) -> ViewDetail:
        snap = self.snapshot
        found = snap.views.get(name)
        if found is None:
            raise CatalogNotFound(f"no feature view named {name!r}")
        return ViewDetail(
            view=found, entities=[snap.entities[e] for e in found.entities],
            features=[snap.features[f"{name}:{f}"] for f in found.features],
            freshness=self.freshness(found) if found.kind == "batch" else None,
            feature_services=[s.name for s in snap.services.values() if name in s.views],
            expectations=self.expectations(found) if found.kind == "batch" else None)

    def entity(self, name: str) -> EntityDetail:
        snap = self.snapshot
        found = snap.entities.get(name)
        if found is None:
            raise CatalogNotFound(f"no entity named {name!r}")
        return EntityDetail(
            entity=found, feature_views=[v for v in snap.views.values() if name in v.entities],
            features=[f for f in snap.features.values() if name in f.entities])

    def service(self, name: str) -> ServiceDetail:
        snap = self.snapshot
        found = snap.services.get(name)
        if found is None:
            raise CatalogNotFound(f"no feature service named {name!r}")
        notes: dict[str, str] = {}
        rows = self._registry_call(lambda r: r.versions(feature_services=[name]), notes, "models")
        return ServiceDetail(
            service=found, features=[snap.features[r] for r in found.features
                                     if r in snap.features],
            models=[_model_ref(row) for row in rows or []], not_computed=notes)

    # Model versions ----------------------------------------------------------------------

    def importance(self, row: ModelVersion) -> list[tuple[str, float]]:
        """Gain importance per input, from the artefact: verified and read once per version
        and sha256 (a failure remembered too), and never unless a check process parsed it
        first. ArtifactError says why there is none."""
        refusal = not_checked(row)
        if refusal:
            raise ArtifactError(f"not verified: {refusal}")
        key = (row.name, row.version, row.sha256)
        with self._verifying:
            found = self._verified.get(key)
            if found is None:
                try:
                    booster = load_registered(
                        row, self.registry.limits if self.registry else None).booster
                    found = list(zip(booster.feature_name(),
                                     (float(g) for g in booster.feature_importance("gain")),
                                     strict=True))
                except ArtifactError as exc:
                    found = f"artefact unreadable: {exc}"
                self._verified[key] = found
        if isinstance(found, str):
            raise ArtifactError(found)
        return found

    def _experiment_link(self, row: ModelVersion, notes: dict[str, str]) -> ExperimentLink | None:
        """The run ``row`` was trained from: named by its contract, else looked up."""
        run_id = row.experiment_run_id
        if run_id is None or self.experiment_store is None:
            return None
        named = row.contract.training.experiment_run if row.contract.training else None
        if named and named.get("id") == run_id:
            experiment, number = named["experiment"], named["number"]
        else:
            store = self.experiment_store
            run = self._registry_call(lambda _: store.run(run_id), notes, "experiment")
            if run is None:
                return None
            experiment, number = run.experiment_id, run.number
        return ExperimentLink(experiment=experiment, run=run_id, number=number,
                              url=f"{experiment_url(experiment)}#run-{run_id}")

    def model(self, name: str, version: str) -> ModelDetail:
        notes: dict[str, str] = {}
        try:
            row = self._registry_call(lambda r: r.get(name, version), notes, "model")
        except NotFound as exc:
            raise CatalogNotFound(f"model {name!r} has no version {version!r}") from exc
        if row is None:
            raise CatalogNotFound(f"model {name!r} version {version!r}: {notes['model']}")
        snap = self.snapshot
        refs = {f.name: f"{f.view}:{f.feature}" for f in row.contract.features}
        importance = None
        try:
            gains = self.importance(row)
            total = sum(g for _, g in gains) or 1.0
            importance = sorted(
                (Importance(feature=n, ref=refs.get(n) if refs.get(n) in snap.features else None,
                            gain=g, share=g / total) for n, g in gains),
                key=lambda i: -i.gain)
        except SkewlessError as exc:
            notes["importance"] = notes["artifact"] = str(exc)
        return ModelDetail(
            model=_model_ref(row), fingerprint=row.fingerprint, sha256=row.sha256,
            artifact_uri=row.artifact_uri, created_by=row.created_by, metrics=row.metrics,
            training_window=row.training_window,
            features=[snap.features[r] for r in refs.values() if r in snap.features],
            unregistered_features=[r for r in refs.values() if r not in snap.features],
            importance=importance,
            importance_url=(model_url(name, version) + "/importance.svg") if importance else None,
            experiment=self._experiment_link(row, notes), gate=self._gate_verdicts(row, notes),
            decision=row.contract.decision.to_json() if row.contract.decision else None,
            staleness=row.contract.staleness.to_json() if row.contract.staleness else None,
            rollout=self.rollout(name, version), not_computed=notes)

    def rollout(self, name: str, version: str) -> RolloutInfo | None:
        """The latest rollout report, when it names ``version`` of ``name`` as its challenger
        or its production version."""
        report = self.files.read_model(self.settings.rollout_report_path, RolloutReport)
        if report is None:
            return None
        c, d = report.comparison, report.decision
        if c.name != name or c.challenger is None or version not in (c.challenger, c.production):
            return None
        p99 = {v: latency.p99_ms for v, latency in c.latency.items()}
        auc = c.labelled.roc_auc if c.labelled is not None else None
        return RolloutInfo(
            role="challenger" if version == c.challenger else "production",
            challenger=c.challenger, production=c.production, stage=c.stage,
            traffic_percent=c.traffic_percent, started_at=_moment(c.started_at),
            events=c.events, error_rate=c.error_rate, score_psi=c.score_psi,
            agreement=c.agreement, production_p99_ms=p99.get(c.production or ""),
            challenger_p99_ms=p99.get(c.challenger),
            labels=c.labelled.labels if c.labelled is not None else None,
            roc_auc_difference=auc.difference if auc is not None else None,
            roc_auc_low=auc.low if auc is not None else None,
            roc_auc_high=auc.high if auc is not None else None,
            action=d.action, reasons=d.reasons, gate=d.gate, applied=d.applied,
            command=report.command, generated_at=_moment(report.generated_at))

    def _gate_verdicts(self, row: ModelVersion, notes: dict[str, str]) -> list[GateVerdict]:
        """The gate's verdicts on ``row``: promotions from its transitions, refusals from the
        audit log; newest first."""
        verdicts = []
        for t in row.transitions:
            gate = (t.evidence or {}).get("gate")
            if t.to_stage != Stage.PRODUCTION.value or gate is None:
                continue
            verdicts.append(_verdict(t.at, t.actor, "forced" if t.forced else "promoted",
                                     gate if isinstance(gate, dict) else {}, None))
        refusals = self._registry_call(lambda r: r.gate_refusals(row.name, row.version),
                                       notes, "gate") or []
        for event in refusals:
            detail = event.detail or {}
            verdicts.append(_verdict(event.at, event.actor, "refused", detail.get("gate") or {},
                                     detail.get("error")))
        return sorted(verdicts, key=lambda v: v.at, reverse=True)

    # Jobs ---------------------------------------------------------------------------------

    def jobs(self, job: str | None = None, limit: int = 100) -> JobsIndex:
        """Each job's schedule, next slot, last success and last run; the latest runs (of
        ``job``) first."""
        from datetime import UTC

        from skewless.schedules import parse_schedule

        now = datetime.now(UTC)
        if job is not None and job not in JOBS:
            runs: list[JobRun] = []  # names no job
            last, succeeded = self._metadata_call(
                self.job_runs, lambda s: (s.last_runs(), s.last_success()), "job runs")
        else:
            runs, last, succeeded = self._metadata_call(
                self.job_runs, lambda s: (s.runs(job, limit), s.last_runs(), s.last_success()),
                "job runs")
        schedules = []
        for spec in JOBS.values():
            trigger = parse_schedule(spec.schedule(self.settings))
            schedules.append(JobSchedule(
                job=spec.name, does=spec.help, schedule=spec.schedule(self.settings),
                setting=f"SKEWLESS_{spec.setting.upper()}",
                next_slot=trigger.get_next_fire_time(None, now) if trigger else None,
                last_success=_job_run(succeeded.get(spec.name)),
                last_run=_job_run(last.get(spec.name))))
        return JobsIndex(job=job, jobs=schedules,
                         runs=[info for info in map(_job_run, runs) if info is not None])

    # Experiments -------------------------------------------------------------------------

    def experiments(self, feature_service: str | None = None) -> ExperimentIndex:
        """Every experiment (of ``feature_service``), newest first."""
        if feature_service is not None and "\x00" in feature_service:
            found: list[Experiment] = []  # names no service, and PostgreSQL refuses NUL
        else:
            found = self._experiments_call(lambda s: s.all(feature_service, steps=False))
        return ExperimentIndex(feature_service=feature_service,
                               experiments=[_experiment_summary(e) for e in reversed(found)])

    def experiment(self, experiment_id: int) -> ExperimentDetail:
        """One experiment: its facts, its runs side by side, Optuna's importances."""
        if not 1 <= experiment_id <= MAX_ID:
            raise CatalogNotFound(f"no experiment {experiment_id}")
        try:
            found = self._experiments_call(lambda s: s.get(experiment_id))
        except ExperimentNotFound as exc:
            raise CatalogNotFound(str(exc)) from exc
        space = list((found.search or {}).get("space", {}))
        importances = found.importances
        return ExperimentDetail(
            experiment=_experiment_summary(found), search=found.search,
            dataset=DatasetInfo(uri=found.dataset_uri, sha256=found.dataset_sha256,
                                rows=found.dataset_rows),
            windows=found.windows, git_commit=found.git_commit, libraries=found.libraries,
            created_by=found.created_by, holdout=found.holdout, error=found.error,
            parameters=list(dict.fromkeys([*space, *(p for r in found.runs for p in r.params)])),
            runs=[_run_info(r, found.best_run_number) for r in found.runs],
            importances=sorted(
                (ParameterImportance(parameter=p, importance=float(v))
                 for p, v in importances.items()),
                key=lambda i: -i.importance) if importances is not None else None,
            not_computed=_experiment_notes(found))


def _moment(text: str | None) -> datetime | None:
    """An ISO-8601 time of a report (None when absent or unreadable)."""
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _verdict(at: datetime, actor: str, outcome: str, gate: dict[str, Any],
             error: str | None) -> GateVerdict:
    criteria = [GateCriterion(name=str(c.get("name", "")), setting=str(c.get("setting", "")),
                              status=str(c.get("status", "")), message=str(c.get("message", "")),
                              evidence=c.get("evidence") or {})
                for c in gate.get("criteria") or [] if isinstance(c, dict)]
    accepted = gate.get("accepted")
    return GateVerdict(at=at, actor=actor, outcome=outcome,
                       accepted=accepted if isinstance(accepted, bool) else None,
                       explanation=error, criteria=criteria)


def age_text(seconds: float | None) -> str:
    """A duration as people read it: 42 s, 7 min, 5.2 h, 3.1 days."""
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def since_text(moment: datetime | None, now: datetime) -> str:
    return "unknown" if moment is None else age_text((now - moment).total_seconds()) + " ago"


def param_text(value: Any) -> str:
    """A searched parameter as a table shows it: floats to four significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def _job_run(run: JobRun | None) -> JobRunInfo | None:
    return JobRunInfo.model_validate(run.to_json()) if run is not None else None
