"""Monitor benchmark: `skewless monitor` over 1M logged rows (wall, peak RSS), beside a bare read.

Setup as bench/serve.py (a temp copy of the repo, data ending this hour, a model registered as
production, a private redis-server materialized with the whole window), with enough cards that
the world holds ``--rows`` transactions; the predictor then serves the most recent ``--rows``
of them, each once and with its ``transaction_id``, through ``/predict/batch`` (1,000 rows a
call), so the delayed labels join. Then, each as its own process, timed with its peak RSS:

  monitor     ``skewless monitor --json --since <just before serving> --output <tmp>``
  bare read   a ``pyarrow.dataset`` read of every parquet file of the served-feature log,
              the columns the monitor reads (the model's features and their ``__status``,
              the subgroup columns, ``model_version``, ``score``, the event id and
              ``__log_timestamp``): the floor of any monitor over these logs

    .venv/bin/python bench/monitor.py [--rows 1000000] [--cards N]

Results are printed and written to ``var/bench/monitor.json``. Target: under 30 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
RESULTS = ROOT / "var" / "bench" / "monitor.json"
TARGET_SECONDS = 30
# Transactions per card over the fixture's 60 days, measured with training/generate.py (20% of
# the cards are issued inside the window, 20% retire): 6,500 cards → 918,433 transactions,
# 7,447 → 1,068,013. Cards default to --rows / this, plus 5%.
TRANSACTIONS_PER_CARD = 141

# The peer, run as `python -c BARE_READ <log dir> <columns as JSON>`.
BARE_READ = """
import json, sys
from pathlib import Path
import pyarrow.dataset as pads
files = sorted(str(p) for p in Path(sys.argv[1]).rglob("*.parquet") if not p.name.startswith("."))
dataset = pads.dataset(files, format="parquet")
wanted = json.loads(sys.argv[2])
columns = [c for c in wanted if c in dataset.schema.names]
table = dataset.to_table(columns=columns)
print(json.dumps({"rows": table.num_rows, "files": len(files), "columns": len(columns),
                  "not_logged": [c for c in wanted if c not in columns],
                  "arrow_mb": round(table.nbytes / 2**20)}))
