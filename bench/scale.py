"""Scale benchmark: the local profile (DuckDB, one Redis) beside the cluster profile (Spark
``local[2]``, a three-node Redis Cluster) on the same data and definitions.

For each size, one temp copy of the feature repo (code and both feature_store.yaml variants)
gets seeded raw data (60 days to 2026-11-01, seed 7) and the pipeline's feature tables, and
both profiles are applied. Then, each in a child process of its own (wall time and peak RSS
of its whole process tree, Spark's JVM included):

  training set (duckdb | spark)   training.dataset.write_training_set, what `skewless
                                   dataset` runs: every label event known at the end
  materialize (duckdb | spark)    `feast materialize` of the last 7 days into the profile's
                                   online store: Feast's local engine into one Redis, its
                                   Spark compute engine into Redis Cluster

Sizes are named by their transactions (the label events are slightly fewer: those whose
label is known at the end). A stage is stopped after ``--timeout`` seconds (default 1,200:
20 minutes); the ladder stops at the first size where a Spark stage did not finish.
Spark's training-set rows are checked against DuckDB's (row count and a hash of every
value). Prediction throughput on one Redis against the cluster is `make bench-serve`'s
(``--variants ours_log_on,ours_cluster,feast,feast_cluster``).

    make bench-scale            # sizes 1m,3m,10m
    .venv/bin/python bench/scale.py --sizes 100k,1m [--keep-temp]

Needs the Spark extra (`make spark`) and Java 17. Results are printed and written to
``var/bench/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
RESULTS = ROOT / "var" / "bench" / "scale.json"
END = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 60
# Cards for about this many transactions over 60 days (2,000 cards → 295,270).
SIZES = {"100k": 680, "1m": 6_800, "3m": 20_400, "10m": 69_600}
MATERIALIZE_DAYS = 7


def _settings(args: dict[str, Any], profile: str):
    from skewless.settings import Settings

    # Everything explicit: a .env in the working directory must not redirect the bench.
    return Settings(repo_path=Path(args["repo"]), var_dir=Path(args["var"]), profile=profile,
                    redis=args.get("redis"), events_path=None, labels_path=None,
                    truth_path=None, feature_service="fraud_model_v1", database_url=None,
                    spark_driver_memory=args.get("spark_driver_memory", "2g"))


def stage_apply(args: dict[str, Any]) -> dict[str, Any]:
    from skewless.feast_cli import run_feast

    started = time.perf_counter()
    run_feast(_settings(args, "local"), "apply")
    run_feast(_settings(args, "cluster"), "apply")
    return {"seconds": time.perf_counter() - started, "rows_in": None, "rows_out": None}


def stage_training(args: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd
    import pyarrow.parquet as pq
    from offline import _label_event_count

    from training.dataset import write_training_set

    settings = _settings(args, args["profile"])
    output = Path(args["var"]) / f"training_set_{args['profile']}.parquet"
    started = time.perf_counter()
    rows = write_training_set(settings, output, cutoff=END)
    seconds = time.perf_counter() - started
    table = pq.read_table(output)
    features = [c for c in table.column_names if "__" in c]
    # A digest of every feature value in event order, to compare the two engines' sets.
    frame = table.select(["transaction_id", *features]).sort_by("transaction_id").to_pandas()
    checksum = int(pd.util.hash_pandas_object(frame, index=False).sum())
    return {"seconds": seconds, "rows_in": _label_event_count(Path(args["repo"])),
            "rows_out": rows, "detail": {"features": len(features), "checksum": checksum}}


def stage_materialize(args: dict[str, Any]) -> dict[str, Any]:
    from skewless.embedded_redis import redis_for
    from skewless.feast_cli import run_feast

    settings = _settings(args, args["profile"])
    start = (END - timedelta(days=MATERIALIZE_DAYS)).isoformat()
    with redis_for(settings) as address:
        started = time.perf_counter()
        run_feast(settings, "materialize", start, END.isoformat())
        seconds = time.perf_counter() - started
        keys = _online_keys(address, settings.profile == "cluster")
    return {"seconds": seconds, "rows_in": None, "rows_out": keys,
            "detail": {"window_days": MATERIALIZE_DAYS}}


def _online_keys(address: str, cluster: bool) -> int:
    """Keys in the online store (Feast writes one hash per entity key), summed over the
    cluster's masters."""
    import redis

    if cluster:
        client = redis.RedisCluster.from_url(f"redis://{address.split(',')[0]}")
        nodes = [(n.host, n.port) for n in client.get_primaries()]
        client.close()
    else:
        host, port = address.split(",")[0].split(":")[:2]
        nodes = [(host, int(port))]
    return sum(int(redis.Redis(host=h, port=p).dbsize()) for h, p in nodes)


STAGES = {"apply": stage_apply, "training": stage_training, "materialize": stage_materialize}


def copy_repo(dest: Path) -> Path:
    """The repo's code and both feature_store.yaml variants (not data/)."""
    dest.mkdir(parents=True)
    for path in (ROOT / "feature_repo").iterdir():
        if path.is_file() and (path.suffix in (".py", ".yaml") or path.name == ".feastignore"):
            shutil.copy2(path, dest / path.name)
    (dest / "data").mkdir()
    return dest


