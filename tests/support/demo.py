"""The demo world: a demo-sized Feast repo run through the whole offline spine.

Every test that needs Feast works on a copy of feature_repo/ in a temporary directory, so
tests never touch the developer's data, and the repo's absolute source paths point into
the copy.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from skewless.embedded_redis import RedisServer
from skewless.feast_cli import run_feast
from skewless.registry import bootstrap_production
from skewless.settings import PROJECT_ROOT, Settings
from training.dataset import TrainingSet, build_training_set
from training.evaluation.plan import EvaluationPlan
from training.generate import GenerateConfig, GeneratedData, generate, write_generated
from training.pipeline import PipelinePaths, build_feature_tables
from training.train import TrainResult, train_model

DEMO_END = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
REPO_FILES = ("feature_store.yaml", "feature_store.cluster.yaml", ".feastignore", "entities.py",
              "data_sources.py", "features.py", "on_demand.py", "feature_services.py", "expectations.py",
              "skewless.env")


def copy_feature_repo(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in REPO_FILES:
        shutil.copy(PROJECT_ROOT / "feature_repo" / name, target / name)
    return target


@dataclass
class DemoRepo:
    settings: Settings
    data: GeneratedData
    paths: PipelinePaths
    training_set: TrainingSet
    model: TrainResult
    cutoff: datetime

    def store(self):
        from feast import FeatureStore

        return FeatureStore(repo_path=str(self.settings.repo_path))


def build_demo(root: Path, redis: RedisServer) -> DemoRepo:
    """The demo data set, run through the whole offline spine once, its model in production."""
    settings = Settings(
        repo_path=copy_feature_repo(root / "feature_repo"), var_dir=root / "var",
        redis=redis.connection_string,
    )
    data = generate(GenerateConfig(end=DEMO_END, holdout_days=settings.holdout_days))
    write_generated(data, settings.raw_dir)
    paths = PipelinePaths.from_settings(settings)
    build_feature_tables(paths)
    run_feast(settings, "apply")
    ts = build_training_set(settings, cutoff=DEMO_END)
    model = train_model(ts, settings.model_dir, settings.holdout_days, settings.validation_days,
                        truth_path=settings.resolved_truth_path,
                        evaluation=EvaluationPlan.from_settings(settings))
    bootstrap_production(settings, model.directory)  # the predictor serves production
    return DemoRepo(settings, data, paths, ts, model, DEMO_END)