"""


def serve_logged(fx: Any, rows: int) -> float:
    """Serve the ``rows`` most recent transactions, with their event ids; returns seconds."""
    import httpx

    from service.app import create_app, serve_in_thread
    from skewless.settings import Settings

    settings = Settings(repo_path=fx.repo, var_dir=fx.var, redis=fx.redis,
                        feature_log_flush_rows=50_000)
    fields = [settings.event_id_column, "card_id", "merchant_id", "amount", "channel",
              "local_hour"]
    recent = fx.transactions.tail(rows)[fields]
    step = settings.batch_max_rows
    with serve_in_thread(create_app(settings)) as url, \
            httpx.Client(base_url=url, timeout=120) as http:
        started = time.perf_counter()
        for i in range(0, len(recent), step):
            body = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                    for r in recent.iloc[i:i + step].to_dict("records")]
            http.post("/predict/batch", json={"rows": body}).raise_for_status()
            if i and i % 100_000 == 0:
                print(f"  served {i:,} rows, {time.perf_counter() - started:.0f} s", flush=True)
        seconds = time.perf_counter() - started
    return seconds  # the log is flushed once the service has stopped


def read_columns(fx: Any) -> list[str]:
    """What the monitor reads from the log: the registered model's features and statuses, the
    subgroup columns, version, score, event id and served-at time."""
    from skewless.registry import Registry
    from skewless.settings import Settings
    from training.monitor import Subgroup
    from training.served import LOG_TIMESTAMP, REQUEST_ID

    settings = Settings(repo_path=fx.repo, var_dir=fx.var, redis=fx.redis)
    with Registry.from_settings(settings) as registry:
        contracts = [r.contract for r in registry.versions(settings.feature_service)]
    columns = [LOG_TIMESTAMP, REQUEST_ID, settings.event_id_column, "model_version", "score",
               *(Subgroup.parse(s).column for s in settings.slices)]
    for contract in contracts:
        for f in contract.features:
            columns += [f.name, f"{f.name}__status"]
    return list(dict.fromkeys(columns))


def check_report(report: dict[str, Any], served: int) -> dict[str, Any]:
    """The monitor saw every served row, one version, every event scored once; or exit."""
    problems = []
    if report["rows"] != served:
        problems.append(f"the report counts {report['rows']:,} rows, {served:,} were served")
    versions = report["versions"]
    if len(versions) != 1 or "performance" not in versions[0]:
        problems.append(f"expected one version with performance, got "
                        f"{[(v['version'], 'performance' in v) for v in versions]}")
    else:
        performance = versions[0]["performance"]
        if performance["scored_events"] != served:
            problems.append(f"{performance['scored_events']:,} events scored, {served:,} served "
                            "(each served once with its transaction_id)")
        if performance["overall"].get("status") != "ok":
            problems.append(f"no overall performance: {performance['overall']}")
    if problems:
        raise SystemExit("monitor report wrong:\n  " + "\n  ".join(problems))
    overall = versions[0]["performance"]["overall"]
    return {"version": versions[0]["version"], "labelled": overall["labelled"],
            "outstanding": overall["outstanding"], "positives": overall["positives"],
            "roc_auc": round(overall["roc_auc"], 4),
            "drifted": versions[0].get("drift", {}).get("drifted", []),
            "findings": len(report["findings"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows served and logged")
    parser.add_argument("--cards", type=int, default=None,
                        help=f"cards of the world (default: rows / {TRANSACTIONS_PER_CARD} + 5%%)")
    args = parser.parse_args()
    cards = args.cards or math.ceil(args.rows * 1.05 / TRANSACTIONS_PER_CARD)
    os.environ["FEAST_USAGE"] = "False"
    from serve import build_fixture  # bench/serve.py: the same set-up
    from skew import timed  # bench/skew.py: wall time and sampled peak RSS of a process

    from skewless.embedded_redis import RedisServer, find_redis_server
    from skewless.settings import export_for_feast

    skewless = str(Path(sys.executable).with_name("skewless"))
    with tempfile.TemporaryDirectory(prefix="skewless-bench-monitor-") as tmp:
        redis = RedisServer(binary=find_redis_server(), data_dir=Path(tmp) / "redis",
                            persist=False).start()
        try:
            export_for_feast(redis.connection_string)
            print(f"world: {cards:,} cards × 60 days", flush=True)
            started = time.perf_counter()
            fx = build_fixture(Path(tmp), redis.connection_string, cards=cards)
            fixture_seconds = time.perf_counter() - started
            if len(fx.transactions) < args.rows:
                raise SystemExit(f"only {len(fx.transactions):,} transactions with {cards:,} "
                                 "cards; raise --cards")
            print(f"fixture: {len(fx.transactions):,} transactions, {fixture_seconds:.0f} s")
            since = datetime.now(UTC) - timedelta(seconds=1)
            serve_seconds = serve_logged(fx, args.rows)
            print(f"served {args.rows:,} rows through /predict/batch in {serve_seconds:.1f} s "
                  "(setup, not measured)", flush=True)
            env = {**os.environ, "SKEWLESS_REPO_PATH": str(fx.repo),
                   "SKEWLESS_VAR_DIR": str(fx.var), "SKEWLESS_REDIS": redis.connection_string}
            command = [skewless, "monitor", "--json", "--since", since.isoformat(),
                       "--output", str(Path(tmp) / "monitor")]
            wall, peak_mb, result = timed(command, env)
            if result.returncode != 0:
                print(result.stderr[-3000:])
                raise SystemExit(f"skewless monitor exited with {result.returncode}")
            report = json.loads(result.stdout[result.stdout.index("{"):])
            checked = check_report(report, args.rows)
            log_dir = Path(report["log_dir"])
            if not log_dir.is_relative_to(fx.repo):
                raise SystemExit(f"the monitor read {log_dir}, not the bench's log")
            columns = read_columns(fx)
            bare_wall, bare_mb, bare = timed([sys.executable, "-c", BARE_READ, str(log_dir),
                                              json.dumps(columns)], env)
            if bare.returncode != 0:
                print(bare.stderr[-3000:])
                raise SystemExit("the bare read failed")
            read = json.loads(bare.stdout)
            if read["rows"] != args.rows:
                raise SystemExit(f"the bare read found {read['rows']:,} rows, not {args.rows:,}")
        finally:
            redis.stop()
    figures = {
        "rows": args.rows, "cards": cards, "transactions": len(fx.transactions),
        "fixture_seconds": round(fixture_seconds), "setup": fx.facts.get("setup_seconds"),
        "serve_seconds": round(serve_seconds, 1),
        "log": {"files": read["files"], "columns_read": read["columns"],
                "not_logged": read["not_logged"], "arrow_mb": read["arrow_mb"]},
        "monitor": {"wall_seconds": round(wall, 1), "peak_rss_mb": round(peak_mb),
                    **checked},
        "bare_read": {"wall_seconds": round(bare_wall, 1), "peak_rss_mb": round(bare_mb)},
        "ratio": {"wall": round(wall / bare_wall, 1), "peak_rss": round(peak_mb / bare_mb, 1)},
        "target_seconds": TARGET_SECONDS, "target_met": wall < TARGET_SECONDS,
        "cpus": os.cpu_count(),
        "command": ["skewless", "monitor", "--json", "--since", "<before serving>",
                    "--output", "<tmp>"],
    }
    rows = [("rows logged (served once each, with transaction_id)", f"{args.rows:,}"),
            ("world", f"{cards:,} cards, {len(fx.transactions):,} transactions"),
            ("serving through /predict/batch (setup)", f"{serve_seconds:.1f} s"),
            ("log", f"{read['files']} parquet files, {read['columns']} columns read, "
                    f"{read['arrow_mb']:,} MB in Arrow"),
            ("monitor wall", f"{wall:.1f} s"),
            ("monitor peak RSS", f"{peak_mb:,.0f} MB"),
            ("bare read wall", f"{bare_wall:.1f} s"),
            ("bare read peak RSS", f"{bare_mb:,.0f} MB"),
            ("monitor / bare read", f"{wall / bare_wall:.1f}× wall, {peak_mb / bare_mb:.1f}× RSS"),
            ("labels joined", f"{checked['labelled']:,} ({checked['positives']:,} fraud), "
                              f"{checked['outstanding']:,} outstanding, "
                              f"ROC AUC {checked['roc_auc']}"),
            (f"target < {TARGET_SECONDS} s", "met" if figures["target_met"] else "NOT met")]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nresults → {RESULTS.relative_to(ROOT)}")
    return 0 if figures["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
