"""`skewless worker` with second-scale schedules, on a real drift world: real Redis, SQLite,
Feast, LightGBM, and the jobs' own commands in child processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from skewless.jobs import JOBS
from suites.worker.conftest import (
    last_run_id,
    record_success,
    runs_since,
    serve_fresh,
    versions,
    wait_for,
    worker_env,
)
from tests.support.debian import ensure_commands

EVERY = "every 30s"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def partial_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.partial")]


def commands_running(*words: str) -> list[list[str]]:
    """The job commands (``python -m skewless.cli ...``) running now, with these words."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "skewless.cli" in cmdline and set(words) <= set(cmdline):
            found.append(cmdline)
    return found


def test_sigterm_during_a_job_stops_it_cleanly(world, start_worker):
    """SIGTERM while the monitor retrains (first in this file: the world's drift calls for a
    retraining). With no grace, sent when the retrained model's files appear (it is about to
    be registered): the run is recorded as interrupted, with no staged file left, no process
    left, and at most the one registration it reports. With grace, sent as the run starts:
    the run finishes, registers once and writes its report whole."""
    report = world.settings.monitor_report_path
    models = world.settings.model_dir
    for grace, expected in ((0, "interrupted"), (600, "succeeded")):
        first = last_run_id(world)
        before = versions(world)
        trained = set(models.glob("*/*"))  # model name / version
        worker = start_worker(world, schedule_monitor="every 10s",
                              worker_stop_grace_seconds=grace)
        running = wait_for(
            lambda first=first: [r for r in runs_since(world, first) if r.outcome == "running"],
            120, "the monitor to start", worker, poll=0.2)
        if grace == 0:
            wait_for(lambda trained=trained: set(models.glob("*/*")) - trained, 300,
                     "the retrained model's files", worker, poll=0.2)
        else:
            wait_for(lambda: commands_running("monitor"), 60, "the monitor's process", worker,
                     poll=0.1)
        assert worker.terminate(timeout=700) == 0
        run = [r for r in runs_since(world, first) if r.id == running[0].id][0]
        assert run.outcome == expected, (run.to_json(), worker.output()[-3000:])
        assert [r.id for r in runs_since(world, first) if r.outcome != "skipped"] == [run.id]
        new = sorted(set(versions(world)) - set(before))
        reported = (run.produced or {}).get("registered")
        assert new == ([reported] if reported else []), (new, run.produced)
        assert not partial_files(world.settings.var_dir)
        assert not commands_running()
        if expected == "succeeded":
            doc = json.loads(report.read_text())
            assert run.produced["retrain"] is True and doc["retraining"]["outcome"] == "promoted"
            assert new == [doc["retraining"]["candidate"]]
        else:
            assert "stopped when the worker was told to stop" in run.error


