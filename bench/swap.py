"""Hot-swap benchmark: time from promotion to the first response of the new version, and the
throughput dip while the predictor loads and swaps a model under load.

Setup as bench/serve.py (a temp copy of the repo, demo data ending this hour, a model
registered as production, a private redis-server), plus a second model trained with another
seed and registered as a candidate. `skewless serve` runs as its own process; 8 concurrent
clients (asyncio, one process) keep posting /predict and record every response's model
version. Then, under that load:

1. the candidate is promoted over the admin API (the predictor is told at once);
2. production is rolled back in the database only (the predictor notices by polling).

For each: promotion → first response from the new version, and requests per second in
250 ms windows — steady state before, and the lowest window in the 2 s after.

    .venv/bin/python bench/swap.py [--seconds 6]

Results are printed and written to ``var/bench/swap.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
RESULTS = ROOT / "var" / "bench" / "swap.json"
TOKEN = "bench-admin-token-0123456789"
WINDOW = 0.25
CLIENTS = 8


async def load(url: str, rows: list[dict[str, Any]], stop: asyncio.Event,
               seen: list[tuple[float, int, str | None]]) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=10,
                                 limits=httpx.Limits(max_connections=CLIENTS)) as http:
        async def client(offset: int) -> None:
            i = offset
            while not stop.is_set():
                i += 1
                response = await http.post("/predict", json=rows[i % len(rows)])
                version = response.json().get("model_version") if response.status_code == 200 \
                    else None
                seen.append((time.monotonic(), response.status_code, version))

        await asyncio.gather(*(client(n * 997) for n in range(CLIENTS)))


def windows(seen: list[tuple[float, int, str | None]], start: float, end: float) -> list[float]:
    """Requests per second in each WINDOW between start and end."""
    counts = [0] * max(1, int((end - start) / WINDOW))
    for t, _, _ in seen:
        if start <= t < end:
            index = int((t - start) / WINDOW)
            if index < len(counts):
                counts[index] += 1
    return [c / WINDOW for c in counts]


async def scenario(url: str, rows: list[dict[str, Any]], v1: str, v2: str, settings: Any,
                   seconds: float) -> dict[str, Any]:
    import httpx

    from skewless.registry import Registry

    registry = Registry.from_settings(settings)  # opened before the load: not timed
    stop = asyncio.Event()
    seen: list[tuple[float, int, str | None]] = []
    runner = asyncio.create_task(load(url, rows, stop, seen))
    await asyncio.sleep(seconds)
    figures: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url, timeout=60,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as admin:
        told = time.monotonic()
        answer = await admin.post(f"/admin/models/fraud_model_v1/versions/{v2}/promote",
                                  json={"force": True, "reason": "bench: hot swap"})
        answered = time.monotonic()
        assert answer.status_code == 200, answer.text
        await asyncio.sleep(seconds)
        polled = time.monotonic()
        await asyncio.to_thread(registry.rollback, "fraud_model_v1", "bench", "bench: rollback")
        registry.close()
        await asyncio.sleep(seconds)
        metrics = (await admin.get("/metrics")).text
    stop.set()
    await runner
    for label, at, new in (("told (admin promote)", told, v2), ("polled (rollback in the db)",
                                                                 polled, v1)):
        first = next(t for t, status, version in seen if t > at and version == new)
        baseline = windows(seen, at - seconds + 1, at)
        during = windows(seen, at, at + 2)
        figures[label] = {
            "promotion_to_first_response_ms": round((first - at) * 1e3, 1),
            "steady_rps": round(statistics.mean(baseline)),
            "steady_lowest_window_rps": round(min(baseline)),
            "lowest_window_rps_after": round(min(during)),
            "mean_rps_2s_after": round(statistics.mean(during)),
            "dip_percent": round(100 * (1 - min(during) / statistics.mean(baseline)), 1),
        }
    figures["told (admin promote)"]["admin_call_ms"] = round((answered - told) * 1e3, 1)
    figures["requests"] = len(seen)
    figures["failed"] = sum(1 for _, status, _ in seen if status != 200)
    figures["versions"] = sorted({v or "none" for _, _, v in seen})
    for line in metrics.splitlines():
        if line.startswith(("skewless_model_load_seconds_sum", "skewless_model_load_seconds_count")):
            name, value = line.split()
            figures[name] = float(value)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="steady load per phase")
    args = parser.parse_args()
    os.environ["FEAST_USAGE"] = "False"
    from serve import BIN, Server, base_env, build_fixture, write_bodies

    from skewless.embedded_redis import RedisServer, find_redis_server, free_port
    from skewless.registry import Registry
    from skewless.settings import Settings, export_for_feast
    from training.dataset import build_training_set
    from training.train import train_model

    with tempfile.TemporaryDirectory(prefix="skewless-bench-swap-") as tmp:
        redis = RedisServer(binary=find_redis_server(), data_dir=Path(tmp) / "redis",
                            persist=False).start()
        server = None
        try:
            export_for_feast(redis.connection_string)
            fx = build_fixture(Path(tmp), redis.connection_string)
            settings = Settings(repo_path=fx.repo, var_dir=fx.var, redis=fx.redis,
                                events_path=None, labels_path=None, truth_path=None)
            print("  second model (seed 11) …", flush=True)
            second = train_model(build_training_set(settings, cutoff=fx.end), settings.model_dir,
                                 settings.holdout_days, settings.validation_days, seed=11)
            registry = Registry.from_settings(settings)
            v2 = registry.register(second.directory).version
            registry.close()
            rows = write_bodies(fx, 2000, seed=5).rows
            port = free_port()
            env = base_env(fx)
            env.update(SKEWLESS_REPO_PATH=str(fx.repo), SKEWLESS_VAR_DIR=str(fx.var),
                       SKEWLESS_ADMIN_TOKEN=TOKEN,
                       SKEWLESS_FEATURE_LOG_DIR=str(Path(tmp) / "feature_log"))
            server = Server("skewless serve", [str(BIN / "skewless"), "serve", "--host",
                                               "127.0.0.1", "--port", str(port)],
                            env, Path(tmp), Path(tmp) / "serve.log", port, "/readyz").start()
            figures = asyncio.run(scenario(server.base_url, rows, fx.model_version, v2,
                                           settings, args.seconds))
        finally:
            if server is not None:
                server.stop()
            redis.stop()
    figures["poll_seconds"] = settings.registry_poll_seconds
    figures["cpus"] = os.cpu_count()
    for label in ("told (admin promote)", "polled (rollback in the db)"):
        f = figures[label]
        print(f"{label}: first response from the new version {f['promotion_to_first_response_ms']}"
              f" ms after the promotion; steady {f['steady_rps']} req/s (lowest 250 ms window "
              f"{f['steady_lowest_window_rps']}), lowest window in the 2 s after "
              f"{f['lowest_window_rps_after']} req/s ({f['dip_percent']}% below the steady mean); "
              f"mean over the 2 s after {f['mean_rps_2s_after']} req/s")
    print(f"{figures['requests']:,} requests, {figures['failed']} failed, versions "
          f"{figures['versions']}; model load+verify "
          f"{figures.get('skewless_model_load_seconds_sum', 0) * 1e3:.0f} ms over "
          f"{figures.get('skewless_model_load_seconds_count', 0):.0f} swaps")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
