"""The one place that reads the environment.

Every setting has the prefix ``SKEWLESS_``. A value is taken from the first of these that
has it:

1. explicit values passed to :class:`Settings` / :func:`get_settings` (tests, benches);
2. the process environment;
3. a ``.env`` file in the working directory;
4. ``skewless.env`` inside the Feast repo (written by ``skewless init``), so that a repo
   carries its own label source, feature service and run-time directory, and every command
   finds them wherever it runs: the repo is the one ``SKEWLESS_REPO_PATH`` names in 1-3
   (else the bundled demo repo). Relative paths in that file are paths in the repo (the
   settings typed as paths; a ``SKEWLESS_DATABASE_URL`` is a URL, taken as written); relative
   paths from 1-3 keep meaning paths from the working directory. The file cannot name the
   repo itself (``SKEWLESS_REPO_PATH`` there is refused: it would be read from the repo it
   chooses);
5. the defaults below (the demo repo ``feature_repo/`` and ``var/`` of this checkout).

No other module reads ``os.environ``; the few places that must hand a value to Feast (which
expands ``${SKEWLESS_REDIS}`` in feature_store.yaml itself) call :func:`export_for_feast`
instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from skewless.errors import InvalidInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# SKEWLESS_PROFILE: which feature_store.yaml variant of the repo every command reads. The
# definitions are the same; the variant names the engines (Feast's own CLI picks the same file
# with `feast -f FILE`).
SPARK_MASTER = "local[2]"
SPARK_DRIVER_MEMORY = "2g"
PROFILE_FILES = {"local": "feature_store.yaml", "cluster": "feature_store.cluster.yaml"}
# The shared admin token a development checkout works with; any other environment refuses the
# shared token, whatever its value, and takes named tokens (`skewless tokens`) only.
DEVELOPMENT_ADMIN_TOKEN = "dev-admin-token"
ENVIRONMENTS = ("development", "test", "production")
# The settings file a Feast repo carries (dotenv, the same SKEWLESS_* keys).
REPO_SETTINGS_FILE = "skewless.env"


class RepoSettingsSource(PydanticBaseSettingsSource):
    """``<repo>/skewless.env``, for the repo the higher-priority sources chose.

    It runs after them (see :meth:`Settings.settings_customise_sources`), so
    ``current_state`` already holds any ``repo_path`` they set; the file itself is read by
    pydantic-settings' own dotenv source, with the class's prefix and parsing.
    """

    def __init__(self, settings_cls: type[BaseSettings], default_repo: Path) -> None:
        super().__init__(settings_cls)
        self.default_repo = default_repo

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: the whole file is read at once by :meth:`__call__`."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        repo = Path(self.current_state.get("repo_path") or self.default_repo)
        path = repo / REPO_SETTINGS_FILE
        if not path.is_file():
            return {}
        values: dict[str, Any] = DotEnvSettingsSource(self.settings_cls, env_file=path)()
        if "repo_path" in values:
            raise InvalidInput(
                f"{path} sets SKEWLESS_REPO_PATH: a repo's settings file cannot choose the "
                f"repo it is read from; remove that line (point commands at the repo with "
                f"`export SKEWLESS_REPO_PATH={repo}` or in the working directory's .env)")
        base, paths = repo.resolve(), _path_fields(self.settings_cls)
        for name, value in values.items():
            if value and name in paths and not Path(value).is_absolute():
                values[name] = base / value  # the file travels with the repo
        return values

    def __repr__(self) -> str:
        return f"{type(self).__name__}(default_repo={self.default_repo!r})"


def _path_fields(settings_cls: type[BaseSettings]) -> set[str]:
    """The settings that hold a filesystem path (``Path`` or ``Path | None``)."""
    return {name for name, field in settings_cls.model_fields.items()
            if field.annotation is Path or Path in get_args(field.annotation)}


class Settings(BaseSettings):
    """Configuration of every Skewless command; dev, test and prod differ only here."""

    model_config = SettingsConfigDict(
        env_prefix="SKEWLESS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: str = Field("development", description="development, test or production")
    redis: str | None = Field(
        None,
        description="Feast Redis connection string (host:port[,options]); "
        "unset means an embedded redis-server is started for the command",
    )
    profile: Literal["local", "cluster"] = Field(
        "local", description="the repo's feature_store.yaml variant: local (one Redis, DuckDB; "
        "feature_store.yaml) or cluster (Redis Cluster; feature_store.cluster.yaml)")
    spark_master: str = Field(
        SPARK_MASTER, description="the cluster profile's Spark master (feature_store.cluster.yaml): "
        "local[N] runs Spark in the command's process, or a cluster's, e.g. spark://host:7077")
    spark_driver_memory: str = Field(
        SPARK_DRIVER_MEMORY, description="the cluster profile's Spark driver memory (it holds a training set "
        "before it becomes a pandas frame)")
    redis_server_bin: Path | None = Field(
        None, description="redis-server binary for the embedded server (default: auto)"
    )
    repo_path: Path = Field(PROJECT_ROOT / "feature_repo", description="the Feast repo; its "
                            "skewless.env, if any, is read too (not from the repo file itself)")
    var_dir: Path = Field(PROJECT_ROOT / "var", description="run-time state (redis data, models, "
                          "the SQLite database); `skewless init` sets REPO/.skewless")
    feature_service: str = Field("fraud_model_v1", description="the model's feature service")

    # The label source: events (with entity keys and request fields) and their labels,
    # joined by the event id. Only labels whose label timestamp passed the cut-off are used.
    events_path: Path | None = Field(None, description="parquet of events (default: raw data)")
    labels_path: Path | None = Field(None, description="parquet of labels (default: raw data)")
    truth_path: Path | None = Field(
        None, description="optional parquet of true probabilities (event id, probability)"
    )
    event_id_column: str = "transaction_id"
    event_timestamp_column: str = "event_timestamp"
    label_column: str = "is_fraud"
    label_timestamp_column: str = "label_timestamp"

    # Time-based split of the training set (by event time, counted back from the last event).
    holdout_days: float = Field(7.0, gt=0)
    validation_days: float = Field(7.0, gt=0)
    seed: int = 7
    dataset_chunk_rows: int = Field(
        1_000_000, gt=0, description="label events per historical retrieval (bounds memory)"
    )

    # The online predictor (`skewless serve`).
    api_host: str = Field("127.0.0.1", description="address the API listens on")
    api_port: int = Field(8000, ge=0, le=65535)
    model_path: Path | None = Field(
        None, description="model artefact directory to serve (default: the latest trained)"
    )
    # Model artefacts: what a model file may cost to read and to check before it is parsed.
    model_max_bytes: int = Field(
        512 * 2**20, gt=0, description="a model file larger than this is refused unread")
    model_check_timeout_seconds: float = Field(
        120.0, gt=0, description="time the check process (a new artefact read, hashed, parsed "
        "by LightGBM and scored once, in a child process) may take; longer is refused")
    model_check_memory_bytes: int = Field(
        4 * 2**30, gt=0, description="data memory the check process may allocate beyond its "
        "imports (RLIMIT_DATA); more is refused")
    redis_timeout_seconds: float = Field(
        0.5, gt=0, description="socket timeout of online reads; an outage answers 503 by then"
    )
    max_body_bytes: int = Field(1_048_576, gt=0, description="larger request bodies get 413")
    request_read_timeout_seconds: float = Field(
        15.0, gt=0, le=3600, description="time a client has to send one request, headers and "
        "body, from its first byte (or from connecting); a client that misses it gets 408 and "
        "its connection is closed")
    batch_max_rows: int = Field(1000, gt=0, description="rows per /predict/batch request")
    explain_max_rows: int = Field(
        100, gt=0, description="rows a request with explain=true may hold (TreeSHAP costs "
        "per row); more is 422")
    model_offload_rows: int = Field(
        16, ge=1, description="a request with more rows than this, or with explain=true, is "
        "scored in the model worker pool, off the event loop")
    model_workers: int = Field(2, ge=1, le=64, description="threads of the model worker pool")
    model_queue: int = Field(
        8, ge=0, description="offloaded requests that may wait for a worker; beyond, 503 with "
        "Retry-After instead of an unbounded queue")
    max_string_length: int = Field(
        1024, gt=0, le=1_000_000, description="characters a string field of a prediction "
        "request may hold (entity keys, request fields, the event id); longer is 422")
    feature_log_enabled: bool = Field(
        True, description="log every served feature vector (off only to measure its cost)"
    )
    feature_age_metrics: bool = Field(
        True, description="export each served value's age by view "
        "(skewless_feature_age_seconds; off only to measure its cost)")
    feature_log_dir: Path | None = Field(
        None, description="where served features are logged (default: the feature service's "
        "logging destination in the Feast repo)"
    )
    feature_log_capacity: int = Field(
        200_000, gt=0, description="unwritten served rows held at most; beyond it /predict "
        "answers 503 rather than drop a row"
    )
    feature_log_durability: Literal["buffer", "spool"] = Field(
        "buffer", description="buffer: accepted rows wait in memory for the next write (a "
        "SIGKILL loses what is buffered); spool: each row is synced to a local spool file "
        "before its answer and replayed at start-up (a SIGKILL loses no answered row)")
    feature_log_spool_dir: Path | None = Field(
        None, description="where spool durability keeps its files (default var/feature_log_spool)")
    feature_log_flush_rows: int = Field(20_000, gt=0, description="rows per log file at most")
    feature_log_flush_seconds: float = Field(2.0, gt=0, description="log write interval")

    # The metadata database (model registry and audit) and its admin API.
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the metadata database (default: SQLite "
        "var/skewless.db); PostgreSQL: postgresql+psycopg://user:pass@host/db")
    admin_token: SecretStr = Field(
        SecretStr(DEVELOPMENT_ADMIN_TOKEN), description="shared bearer token of /admin (an "
        "approver), accepted in development only; elsewhere named tokens (skewless tokens)")
    token_refresh_seconds: float = Field(
        5.0, gt=0, le=300, description="how often a running service re-reads the named API "
        "tokens: a revoked or new token takes effect within this time")
    catalog_auth: bool = Field(False, description="require a viewer token (or higher) for "
                               "/catalog and /api/catalog")
    predict_auth: bool = Field(False, description="require a client token for /predict and "
                               "/predict/batch")
    registry_poll_seconds: float = Field(
        2.0, gt=0, description="how often the predictor checks the registry's production "
        "version (an admin call is noticed at once)")
    gate_metric: str = Field("roc_auc", pattern="^(roc_auc|pr_auc)$",
                             description="metric of the acceptance gate (higher is better)")
    gate_margin: float = Field(
        0.005, ge=0, description="a candidate may score this much below production and pass")
    gate_first_floor: float = Field(
        0.7, ge=0, le=1, description="a first version (no production yet) needs at least "
        "this holdout metric")
    gate_baseline_margin: float = Field(
        0.0, ge=0, description="a candidate must beat the best baseline's holdout metric by "
        "this much (0: at least match it)")
    gate_slice_margin: float = Field(
        0.02, ge=0, description="refused when, on a slice, the 95% interval of (candidate − "
        "production) lies wholly below −this; warned when only the point estimate does")
    gate_slice_min_labels: int = Field(
        200, ge=1, description="slices with fewer labelled holdout rows are not judged")
    gate_slice_min_positives: int = Field(
        20, ge=1, description="… nor those with fewer positives")
    gate_min_group_ratio: float = Field(
        0.8, gt=0, le=1, description="refused when a group rate's ratio (smallest ÷ largest "
        "group, fairlearn's) is confidently below this (its 95% interval's upper bound)")

    # Model evaluation at training time (holdout slices, groups, the decision's costs).
    slices: list[str] = Field(
        [], description="columns to break metrics down by, in training and in the monitor: "
        "a training-set or label-event column; `column:e1,e2` bands a numeric one at those "
        "edges (the demo's repo sets its own in feature_repo/skewless.env)")
    inclusion_groups: list[str] = Field(
        [], description="label-event columns (not model features) whose groups' selection, "
        "true and false positive rates are compared (fairlearn)")
    evaluation_bootstrap: int = Field(
        200, ge=20, le=10_000, description="bootstrap resamples of every interval")
    decision_amount_column: str | None = Field(
        None, description="label-event column holding what a missed positive costs (a "
        "transaction's amount); the decision threshold minimises the expected cost")
    decision_missed_cost: float | None = Field(
        None, ge=0, description="what a missed positive costs when there is no amount column")
    decision_review_fee: float = Field(
        1.0, ge=0, description="what every flagged event costs (a review)")

    # `skewless backtest`: how fast a model goes stale.
    backtest_cutoffs: int = Field(4, ge=2, le=20, description="past cut-offs trained at")
    backtest_step_days: float = Field(7.0, gt=0, description="days between two cut-offs")
    backtest_horizon_days: float = Field(
        14.0, gt=0, description="days after a cut-off each model is evaluated on")
    staleness_margin: float = Field(
        0.01, ge=0, description="the maximum useful age is the first age whose metric falls "
        "below the fresh model's by this much")

    # The feature catalog (`/catalog`, `skewless catalog`).
    catalog_serving_days: float = Field(
        7.0, gt=0, description="served-feature logs of this many recent days give the "
        "catalog's online missing rates and the statistics of on-demand features")
    catalog_online_sample: int = Field(
        200, ge=0, description="entities per feature view whose online values' age "
        "`skewless catalog refresh` samples (0: none)")
    catalog_histogram_bins: int = Field(20, ge=2, le=200, description="histogram bars")

    # Monitoring and continuous training (`skewless monitor`).
    decision_threshold: float = Field(
        0.5, gt=0, lt=1, description="the score at or above which a served prediction is "
        "acted on; monitoring reports precision and recall at it")
    monitor_window_days: float = Field(
        7.0, gt=0, description="served-log window of `skewless monitor` without --since")
    monitor_bucket_hours: float = Field(24.0, gt=0, description="time buckets of performance")
    monitor_psi_threshold: float = Field(
        0.2, gt=0, description="a feature drifted when its PSI reaches this and its test "
        "(KS or chi-squared) is significant")
    monitor_p_value: float = Field(0.01, gt=0, lt=1, description="significance of drift tests")
    monitor_null_tolerance: float = Field(
        0.05, ge=0, le=1, description="served null rate above the training one by more than "
        "this is a data-quality finding")
    monitor_out_of_range_tolerance: float = Field(
        0.05, ge=0, le=1, description="share of served values outside the training range "
        "(or unseen categories) above which it is a data-quality finding")
    monitor_min_labels: int = Field(
        200, ge=1, description="a performance cell with fewer labelled predictions is shown "
        "as too small, not as a number")
    monitor_min_positives: int = Field(10, ge=1, description="… or with fewer positives")
    retrain_top_features: int = Field(
        5, ge=0, description="retrain when any of the model's this many most important "
        "features (by gain) drifted")
    retrain_auc_floor: float = Field(
        0.8, ge=0, le=1, description="… or when its ROC AUC on delayed labels is below this")
    retrain_min_labels: int = Field(1000, ge=1, description="… with at least this many labels")
    retrain_window_days: float = Field(
        28.0, gt=0, description="a retraining learns from the label events of this many "
        "recent days (train, validation and holdout)")
    retrain_source: str = Field(
        "point-in-time", pattern="^(point-in-time|served-logs)$",
        description="a retraining's training set: Feast point-in-time retrieval, or the "
        "served-feature logs joined with their labels")

    # Retention of the served-feature log (`skewless logs prune`).
    log_retention_days: float = Field(
        90.0, gt=0, description="`skewless logs prune` deletes the served-feature log's days "
        "older than this, unless an open rollout, the monitor's or the retraining's window or "
        "rows the skew check has not replayed yet still need them")

    # Rollout: a challenger (shadow or canary) served beside production.
    shadow_budget_ms: float = Field(
        50.0, gt=0, le=10_000, description="how long after a request its challenger score may "
        "arrive; a later (or failed) one is logged as missing and counted. The response never "
        "waits for it (with spool durability it waits at most this long)")
    shadow_queue_rows: int = Field(
        10_000, gt=0, description="rows waiting for their challenger score at most; beyond "
        "it a row is logged without one (outcome overloaded)")
    canary_key: str | None = Field(
        None, description="the entity key whose stable hash picks the canary's requests "
        "(default: the feature service's first entity key), so an entity stays with one "
        "version")
    # The rollout policy (`skewless rollout apply`): each limit on the challenger's evidence
    # since its rollout started, on the same events as production.
    rollout_min_events: int = Field(
        500, ge=1, description="events the challenger scored before errors, latency and "
        "score shift are judged")
    rollout_max_error_rate: float = Field(
        0.01, ge=0, le=1, description="abort when more of the challenger's scores than this "
        "share failed (it raised) or were non-finite")
    rollout_max_missing_rate: float = Field(
        0.05, ge=0, le=1, description="abort when more of the challenger's shadow scores than "
        "this share came after SKEWLESS_SHADOW_BUDGET_MS or were skipped (its queue full): a "
        "challenger too slow for the traffic (a loaded host misses a few)")
    rollout_max_latency_p99_ms: float = Field(
        25.0, gt=0, description="abort when the challenger's model time per row at p99 is "
        "above this (milliseconds)")
    rollout_max_score_psi: float = Field(
        0.25, gt=0, description="abort when the challenger's scores shifted more than this "
        "PSI against production's on the same events")
    rollout_min_labels: int = Field(
        1000, ge=1, description="labelled events before the paired ROC AUC difference decides")
    rollout_promote_margin: float = Field(
        0.0, ge=-1, le=1, description="promote (through the acceptance gate) when the paired "
        "95% interval of ROC AUC(challenger) − ROC AUC(production) lies above this")
    rollout_abort_margin: float = Field(
        0.0, ge=0, le=1, description="abort when that interval lies below −this (the "
        "challenger is worse)")

    # MLflow, for teams that track their runs there (the `mlflow` extra).
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (http(s)://host:port, databricks, or a database "
        "such as sqlite:///path/mlflow.db); when set, `skewless experiment` also logs its "
        "runs there (needs pip install 'skewless[mlflow]'); unset, "
        "MLflow is never imported")
    mlflow_experiment: str = Field(
        "{feature_service}", min_length=1, description="the MLflow experiment runs are logged "
        "to; {feature_service} is replaced by the model's feature service (a workspace path on "
        "Databricks, e.g. /Shared/skewless/{feature_service}); created when missing")
    mlflow_artifact_location: str | None = Field(
        None, description="where an MLflow experiment that Skewless creates keeps its "
        "artefacts (a directory or a URI such as s3://bucket/path); default: the tracking "
        "server's artifact root (./mlruns of the working directory for a database URI); an "
        "existing experiment keeps its own")

    # `skewless worker`: the loop's jobs on schedules. Each is a cron expression (five fields,
    # UTC), an interval ("every 30s", "every 15m", "every 6h", "every 1d"; slots counted from
    # 2000-01-01 UTC, so every worker has the same ones) or "off".
    schedule_materialize: str = Field(
        "5 * * * *", description="`skewless materialize` (expectations first) up to the slot")
    schedule_skew_check: str = Field(
        "25 * * * *", description="`skewless skew-check` over what was served since the last "
        "successful check's slot, at most SKEWLESS_MONITOR_WINDOW_DAYS back")
    schedule_monitor: str = Field(
        "40 2 * * *", description="`skewless monitor --retrain`: the retraining policy, and a "
        "retraining through the gate when it is met")
    schedule_rollout: str = Field(
        "*/15 * * * *", description="`skewless rollout apply`: promote, abort or hold the "
        "challenger")
    schedule_logs_prune: str = Field(
        "10 3 * * *", description="`skewless logs prune`: the served-feature log's retention")
    schedule_catalog_refresh: str = Field(
        "50 */6 * * *", description="`skewless catalog refresh`: the catalog's statistics")
    job_timeout_seconds: float = Field(
        3600.0, gt=0, description="a job's attempt is stopped after this long (SIGINT, then "
        "SIGKILL 10 s later) and counts as timed out")
    job_timeouts: dict[str, float] = Field(
        default_factory=dict, description='per-job timeouts in seconds, as JSON (e.g. '
        '{"materialize": 7200}); the others take SKEWLESS_JOB_TIMEOUT_SECONDS')
    job_retries: int = Field(
        2, ge=0, le=10, description="a failed or timed-out attempt is retried this many times "
        "before the run is recorded as failed")
    job_retry_backoff_seconds: float = Field(
        30.0, ge=0, description="the wait before the first retry; it doubles for each "
        "retry (at most 10 minutes)")
    worker_stop_grace_seconds: float = Field(
        60.0, ge=0, description="on SIGTERM the worker starts nothing new and lets a running "
        "job finish for this long, then stops it (recorded as interrupted)")
    worker_metrics_port: int = Field(
        9108, ge=0, le=65535, description="the worker's Prometheus /metrics port (0: none)")

    @field_validator("schedule_materialize", "schedule_skew_check", "schedule_monitor",
                     "schedule_rollout", "schedule_logs_prune", "schedule_catalog_refresh")
    @classmethod
    def _schedule(cls, value: str) -> str:
        from skewless.schedules import parse_schedule

        parse_schedule(value)  # raises ValueError saying what is wrong
        return value.strip()

    @field_validator("job_timeouts")
    @classmethod
    def _job_timeouts(cls, value: dict[str, float]) -> dict[str, float]:
        from skewless.schedules import JOB_NAMES

        for name, seconds in value.items():
            if name not in JOB_NAMES:
                raise ValueError(f"{name!r} is not a job (jobs: {', '.join(JOB_NAMES)})")
            if not seconds > 0:
                raise ValueError(f"the timeout of {name} must be above 0 seconds")
        return value

    @property
    def jobs_dir(self) -> Path:
        """The worker's job logs, one file per attempt."""
        return self.var_dir / "jobs"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' sources, then the repo's ``skewless.env`` just above the defaults."""
        default_repo = settings_cls.model_fields["repo_path"].default
        return (init_settings, env_settings, dotenv_settings, file_secret_settings,
                RepoSettingsSource(settings_cls, default_repo))

    @property
    def feature_store_yaml(self) -> Path:
        """The repo's feature_store.yaml variant for ``profile``."""
        return self.repo_path / PROFILE_FILES[self.profile]

    @property
    def feast_variables(self) -> dict[str, str]:
        """What the feature_store.yaml variants refer to besides ``${SKEWLESS_REDIS}``."""
        return {"SKEWLESS_SPARK_MASTER": self.spark_master,
                "SKEWLESS_SPARK_DRIVER_MEMORY": self.spark_driver_memory}

    @property
    def repo_settings_path(self) -> Path:
        """The repo's settings file (read when it exists; written by `skewless init`)."""
        return self.repo_path / REPO_SETTINGS_FILE

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'skewless.db'}"

    def serving_problems(self) -> list[str]:
        """What makes this configuration unfit to serve (empty when it is fit)."""
        problems = []
        if self.environment not in ENVIRONMENTS:
            problems.append(f"SKEWLESS_ENVIRONMENT must be one of {', '.join(ENVIRONMENTS)}, "
                            f"not {self.environment!r}")
        return problems

    @property
    def data_dir(self) -> Path:
        """Generated offline data: raw events and the feature tables Feast reads."""
        return self.repo_path / "data"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def skew_report_path(self) -> Path:
        """The last skew check's result (read by /metrics)."""
        return self.skew_report_for(self.feature_service)

    def skew_report_for(self, feature_service: str) -> Path:
        return self.var_dir / "skew" / f"{feature_service}.json"

    @property
    def spool_dir(self) -> Path:
        """Where spool durability keeps the served rows not yet logged."""
        return self.feature_log_spool_dir or self.var_dir / "feature_log_spool"

    @property
    def catalog_stats_path(self) -> Path:
        """Feature statistics computed by `skewless catalog refresh`, read by the catalog."""
        return self.var_dir / "catalog" / "stats.json"

    @property
    def monitor_dir(self) -> Path:
        """`skewless monitor` reports; the latest one is also read by /metrics."""
        return self.var_dir / "monitor"

    @property
    def monitor_report_path(self) -> Path:
        """The latest monitor report of the feature service (read by /metrics)."""
        return self.monitor_dir / f"{self.feature_service}.json"

    @property
    def rollout_dir(self) -> Path:
        """`skewless rollout status|apply` reports; the latest is read by /metrics and the
        catalog."""
        return self.var_dir / "rollout"

    @property
    def rollout_report_path(self) -> Path:
        return self.rollout_dir / f"{self.feature_service}.json"

    @property
    def model_dir(self) -> Path:
        return self.var_dir / "models"

    @property
    def resolved_events_path(self) -> Path:
        return self.events_path or self.raw_dir / "transactions.parquet"

    @property
    def resolved_labels_path(self) -> Path:
        return self.labels_path or self.raw_dir / "labels.parquet"

    @property
    def resolved_truth_path(self) -> Path:
        return self.truth_path or self.raw_dir / "truth.parquet"