def test_a_failing_job_is_retried_then_recorded_and_the_others_keep_running(world, start_worker):
    """Redis down for materialization (its attempts fail: the world's last snapshot is not
    materialized yet, so there are rows to write; this test runs before any job materializes
    it), the monitor given less time than it needs (stopped), and log retention healthy
    beside them."""
    first = last_run_id(world)
    worker = start_worker(world, redis="127.0.0.1:1", job_retries=1,
                          job_timeouts=json.dumps({"monitor": 3}),
                          schedule_materialize="every 20s", schedule_monitor="every 20s",
                          schedule_logs_prune="every 10s")

    def finished(job):
        return [run for run in runs_since(world, first)
                if run.job == job and run.outcome not in ("running", "skipped")]

    wait_for(lambda: finished("materialize") and finished("monitor")
             and len([r for r in finished("logs-prune") if r.outcome == "succeeded"]) >= 3,
             300, "the failures and three log retentions", worker)
    assert worker.terminate() == 0
    materialize = finished("materialize")[0]
    assert materialize.outcome == "failed" and materialize.attempts == 2, materialize.to_json()
    assert materialize.error.startswith("exit code 1")
    assert materialize.error.endswith("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    monitor = finished("monitor")[0]
    assert monitor.outcome == "timed_out" and monitor.attempts == 2, monitor.to_json()
    assert monitor.error.startswith("timed out after 3 s")
    assert "attempt 1 failed; retrying in 1 s" in worker.output()
    assert "attempt 1 timed_out; retrying in 1 s" in worker.output()
    # Retention went on, slot after slot, while the others failed.
    prunes = [r for r in finished("logs-prune") if r.outcome == "succeeded"]
    assert len({r.slot for r in prunes}) == len(prunes) >= 3
    assert not partial_files(world.settings.var_dir)


def test_each_job_runs_on_its_schedule_and_is_recorded(world, start_worker):
    # The world's own served rows were scored days after their events (a simulation the skew
    # check rightly flags): a check up to now is recorded, then live requests are served.
    record_success(world, "skew-check", datetime.now(UTC).replace(microsecond=0))
    serve_fresh(world)
    first = last_run_id(world)
    before = versions(world)
    worker = start_worker(world, **{f"schedule_{name.replace('-', '_')}": EVERY
                                    for name in JOBS})

    def all_succeeded():
        done = {run.job for run in runs_since(world, first) if run.outcome == "succeeded"}
        return done >= set(JOBS)

    wait_for(all_succeeded, 480, "a successful run of every job", worker)
    metrics = scrape(worker.metrics_port)
    exposition = urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics",
                                        timeout=10).read()
    assert worker.terminate() == 0
    promtool = ensure_commands({"promtool": "prometheus"})["promtool"]
    linted = subprocess.run([promtool, "check", "metrics"], input=exposition,
                            capture_output=True)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    runs = runs_since(world, first)
    output = worker.output()
    assert "stopped" in output.splitlines()[-1], output[-2000:]

    succeeded = {}  # each job's first successful run
    for run in runs:
        if run.outcome == "succeeded":
            succeeded.setdefault(run.job, run)
    for name, run in succeeded.items():
        assert run.trigger == "schedule" and run.attempts == 1 and run.error is None
        assert run.slot.second in (0, 30) and run.slot.microsecond == 0  # its slot, not its start
        assert run.started_at >= run.slot and run.ended_at > run.started_at
        assert Path(run.log_path).is_file(), name
    # What each run produced, as the commands reported it.
    assert succeeded["materialize"].produced == {
        "materialized_until": succeeded["materialize"].slot.isoformat()}
    skew = succeeded["skew-check"].produced
    assert skew["mismatches"] == 0 and skew["rows"] > 0, skew
    assert json.loads(Path(skew["report"]).read_text())["mismatches"] == 0
    monitor = succeeded["monitor"].produced
    assert monitor["report"] == str(world.settings.monitor_report_path) and monitor["rows"] > 0
    assert isinstance(monitor["retrain"], bool), monitor
    # Registered once per monitor run that retrained, never twice.
    registered = [run.produced.get("registered") for run in runs
                  if run.job == "monitor" and run.produced]
    assert sorted(v for v in registered if v) == sorted(set(versions(world)) - set(before))
    assert succeeded["rollout"].produced["action"] in ("wait", "none", "hold", "promote",
                                                       "abort"), succeeded["rollout"].produced
    assert succeeded["logs-prune"].produced["bound_by"]
    assert Path(succeeded["catalog-refresh"].produced["report"]).is_file()
    # A slot runs once; a job still running when its next slot came skipped that slot.
    slots = Counter((run.job, run.slot) for run in runs)
    assert max(slots.values()) == 1
    for run in runs:
        if run.outcome == "skipped":
            assert "still running" in run.error
    # Metrics: the last success of each job (from the database) and this worker's runs.
    for name, run in succeeded.items():
        labels = (("job_name", name),)
        assert metrics[("skewless_job_last_success_timestamp_seconds", labels)] >= \
            run.ended_at.timestamp() - 0.001
        assert metrics[("skewless_job_expected_period_seconds", labels)] == 30
        assert metrics[("skewless_job_runs_total",
                        (("job_name", name), ("outcome", "succeeded")))] >= 1
    assert metrics[("skewless_job_database_up", ())] == 1
    assert not partial_files(world.settings.var_dir)


