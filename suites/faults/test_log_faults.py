"""The served-feature log under faults, against `skewless serve` under a concurrent client:
its disk full, and the process killed with SIGKILL in both durability modes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from suites.faults.load import Load
from tests.support.service_harness import ROW, ServeProcess, read_logs, serve_env

pytestmark = pytest.mark.redis

FLUSH_SECONDS = 1.0


@contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the test's duration."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; the filler's path."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as fh:
        for size in (1 << 16, 1 << 12, 1):  # large writes, then smaller, to the last byte
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                pass
    return filler


def staging_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if p.is_file()]


def test_a_full_log_disk_refuses_with_503_then_writes_every_accepted_row_once(demo, tmp_path):
    log = tmp_path / "log"
    with small_filesystem(log, "2m"):
        filler = fill(log)
        env = serve_env(demo.settings, feature_log_dir=log, feature_log_capacity=400,
                        feature_log_flush_seconds=0.2)
        server = ServeProcess(env, tmp_path / "serve.log").start()
        try:
            with Load(server.url, [ROW], workers=4) as load:
                # Predictions go on while the buffer has room, then 503 naming the log.
                assert load.wait_for(lambda o: any(x.status == 503 for x in o), timeout=30)
                # The writer keeps failing meanwhile, and every failed write removes its file:
                # a write in progress may be caught at any instant, but none outlives its
                # attempt (each attempt's file has a name of its own).
                seen = []
                for _ in range(4):
                    time.sleep(0.4)
                    seen.append({p.name for p in staging_files(log)})
                assert all(len(names) <= 1 for names in seen), seen
                assert all(not (a & b) for a, b in zip(seen, seen[1:], strict=False)), seen
                ready = httpx.get(server.url + "/readyz", timeout=5)
                assert ready.status_code == 503 and "feature log" in ready.json()["detail"]
                full = len(load.outcomes)
                filler.unlink()  # space returns
                assert load.wait_for(
                    lambda o: len(o) > full + 200 and all(x.status == 200 for x in o[-50:]),
                    timeout=30)
            outcomes = load.outcomes
            refused = [o for o in outcomes if o.status != 200]
            assert refused, "the disk was full but nothing was refused"
            assert {(o.status, (o.detail or "")[:22]) for o in refused} == \
                {(503, "feature log buffer ful")}
            assert "No space left on device" in (refused[-1].detail or "")
        finally:
            server.stop()
        logged = read_logs(log)
        assert len(logged) == sum(o.status == 200 for o in outcomes)
        assert logged["__request_id"].is_unique
        assert staging_files(log) == []


def run_until_killed(env: dict[str, str], tmp_path: Path, seconds: float,
                     ) -> tuple[ServeProcess, list, float]:
    """`skewless serve` under load for ``seconds``, then SIGKILL; the outcomes and the rate of
    answered predictions per second."""
    server = ServeProcess(env, tmp_path / "serve.log").start()
    with Load(server.url, [ROW], workers=4) as load:
        assert load.wait_for(lambda o: sum(x.status == 200 for x in o) >= 50, timeout=30)
        started = time.monotonic()
        time.sleep(seconds)
        server.kill()
        ran = time.monotonic() - started
    outcomes = load.outcomes
    return server, outcomes, sum(o.status == 200 for o in outcomes) / max(ran, 1e-9)


def answered_ids(outcomes: list) -> set[str]:
    return {o.request_id for o in outcomes if o.status == 200}


def test_sigkill_in_buffer_mode_loses_at_most_the_unwritten_buffer(demo, tmp_path, figure):
    log = tmp_path / "log"
    env = serve_env(demo.settings, feature_log_dir=log, feature_log_flush_seconds=FLUSH_SECONDS)
    _, outcomes, rate = run_until_killed(env, tmp_path, seconds=4.0)
    answered = answered_ids(outcomes)
    logged = set(read_logs(log)["__request_id"]) if log.exists() else set()
    lost = answered - logged
    lost_seconds = len(lost) / rate
    figure(f"buffer mode SIGKILL: {len(lost)} of {len(answered)} answered rows lost = "
          f"{lost_seconds:.2f} s of traffic at {rate:.0f} predictions/s "
          f"(flush interval {FLUSH_SECONDS} s)")
    # The documented bound: what arrived since the last write, one flush interval plus the
    # write itself.
    assert lost_seconds <= FLUSH_SECONDS + 1.0
    assert len(logged - answered) <= 4  # only requests in flight at the kill (4 workers)


def test_sigkill_in_spool_mode_loses_no_answered_row(demo, tmp_path, figure):
    log = tmp_path / "log"
    env = serve_env(demo.settings, feature_log_dir=log, feature_log_flush_seconds=FLUSH_SECONDS,
                    feature_log_durability="spool", feature_log_spool_dir=tmp_path / "spool")
    _, outcomes, rate = run_until_killed(env, tmp_path, seconds=4.0)
    answered = answered_ids(outcomes)
    assert list((tmp_path / "spool").glob("*.spool"))  # left by the killed process
    # Restarted: the spool is replayed at start-up, then the service stops cleanly.
    server = ServeProcess(env, tmp_path / "serve-2.log").start()
    ready = httpx.get(server.url + "/readyz", timeout=5).json()["feature_log"]
    server.stop()
    logged = read_logs(log)["__request_id"]
    figure(f"spool mode SIGKILL: {len(answered - set(logged))} of {len(answered)} answered rows "
          f"lost at {rate:.0f} predictions/s; {ready['rows_replayed']} replayed at restart")
    assert answered <= set(logged)
    assert logged.is_unique
    assert ready["durability"] == "spool" and ready["rows_replayed"] > 0
    assert not list((tmp_path / "spool").glob("*.spool"))
