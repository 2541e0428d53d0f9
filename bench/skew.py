"""Skew-check benchmark: replay 100k served rows through the training path (wall, peak RSS).

Setup as bench/serve.py (a temp copy of the repo, demo data ending this hour, a model, a
private redis-server materialized with the whole window), then the predictor serves
``--rows`` real transactions through ``/predict/batch`` (1,000 rows a call), and
``skewless skew-check --json`` runs as its own process over them, timed with its peak RSS.

    .venv/bin/python bench/skew.py [--rows 100000]

Results are printed and written to ``var/bench/skew.json``. Target: under 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
RESULTS = ROOT / "var" / "bench" / "skew.json"


def serve_rows(fx, rows: int) -> float:  # type: ignore[no-untyped-def]
    """Serve ``rows`` recent transactions through the predictor; returns seconds."""
    import httpx

    from service.app import create_app, serve_in_thread
    from skewless.settings import Settings

    settings = Settings(repo_path=fx.repo, var_dir=fx.var, redis=fx.redis,
                        feature_log_flush_rows=50_000)
    fields = ["card_id", "merchant_id", "amount", "channel", "local_hour"]
    recent = fx.transactions.tail(rows)[fields]
    body = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in recent.to_dict("records")]
    with serve_in_thread(create_app(settings)) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        started = time.perf_counter()
        for i in range(0, len(body), 1000):
            http.post("/predict/batch", json={"rows": body[i:i + 1000]}).raise_for_status()
        seconds = time.perf_counter() - started
    return seconds


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a command; its wall time and the peak RSS of its process, sampled every 50 ms."""
    import psutil

    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        popen = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        process, peak = psutil.Process(popen.pid), 0
        while popen.poll() is None:
            try:
                peak = max(peak, process.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.05)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(cmd, popen.returncode, out.read(), err.read())
    return wall, peak / 2**20, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    os.environ["FEAST_USAGE"] = "False"
    from serve import build_fixture  # bench/serve.py: the same set-up

    from skewless.embedded_redis import RedisServer, find_redis_server
    from skewless.settings import export_for_feast

    with tempfile.TemporaryDirectory(prefix="skewless-bench-skew-") as tmp:
        redis = RedisServer(binary=find_redis_server(), data_dir=Path(tmp) / "redis",
                            persist=False).start()
        try:
            export_for_feast(redis.connection_string)
            fx = build_fixture(Path(tmp), redis.connection_string)
            if len(fx.transactions) < args.rows:
                raise SystemExit(f"only {len(fx.transactions)} transactions; lower --rows")
            serve_seconds = serve_rows(fx, args.rows)
            print(f"served {args.rows:,} rows through /predict/batch in {serve_seconds:.1f} s")
            env = {**os.environ, "SKEWLESS_REPO_PATH": str(fx.repo),
                   "SKEWLESS_VAR_DIR": str(fx.var), "SKEWLESS_REDIS": redis.connection_string}
            wall, peak_mb, result = timed([str(Path(sys.executable).with_name("skewless")),
                                           "skew-check", "--json"], env)
        finally:
            redis.stop()
    if result.returncode not in (0, 1):
        print(result.stderr[-3000:])
        return 1
    report = json.loads(result.stdout[result.stdout.index("{"):])
    figures = {"rows": report["rows"], "mismatches": report["mismatches"],
               "wall_seconds": round(wall, 1), "peak_rss_mb": round(peak_mb),
               "target_seconds": 30, "cpus": os.cpu_count()}
    print(f"skew-check over {figures['rows']:,} served rows: {figures['wall_seconds']} s wall "
          f"(target < 30 s), peak RSS {figures['peak_rss_mb']:,} MB, "
          f"{figures['mismatches']} mismatching values")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