def test_two_workers_started_together_run_each_slot_once(world, start_worker):
    first = last_run_id(world)
    settings = {"schedule_logs_prune": "every 10s", "schedule_rollout": "every 10s"}
    workers = [start_worker(world, **settings), start_worker(world, **settings)]
    wait_for(lambda: len([r for r in runs_since(world, first) if r.outcome == "succeeded"]) >= 8,
             240, "eight runs", workers[0])
    for worker in workers:
        assert worker.terminate() == 0
    runs = runs_since(world, first)
    # Every attempt the workers started, by (job, slot): each exactly once, on one worker.
    started = Counter()
    for worker in workers:
        for job, slot in re.findall(r" (\S+): slot (\S+) started", worker.output()):
            started[(job, slot)] += 1
    assert started and max(started.values()) == 1, started
    ran = {(r.job, r.slot.isoformat()) for r in runs if r.outcome != "skipped"}
    assert set(started) == ran
    # The slots each worker found taken were the other's.
    assert any("is " in line and "'s" in line for w in workers for line in w.output().splitlines()
               if ": slot " in line)


def test_jobs_run_runs_a_slot_once_and_jobs_list_and_show_read_the_record(world):
    """What a scheduler outside Skewless calls: the slot's run, then a rerun of the same
    slot answered with the recorded outcome, not run again."""
    env = worker_env(world)
    cli = [str(Path(sys.executable).with_name("skewless"))]
    slot = "2026-12-04T06:00:00+00:00"

    def skewless(*args):
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True,
                              timeout=300)

    first, again = skewless("jobs", "run", "logs-prune", "--slot", slot), None
    assert first.returncode == 0, first.stdout + first.stderr
    again = skewless("jobs", "run", "logs-prune", "--slot", slot)
    assert again.returncode == 0 and "(run before, by " in again.stdout, again.stdout
    runs = json.loads(skewless("jobs", "list", "--job", "logs-prune", "--json").stdout)
    mine = [r for r in runs if r["slot"] == slot]
    assert len(mine) == 1 and mine[0]["trigger"] == "manual" and mine[0]["attempts"] == 1
    assert f"run {mine[0]['id']} of logs-prune" in first.stdout
    shown = json.loads(skewless("jobs", "show", str(mine[0]["id"]), "--json").stdout)
    assert shown == mine[0]
    log = skewless("jobs", "show", str(mine[0]["id"]), "--log")
    assert "--- stdout" in log.stdout and '"bound_by"' in log.stdout
    unknown = skewless("jobs", "run", "materialise")
    assert unknown.returncode == 1 and "'materialise' is not a job" in unknown.stdout
    missing = skewless("jobs", "show", "999999")
    assert missing.returncode == 1 and "job run 999999 not found" in missing.stdout


def test_a_finding_is_recorded_as_failed_without_retries(world, monkeypatch, tmp_path):
    """A skew check over the world's own served rows (scored days after their events, which
    the check rightly flags) exits 1 with its report: a finding, not retried."""
    from skewless.jobs import Context, JobRuns
    from skewless.worker import Worker

    for key, value in worker_env(world).items():
        if key.startswith("SKEWLESS_"):
            monkeypatch.setenv(key, value)
    slot = datetime.now(UTC).replace(microsecond=0)
    with JobRuns.from_settings(world.settings) as store:
        worker = Worker(world.settings, store, name="test")
        attempt = worker.attempt(JOBS["skew-check"], Context(world.settings, slot, None), 0, 1)
    assert attempt.outcome == "failed" and not attempt.retryable
    mismatches = attempt.produced["mismatches"]
    assert mismatches > 0
    assert attempt.error == f"exit code 1: {mismatches} served values differ from the " \
                            "training path's"