def export_for_feast(redis: str | None = None, settings: Settings | None = None) -> None:
    """Make values visible to Feast, which reads them from the process environment.

    feature_store.yaml refers to ``${SKEWLESS_REDIS}`` (and its cluster variant to the Spark
    settings); Feast expands them when it loads the repo config, in this process and in any
    ``feast`` child process.
    """
    os.environ.update(feast_process_env(redis, settings))


def feast_process_env(redis: str | None, settings: Settings | None = None) -> dict[str, str]:
    """The environment for a ``feast`` child process: ours, with Feast's variables set."""
    env = {
        # Spark's Python workers (the cluster profile's compute engine) run this
        # interpreter, whose environment has Feast and the repo's dependencies.
        "PYSPARK_PYTHON": sys.executable,
        # The cluster profile's defaults, for a process given no settings.
        "SKEWLESS_SPARK_MASTER": SPARK_MASTER, "SKEWLESS_SPARK_DRIVER_MEMORY": SPARK_DRIVER_MEMORY,
        **os.environ, "FEAST_USAGE": "False"}
    if settings is not None:
        env.update(settings.feast_variables)
    if redis:
        env["SKEWLESS_REDIS"] = redis
    return env


@contextmanager
def redis_for_feast(redis: str) -> Iterator[None]:
    """Point Feast at ``redis`` for the block, then restore what was there before."""
    previous = os.environ.get("SKEWLESS_REDIS")
    export_for_feast(redis)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SKEWLESS_REDIS", None)
        else:
            os.environ["SKEWLESS_REDIS"] = previous


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
