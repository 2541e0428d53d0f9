"""A world for the rollout decision: the drift scenario, served by `skewless serve`.

Production learns from the events before the drift (as in ``drift_world``). Two challengers
learn from everything up to the first served day: one from the true labels (so it has seen
the drift), one from the same rows with their labels shuffled (it learned nothing). The last
``SERVED_DAYS`` days are then scored by `skewless serve` as a subprocess, day by day after
materializing up to each day's start, by concurrent clients sending event ids: the first
half with the shuffled model as the shadow, the second half with the recent one as a canary.
Labels arrive with the generator's delays, so the last days' labels are partly outstanding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from feast import FeatureStore

from skewless.feast_cli import run_feast
from skewless.registry import Registry, bootstrap_production
from skewless.settings import Settings, redis_for_feast
from tests.support.demo import copy_feature_repo
from tests.support.drift_world import CARDS, DAYS, DRIFT_DAY, SERVED_DAYS, WARM_UP_DAYS
from tests.support.service_harness import ServeProcess, serve_env
from training.dataset import TrainingSet, build_training_set
from training.evaluation.plan import EvaluationPlan
from training.generate import GenerateConfig, generate, write_generated
from training.pipeline import PipelinePaths, build_feature_tables
from training.train import train_model

NAME = "fraud_model_v1"
FIELDS = ["transaction_id", "card_id", "merchant_id", "amount", "channel", "local_hour"]
CANARY_PERCENT = 20.0


@dataclass
class RolloutWorld:
    settings: Settings
    env: dict[str, str]
    production: str
    recent: str  # trained up to the first served day, on the true labels
    shuffled: str  # the same rows, labels shuffled
    days: list[datetime]  # the served days' starts (and the end)
    transactions: pd.DataFrame
    store: FeatureStore
    served: int = 0

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(Path(sys.executable).with_name("skewless")), *args],
                              env={**os.environ, **self.env, "FEAST_USAGE": "False"},
                              capture_output=True, text=True, timeout=900)

    def registry(self) -> Registry:
        return Registry.from_settings(self.settings)

    def registry_stage(self, version: str) -> str:
        registry = self.registry()
        try:
            return registry.get(NAME, version).stage
        finally:
            registry.close()

    def serve_days(self, server: ServeProcess, first: int, last: int,
                   clients: int = 4) -> None:
        """Score the events of served days [first, last) through ``server``, each day after
        materializing up to its start, ``clients`` batches at a time."""
        stamps = self.transactions["event_timestamp"]
        for day in range(first, last):
            day_from, day_to = self.days[day], self.days[day + 1]
            if day:
                with redis_for_feast(self.settings.redis or ""):
                    self.store.materialize(day_from - timedelta(days=1), day_from)
            events = self.transactions[(stamps >= pd.Timestamp(day_from))
                                       & (stamps < pd.Timestamp(day_to))]
            rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                    for r in events[FIELDS].to_dict("records")]
            chunks = [rows[i:i + 200] for i in range(0, len(rows), 200)]

            def send(chunk: list[dict[str, Any]]) -> None:
                with httpx.Client(base_url=server.url, timeout=120) as http:
                    http.post("/predict/batch", json={"rows": chunk}).raise_for_status()

            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(send, chunks))
            self.served += len(rows)


def shuffled_labels(ts: TrainingSet, seed: int = 3) -> TrainingSet:
    frame = ts.frame.copy()
    frame[ts.label_column] = np.random.default_rng(seed).permutation(
        frame[ts.label_column].to_numpy())
    return TrainingSet(frame, ts.service, ts.cutoff, ts.label_column, ts.timestamp_column,
                       ts.id_column, ts.origin)


def build_rollout_world(root: Path, redis: str, drift_bonus: float = 2.0) -> RolloutWorld:
    # The data ends at the start of today: the same world all day (ending at the current hour,
    # the recent model's edge over production moved with the hour the test ran at).
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    repo = copy_feature_repo(root / "feature_repo")
    views = repo / "features.py"
    ttl = "ttl=timedelta(days=2)"
    views.write_text(views.read_text().replace(ttl, f"ttl=timedelta(days={SERVED_DAYS + 2})"))
    settings = Settings(repo_path=repo, var_dir=root / "var", redis=redis,
                        feature_log_dir=root / "feature_logs", feature_log_flush_seconds=0.2)
    data = generate(GenerateConfig(cards=CARDS, days=DAYS, end=now, drift_day=DRIFT_DAY,
                                   drift_bonus=drift_bonus, holdout_days=settings.holdout_days))
    write_generated(data, settings.raw_dir)
    paths = PipelinePaths.from_settings(settings)
    build_feature_tables(paths)
    run_feast(settings, "apply")
    days = [now - timedelta(days=SERVED_DAYS - d) for d in range(SERVED_DAYS + 1)]
    run_feast(settings, "materialize", paths.earliest_event().strftime("%Y-%m-%dT%H:%M:%S"),
              days[0].strftime("%Y-%m-%dT%H:%M:%S"))
    start = datetime.fromisoformat(data.meta["start"])
    since = start + timedelta(days=WARM_UP_DAYS)
    plan = EvaluationPlan.from_settings(settings)

    def train(ts: TrainingSet) -> Path:
        return train_model(ts, settings.model_dir, settings.holdout_days,
                           settings.validation_days, evaluation=plan).directory

    before = build_training_set(settings, cutoff=start + timedelta(days=DRIFT_DAY), since=since)
    production = bootstrap_production(settings, train(before)).version
    recent_set = build_training_set(settings, cutoff=days[0], since=since)
    registry = Registry.from_settings(settings)
    try:
        recent = registry.register(train(recent_set)).version
        shuffled = registry.register(train(shuffled_labels(recent_set))).version
    finally:
        registry.close()
    env = serve_env(settings, feature_log_dir=settings.feature_log_dir,
                    feature_log_flush_seconds=0.2, registry_poll_seconds=0.3,
                    # The comparison is under test, not the budget: two test processes share
                    # two cores, so a challenger score may take longer than production's 50 ms.
                    shadow_budget_ms=1000.0,
                    # The recent model learned the drift, so its scores move on the drifted
                    # segment: against production its PSI ranged 0.01–0.43 with the hour the
                    # data was generated at. Its promotion is decided on labels, as the test
                    # means; the shuffled model (PSI ~7) still breaches this limit.
                    rollout_max_score_psi=2.0)
    with redis_for_feast(redis):
        store = FeatureStore(repo_path=str(repo))
    return RolloutWorld(settings, env, production, recent, shuffled, days,
                        data.transactions, store)