def bench_size(size: str, cluster: str, timeout: float, driver_memory: str, keep: bool,
               console) -> dict[str, Any]:
    import offline

    tmp = Path(tempfile.mkdtemp(prefix=f"skewless-scale-{size}-"))
    repo = copy_repo(tmp / "repo")
    base = {"repo": str(repo), "var": str(tmp / "var")}
    stages: list[dict[str, Any]] = []

    def run(name: str, label: str, args: dict[str, Any], script: Path | None = None,
            stage_timeout: float | None = None) -> dict[str, Any]:
        console.print(f"[dim]{size}: {label} …[/]")
        record = offline.run_stage(name, label, args, tmp, stage_timeout, None,
                                   script=script or Path(__file__).resolve())
        stages.append(record)
        shown = f"{record['seconds']} s" if record["seconds"] is not None else "—"
        console.print(f"[dim]{size}: {label}: {record['status']}, {shown}, "
                      f"{record['peak_rss_mb']:.0f} MB[/]")
        if record["status"] == "error":
            console.print(record["detail"]["log_tail"], markup=False, highlight=False)
        return record

    try:
        offline_script = Path(offline.__file__).resolve()
        ok = (run("generate", "generate", {"repo": str(repo), "cards": SIZES[size]},
                  offline_script)["status"] == "ok"
              and run("pipeline", "pipeline", {"repo": str(repo)}, offline_script)["status"]
              == "ok"
              and run("apply", "apply (both profiles)", {**base, "redis": cluster})["status"]
              == "ok")
        if ok:
            for profile, engine in (("local", "duckdb"), ("cluster", "spark")):
                args = {**base, "profile": profile, "spark_driver_memory": driver_memory,
                        "redis": cluster if profile == "cluster" else None}
                run("training", f"training set ({engine})", args, stage_timeout=timeout)
                run("materialize", f"materialize ({engine})", args, stage_timeout=timeout)
    finally:
        if keep:
            console.print(f"[yellow]kept[/] {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    transactions = next((s["rows_out"] for s in stages if s["stage"] == "generate"), None)
    return {"size": size, "cards": SIZES[size], "transactions": transactions,
            "spark_driver_memory": driver_memory,
            "measured_at": datetime.now(UTC).isoformat(), "stages": stages}


def _stage(result: dict[str, Any], label: str) -> dict[str, Any] | None:
    return next((s for s in result["stages"] if s["stage"] == label), None)


def report(results: dict[str, Any], console) -> None:
    from offline import _fmt_int, _fmt_s
    from rich.table import Table

    table = Table(title="Scale: DuckDB + one Redis beside Spark local[2] + Redis Cluster")
    for col in ("size", "transactions", "stage", "wall s", "peak RSS MB", "rows in",
                "rows out"):
        table.add_column(col, justify="left" if col in ("size", "stage") else "right")
    for size, res in results.items():
        for stage in res["stages"]:
            table.add_row(size, _fmt_int(res["transactions"]), stage["stage"], _fmt_s(stage),
                          f"{stage['peak_rss_mb']:,.0f}", _fmt_int(stage.get("rows_in")),
                          _fmt_int(stage.get("rows_out")))
        table.add_section()
    console.print(table)
    ratios = Table(title="Spark ÷ DuckDB (wall time), and the training sets compared")
    for col in ("size", "training set", "materialize", "same rows and values"):
        ratios.add_column(col, justify="left" if col == "size" else "right")
    for size, res in results.items():
        row = [size]
        for kind in ("training set", "materialize"):
            duck, spark = _stage(res, f"{kind} (duckdb)"), _stage(res, f"{kind} (spark)")
            row.append(f"{spark['seconds'] / duck['seconds']:.1f}×"
                       if duck and spark and duck["status"] == spark["status"] == "ok" else "—")
        duck, spark = _stage(res, "training set (duckdb)"), _stage(res, "training set (spark)")
        same = (duck and spark and duck["status"] == spark["status"] == "ok"
                and duck["rows_out"] == spark["rows_out"]
                and duck["detail"]["checksum"] == spark["detail"]["checksum"])
        row.append("yes" if same else "—" if not (duck and spark) else "NO")
        ratios.add_row(*row)
    console.print(ratios)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_stage":
        from offline import run_stage_child

        return run_stage_child(*argv[1:4], stages=STAGES)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1m,3m,10m")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--spark-driver-memory", default="6g",
                        help="SKEWLESS_SPARK_DRIVER_MEMORY for the Spark stages (the driver "
                        "collects the training set; 2g, the default setting, fails at 3M)")
    parser.add_argument("--keep-temp", action="store_true")
    args = parser.parse_args(argv)
    from rich.console import Console

    from skewless.embedded_redis import find_redis_server
    from tests.support.redis_cluster import LocalCluster

    console = Console(width=140)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="skewless-scale-cluster-") as cluster_dir:
        cluster = LocalCluster(find_redis_server(), Path(cluster_dir)).start()
        try:
            for size in args.sizes.split(","):
                cluster.flushall()
                results[size] = bench_size(size, cluster.connection_string, args.timeout,
                                           args.spark_driver_memory, args.keep_temp, console)
                spark_done = all((_stage(results[size], f"{k} (spark)") or {}).get("status")
                                 == "ok" for k in ("training set", "materialize"))
                if not spark_done:
                    console.print(f"[yellow]{size}: Spark did not finish within "
                                  f"{args.timeout:.0f} s; larger sizes not run[/]")
                    break
        finally:
            cluster.stop()
    report(results, console)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.platform(), "results": results},
                                  indent=2, default=str))
    console.print(f"[dim]written to {RESULTS}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
