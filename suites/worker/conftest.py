"""One drift world for the worker's tests: generated, served (its served-feature logs), with a
production model and drift enough that the monitor's retraining policy is met; and a way to
start `skewless worker` processes on it with second-scale schedules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from skewless.embedded_redis import RedisServer, free_port
from skewless.feast_cli import run_feast
from skewless.jobs import JOBS, JobRun, JobRuns, Outcome
from skewless.registry import Registry
from skewless.settings import redis_for_feast
from tests.conftest import (  # noqa: F401  # fixtures and the hook, registered by import
    pytest_collection_modifyitems,
    redis_server,
)
from tests.support.drift_world import World, build_world, day_now, serving
from tests.support.service_harness import serve_env

ALL_OFF = {f"schedule_{name.replace('-', '_')}": "off" for name in JOBS}


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory,
          redis_server: RedisServer) -> World:  # noqa: F811
    """The drift world (drift from day 85 of 110, the last 10 days served)."""
    return build_world(tmp_path_factory.mktemp("worker"), True, redis_server.connection_string,
                       day_now())


@dataclass
class WorkerProcess:
    """A `skewless worker` process; its log (stderr) in ``log``."""

    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def terminate(self, timeout: float = 120) -> int:
        """SIGTERM, then its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def worker_env(world: World, **settings: object) -> dict[str, str]:
    env = serve_env(world.settings, feature_log_dir=world.settings.feature_log_dir,
                    job_retry_backoff_seconds=1, **{**ALL_OFF, **settings})
    return {**os.environ, **env, "FEAST_USAGE": "False"}


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers on the world with settings (schedules, retries ...); all are killed at
    the end of the test if still running."""
    started: list[WorkerProcess] = []

    def start(world: World, **settings: object) -> WorkerProcess:
        port = free_port()
        env = worker_env(world, worker_metrics_port=port, **settings)
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).with_name("skewless")), "worker"], env=env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        worker = WorkerProcess(process, log, port, env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def job_runs(world: World) -> JobRuns:
    return JobRuns.from_settings(world.settings)


def runs_since(world: World, since_id: int) -> list[JobRun]:
    with job_runs(world) as store:
        return sorted((run for run in store.runs(limit=10_000) if run.id > since_id),
                      key=lambda run: run.id)


def last_run_id(world: World) -> int:
    with job_runs(world) as store:
        return max((run.id for run in store.runs(limit=10_000)), default=0)


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             worker: WorkerProcess | None = None, poll: float = 1.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if worker is not None and worker.process.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.process.returncode}) before "
                                 f"{what}:\n{worker.output()[-4000:]}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}"
                         + (f":\n{worker.output()[-4000:]}" if worker else ""))


def serve_fresh(world: World, rows: int = 300) -> datetime:
    """Materialize up to now, then serve the latest events live through the predictor (its
    served-feature log): what a skew check of the following slots replays. Returns when the
    serving began."""
    settings = world.settings
    assert settings.redis
    now = datetime.now(UTC)
    with redis_for_feast(settings.redis):
        run_feast(settings, "materialize-incremental", now.strftime("%Y-%m-%dT%H:%M:%S"))
    events = pd.read_parquet(settings.resolved_events_path).sort_values("event_timestamp")
    fields = ["transaction_id", "card_id", "merchant_id", "amount", "channel", "local_hour"]
    batch = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
             for r in events[fields].tail(rows).to_dict("records")]
    started = datetime.now(UTC)
    with serving(settings) as url, httpx.Client(base_url=url, timeout=120) as http:
        http.post("/predict/batch", json={"rows": batch}).raise_for_status()
    return started


def record_success(world: World, job: str, slot: datetime) -> None:
    """A succeeded run of ``job`` at ``slot``, as a worker records one."""
    with job_runs(world) as store:
        run = store.claim(job, slot, "earlier-worker", slot + timedelta(hours=1), "manual").run
        store.finish(run.id, Outcome.SUCCEEDED, 1, None, None, None)


def versions(world: World) -> list[str]:
    with Registry.from_settings(world.settings) as registry:
        return [row.version for row in registry.versions(world.settings.feature_service)]
