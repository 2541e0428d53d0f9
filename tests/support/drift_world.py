"""A world that lives through the generator's drift scenario, end to end, with real parts.

Generated with ``end`` = now (so labels of the last days are still outstanding), turned into
feature tables, applied and materialized with Feast's CLI into its own redis-server. The first
model learns from the events between the warm-up (the longest feature window filled) and the
drift day, and is production. The recent events are then scored by the real predictor app
(``/predict/batch``, event ids sent), which logs every served vector. They are scored day by
day, each day after materializing up to its start, as a live service would have seen them:
served with the whole history materialized, every event of a popular merchant would share
the merchant's latest value, a distribution no training row ever had. Since they are scored
days after their time by the wall clock, the world's copy of the views widens their TTL
(2 days) to ``SERVED_DAYS`` + 2 days, so the predictor does not expire the values a live
service would have read fresh; training and serving use the same widened definitions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
from feast import FeatureStore

from service.app import create_app, serve_in_thread
from skewless.feast_cli import run_feast
from skewless.registry import bootstrap_production
from skewless.reports.monitor import MonitorReport
from skewless.settings import Settings, redis_for_feast
from tests.support.demo import copy_feature_repo
from tests.support.service_harness import serve_env
from training.dataset import build_training_set
from training.evaluation.plan import EvaluationPlan
from training.generate import GenerateConfig, generate, write_generated
from training.monitor import default_window, monitor
from training.pipeline import PipelinePaths, build_feature_tables
from training.train import train_model

CARDS = 1_000
DAYS = 110
WARM_UP_DAYS = 56  # the longest window of a feature (merchant labels over 56 days)
DRIFT_DAY = 85
SERVED_DAYS = 10


@dataclass
class World:
    settings: Settings
    now: datetime
    drift_from: datetime | None
    production: str
    served_from: datetime
    served_rows: int


def build_world(root: Path, drift: bool, redis: str, now: datetime) -> World:
    repo = copy_feature_repo(root / "feature_repo")
    views = repo / "features.py"
    ttl = "ttl=timedelta(days=2)"
    assert views.read_text().count(ttl) == 2
    views.write_text(views.read_text().replace(ttl, f"ttl=timedelta(days={SERVED_DAYS + 2})"))
    settings = Settings(repo_path=repo,
                        var_dir=root / "var", redis=redis,
                        feature_log_dir=root / "feature_logs", feature_log_flush_seconds=0.2)
    data = generate(GenerateConfig(cards=CARDS, days=DAYS, end=now,
                                   drift_day=DRIFT_DAY if drift else None,
                                   holdout_days=settings.holdout_days))
    write_generated(data, settings.raw_dir)
    paths = PipelinePaths.from_settings(settings)
    build_feature_tables(paths)
    run_feast(settings, "apply")
    served_days = [now - timedelta(days=SERVED_DAYS - d) for d in range(SERVED_DAYS + 1)]
    run_feast(settings, "materialize", paths.earliest_event().strftime("%Y-%m-%dT%H:%M:%S"),
              served_days[0].strftime("%Y-%m-%dT%H:%M:%S"))
    start = datetime.fromisoformat(data.meta["start"])
    trained_until = start + timedelta(days=DRIFT_DAY)
    ts = build_training_set(settings, cutoff=trained_until,
                            since=start + timedelta(days=WARM_UP_DAYS))
    model = train_model(ts, settings.model_dir, settings.holdout_days, settings.validation_days,
                        evaluation=EvaluationPlan.from_settings(settings))
    production = bootstrap_production(settings, model.directory).version

    served_from = datetime.now(UTC)
    fields = ["transaction_id", "card_id", "merchant_id", "amount", "channel", "local_hour"]
    stamps = data.transactions["event_timestamp"]
    served = 0
    with redis_for_feast(redis):
        store = FeatureStore(repo_path=str(settings.repo_path))
    with serving(settings) as url, httpx.Client(base_url=url, timeout=120) as http:
        for day_from, day_to in zip(served_days, served_days[1:], strict=False):
            if day_from != served_days[0]:
                with redis_for_feast(redis):
                    store.materialize(day_from - timedelta(days=1), day_from)
            events = data.transactions[(stamps >= pd.Timestamp(day_from))
                                       & (stamps < pd.Timestamp(day_to))]
            rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                    for r in events[fields].to_dict("records")]
            for i in range(0, len(rows), settings.batch_max_rows):
                http.post("/predict/batch",
                          json={"rows": rows[i:i + settings.batch_max_rows]}).raise_for_status()
            served += len(rows)
    drift_from = datetime.fromisoformat(data.meta["drift_from"]) if drift else None
    return World(settings, now, drift_from, production, served_from, served)


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The predictor app in a thread; the process's ``SKEWLESS_REDIS`` restored afterwards
    (the app exports its own), so later tests' Feast stores keep their server."""
    assert settings.redis
    with redis_for_feast(settings.redis), serve_in_thread(create_app(settings)) as url:
        yield url


@dataclass
class MonitoredWorld:
    """A drift world after `skewless monitor --retrain` ran on it (in-process and as the CLI)."""

    world: World
    report: MonitorReport
    cli: subprocess.CompletedProcess[str]
    saved: dict  # the JSON the CLI wrote


def hour_now() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def day_now() -> datetime:
    """The start of the current UTC day: a monitored world generated any time that day is
    the same world (ending at the current hour, its retrained model's edge over production
    moved with the hour, and on some hours vanished)."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def monitor_cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    env = serve_env(world.settings, feature_log_dir=world.settings.feature_log_dir)
    return subprocess.run(
        [str(Path(sys.executable).with_name("skewless")), "monitor", "--retrain",
         "--since", world.served_from.isoformat(), *args],
        env={**os.environ, **env, "FEAST_USAGE": "False"}, capture_output=True, text=True,
        timeout=600)


def build_monitored_world(root: Path, redis: str, drift: bool) -> MonitoredWorld:
    """A drift world (with or without the drift) in the redis-server at ``redis``, then
    monitored."""
    world = build_world(root, drift, redis, day_now())
    report = monitor(world.settings, default_window(world.settings, world.served_from, None))
    cli = monitor_cli(world)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    saved = json.loads(world.settings.monitor_report_path.read_text())
    return MonitoredWorld(world, report, cli, saved)
