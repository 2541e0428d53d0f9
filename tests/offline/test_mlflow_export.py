"""MLflow export: an experiment mirrored into a real MLflow tracking store, read back.

The tracking store is MLflow's own SQLAlchemy store on a private SQLite file (MLflow 3.13+
refuses a bare file store), made once for the module; each test logs to an MLflow experiment
of its own, its artefacts in the test's directory: what a team's tracking server keeps, minus
the HTTP hop. A tenth of the demo's training set keeps a trial near a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Experiment, Run, ViewType

from skewless.db import upgrade
from skewless.errors import InvalidInput
from skewless.experiments import Experiments
from skewless.registry import Registry
from skewless.settings import PROJECT_ROOT, Settings
from tests.support.experiments import QUICK_SPACE
from training.experiment import run_experiment
from training.mlflow_export import MlflowExport, MlflowUnavailable, redacted

TRIALS = 6
STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


@pytest.fixture(scope="module")
def small_set(demo, tmp_path_factory) -> Path:
    ts = demo.training_set
    frame = ts.frame.sample(frac=0.1, random_state=3).sort_values(ts.timestamp_column)
    return replace(ts, frame=frame.reset_index(drop=True)).write(
        tmp_path_factory.mktemp("mlflow") / "small.parquet")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # MLflow creates its tables
    return uri


@pytest.fixture
def settings(demo, tracking_uri, tmp_path, request) -> Settings:
    """The demo's settings with a metadata database and an MLflow experiment of the test's."""
    updated = demo.settings.model_copy(update={
        "var_dir": tmp_path / "var",
        "mlflow_tracking_uri": tracking_uri,
        "mlflow_experiment": f"{request.node.name}/{{feature_service}}",
        "mlflow_artifact_location": str(tmp_path / "mlflow-artifacts"),
    })
    upgrade(updated.resolved_database_url)
    return updated


def mlflow_experiment_of(client: MlflowClient, settings: Settings) -> Experiment:
    found = client.get_experiment_by_name(
        settings.mlflow_experiment.replace("{feature_service}", settings.feature_service))
    assert found is not None
    return found


def children_of(client: MlflowClient, parent: Run) -> list[Run]:
    return client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        run_view_type=ViewType.ALL)


def ms(moment) -> int:
    return int(moment.timestamp() * 1000)


def test_an_experiment_is_mirrored_in_mlflow_run_by_run(settings, small_set, tmp_path):
    result = run_experiment(settings, small_set, TRIALS, seed=5, space=QUICK_SPACE, name="mirrored")
    experiment = result.experiment
    assert result.mlflow.error is None

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    mlflow_experiment = mlflow_experiment_of(client, settings)
    assert mlflow_experiment.name.endswith(f"/{experiment.feature_service}")
    assert mlflow_experiment.artifact_location.endswith("mlflow-artifacts")
    runs = client.search_runs([mlflow_experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = children_of(client, parent)
    assert len(runs) == 1 + TRIALS and len(children) == TRIALS
    assert result.mlflow.describe().endswith(f"run {parent.info.run_id}")

    # The parent: the search, its outcome and the registered model's holdout metrics.
    assert parent.info.run_name == "mirrored" and parent.info.status == "FINISHED"
    assert parent.data.params["seed"] == "5" and parent.data.params["trials"] == str(TRIALS)
    assert parent.data.params["metric"] == experiment.metric
    tags = parent.data.tags
    assert tags["skewless.experiment_id"] == str(experiment.id)
    assert tags["skewless.dataset_sha256"] == experiment.dataset_sha256
    assert tags.get("skewless.git_commit") == experiment.git_commit
    assert tags["skewless.model_version"] == experiment.model_version
    assert tags["skewless.state"] == "complete"
    assert experiment.holdout is not None
    assert parent.data.metrics["holdout_roc_auc"] == experiment.holdout["roc_auc"]
    best = experiment.best_run
    assert best is not None
    assert parent.data.metrics[f"validation_{experiment.metric}"] == best.value
    assert (parent.info.start_time, parent.info.end_time) == (
        ms(experiment.started_at), ms(experiment.finished_at))
    shown = json.loads(Path(client.download_artifacts(
        parent.info.run_id, "experiment.json", str(tmp_path / "parent"))).read_text())
    assert shown["id"] == experiment.id and len(shown["run_list"]) == TRIALS

    # One child per trial, equal to the database's run.
    by_run = {int(c.data.tags["skewless.run_id"]): c for c in children}
    assert sorted(by_run) == sorted(r.id for r in experiment.runs)
    for run in experiment.runs:
        child = by_run[run.id]
        assert child.info.run_name == f"trial {run.number}"
        assert child.info.status == STATUS[run.state]
        assert child.data.params == {k: str(v) for k, v in run.params.items()}
        assert child.data.tags["skewless.state"] == run.state
        assert child.data.tags["skewless.trial"] == str(run.number)
        assert child.data.tags["skewless.experiment_id"] == str(experiment.id)
        assert child.data.tags["skewless.dataset_sha256"] == experiment.dataset_sha256
        assert child.data.tags.get("skewless.git_commit") == experiment.git_commit
        assert (child.info.start_time, child.info.end_time) == (
            ms(run.started_at), ms(run.finished_at))
        metrics = child.data.metrics
        assert metrics.get(f"validation_{experiment.metric}") == run.value
        assert metrics["rounds"] == run.metrics["rounds"]
        assert metrics["duration_seconds"] == pytest.approx(run.duration_seconds)
        history = client.get_metric_history(child.info.run_id, "validation_auc")
        assert len(history) == len(run.steps["auc"]) >= run.metrics["rounds"]
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(
            enumerate(run.steps["auc"], start=1))

    # The best child carries the registered model: its file, byte for byte, and contract.
    child = by_run[best.id]
    assert child.data.tags["skewless.best"] == "true"
    assert parent.data.tags["skewless.best_mlflow_run_id"] == child.info.run_id
    assert child.data.metrics["holdout_roc_auc"] == experiment.holdout["roc_auc"]
    assert sorted(a.path for a in client.list_artifacts(child.info.run_id, "model")) == [
        "model/contract.json", "model/model.txt"]
    local = Path(client.download_artifacts(child.info.run_id, "model", str(tmp_path / "best")))
    with Registry.from_settings(settings) as registry:
        row = registry.get(experiment.feature_service, experiment.model_version)
    text = (local / "model.txt").read_bytes()
    assert text == (Path(row.artifact_uri) / "model.txt").read_bytes()
    contract = json.loads((local / "contract.json").read_text())
    assert hashlib.sha256(text).hexdigest() == contract["model"]["sha256"] == row.sha256
    assert contract["training"]["experiment_run"]["id"] == best.id
    assert [c for c in children if "skewless.best" in c.data.tags] == [child]


def test_mlflow_failing_mid_search_costs_no_skewless_record(settings, small_set, caplog):
    """The MLflow experiment is deleted after the first trial is logged: logging there
    stops with one warning (the second trial's), the search completes and registers its
    model."""
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)

    def delete_after_first(run: dict) -> None:
        if run["number"] == 0:
            client.delete_experiment(mlflow_experiment_of(client, settings).experiment_id)

    with caplog.at_level(logging.WARNING, logger="training.mlflow_export"):
        result = run_experiment(settings, small_set, 2, seed=5, space=QUICK_SPACE, on_run=delete_after_first)
    assert result.experiment.state == "complete" and len(result.experiment.runs) == 2
    assert result.experiment.model_version is not None
    with Experiments.from_settings(settings) as store:
        assert [r.number for r in store.get(result.experiment.id).runs] == [0, 1]
    error = result.mlflow.error
    assert error is not None and error.startswith("logging trial 1: MlflowException")
    warned = [r.getMessage() for r in caplog.records if r.name == "training.mlflow_export"]
    assert len(warned) == 1 and settings.mlflow_tracking_uri in warned[0]
    assert "logging stopped" in result.mlflow.describe()

    # What reached MLflow before stays there: the parent and the first trial.
    found = mlflow_experiment_of(client, settings)
    assert found.lifecycle_stage == "deleted"
    runs = client.search_runs([found.experiment_id], run_view_type=ViewType.ALL)
    assert sorted(r.data.tags.get("skewless.trial", "parent") for r in runs) == ["0", "parent"]


def test_a_search_that_stops_leaves_its_parent_run_failed(settings, small_set):
    def stop(run: dict) -> None:
        raise RuntimeError("stopped after the first trial")

    with pytest.raises(RuntimeError, match="stopped after the first trial"):
        run_experiment(settings, small_set, 3, seed=5, space=QUICK_SPACE, on_run=stop)
    with Experiments.from_settings(settings) as store:
        (experiment,) = store.all()
    assert (experiment.state, len(experiment.runs)) == ("failed", 1)
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    runs = client.search_runs([mlflow_experiment_of(client, settings).experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert (parent.info.status, parent.data.tags["skewless.state"]) == ("FAILED", "failed")
    assert parent.data.tags["skewless.error"] == experiment.error == (
        "RuntimeError: stopped after the first trial")
    assert [r.data.tags["skewless.trial"] for r in children_of(client, parent)] == ["0"]


def test_an_unreachable_mlflow_stops_the_experiment_before_it_starts(settings, small_set,
                                                                    monkeypatch):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = settings.model_copy(update={
        "mlflow_tracking_uri": f"http://team:s3cret@127.0.0.1:{port}"})
    with pytest.raises(MlflowUnavailable) as raised:
        run_experiment(settings, small_set, 3, seed=5, space=QUICK_SPACE)
    message = str(raised.value)
    assert f"http://team:***@127.0.0.1:{port}" in message and "s3cret" not in message
    assert "nothing was started" in message and raised.value.__cause__ is None
    with Experiments.from_settings(settings) as store:
        assert store.all() == []
    assert not settings.model_dir.exists()


@pytest.mark.parametrize(("uri", "shown"), [
    ("https://team:s3cret@mlflow.internal:5000/x", "https://team:***@mlflow.internal:5000/x"),
    ("postgresql://ml:pw@db/mlflow", "postgresql://ml:***@db/mlflow"),
    ("https://mlflow.internal", "https://mlflow.internal"),
    ("sqlite:////var/mlflow.db", "sqlite:////var/mlflow.db"),
    ("databricks", "databricks"),
])
def test_a_tracking_uri_is_shown_without_its_password(uri, shown):
    assert redacted(uri) == shown


def test_a_run_on_a_tracking_server_is_named_with_its_page():
    export = MlflowExport(None, "https://team:s3cret@mlflow.internal/", "4", "fraud_model_v1")
    export.parent = "abc123"
    assert export.describe() == (
        "MLflow https://team:***@mlflow.internal/, experiment 'fraud_model_v1' (id 4), run "
        "abc123: https://team:***@mlflow.internal/#/experiments/4/runs/abc123")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKEWLESS_MLFLOW")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(PROJECT_ROOT)}, cwd=PROJECT_ROOT,
                          timeout=120)


def test_without_the_setting_nothing_imports_mlflow():
    done = run_python(
        "import sys\n"
        "from optuna_integration import LightGBMPruningCallback\n"
        "from skewless.cli import app\n"
        "from skewless.settings import get_settings\n"
        "from training.experiment import run_experiment\n"
        "from training.mlflow_export import mlflow_exporter\n"
        "export = mlflow_exporter(get_settings(), 'fraud_model_v1')\n"
        "export.start(None); export.log_run(None); export.fail('x')\n"
        "print(export.describe(), sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "[]"]


def test_with_the_setting_but_without_the_extra_the_error_names_the_extra():
    done = run_python(
        "import sys\n"
        "sys.modules['mlflow'] = None  # as if the extra were not installed\n"
        "from skewless.settings import get_settings\n"
        "from training.mlflow_export import mlflow_exporter\n"
        "mlflow_exporter(get_settings(mlflow_tracking_uri='sqlite:///x.db'), 'svc')\n")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{InvalidInput.__module__}.InvalidInput: ")
    assert "pip install 'skewless[mlflow]'" in last and "sqlite:///x.db" in last
