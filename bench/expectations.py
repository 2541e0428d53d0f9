"""Expectations benchmark: the 10M-row bench tables validated, beside a plain duckdb scan.

Target (the issue): the 10M-row bench tables validated in under 15 s and 2 GB.

The data is exactly what bench/offline.py generates at 10M transactions (69,600 cards × 60
days to 2026-11-01, seed 7) in a temp copy of feature_repo/ (code only), and the pipeline's
feature tables, applied with `feast apply` (private redis-server), as `skewless validate` finds
them after `skewless features` and `skewless apply`. ``skewless.validations.check_expectations``
then runs in a child process, as `skewless validate` does (the demo's schemas from
``feature_repo/expectations.py``: every feature view and the request source's 10M events; the
results stored in a migrated SQLite metadata database): wall seconds, peak RSS, and each
table's seconds, rows and findings (an honest bench table has none). The reference time is the
data's end, so freshness holds.

The peer line is a plain duckdb pass over the same parquet files: ``count(*)`` and, for every
column a schema names, ``count``, ``min`` and ``max`` — one aggregate scan, the floor any
check of those columns pays. Validation does more (types, ranges, categories, key
uniqueness, null rates): the ratio says what that costs.

    .venv/bin/python bench/expectations.py [--keep-temp]

Results are printed and written to ``var/bench/expectations.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
RESULTS = ROOT / "var" / "bench" / "expectations.json"
TARGET_SECONDS = 15.0
TARGET_RSS_MB = 2048.0


def _settings(repo: Path, var: Path):
    from skewless.settings import Settings

    # Everything explicit: a .env in the working directory must not redirect the bench.
    return Settings(repo_path=repo, var_dir=var, redis=None,
                    events_path=repo / "data" / "raw" / "transactions.parquet",
                    labels_path=None, truth_path=None, feature_service="fraud_model_v1",
                    database_url=None, feature_log_dir=None)


def _found(settings) -> list[Any]:
    from skewless.doctor import definitions
    from skewless.expectations import targets

    return targets(settings, definitions(settings))[0]


def stage_validate(args: dict[str, Any]) -> dict[str, Any]:
    """What `skewless validate` runs, timed apart from the migration of an empty database."""
    from skewless.db import upgrade
    from skewless.validations import check_expectations

    settings = _settings(Path(args["repo"]), Path(args["var"]))
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    reference = datetime.fromisoformat(args["reference_time"])
    started = time.perf_counter()
    report, run_id = check_expectations(settings, "validate", reference)
    seconds = time.perf_counter() - started
    tables = {r.target: {"kind": r.kind, "rows": r.rows, "seconds": round(r.seconds, 3),
                         "findings": [f.describe() for f in r.findings]}
              for r in report.results}
    return {"seconds": seconds, "tables": tables, "passed": report.passed, "run_id": run_id,
            "notes": report.notes, "rows": sum(t["rows"] or 0 for t in tables.values()),
            # The rest: reading the registry, importing the schemas, storing the results.
            "tables_seconds": sum(r.seconds for r in report.results)}


def stage_floor(args: dict[str, Any]) -> dict[str, Any]:
    """One plain duckdb pass per table over the columns its schema names."""
    import duckdb

    from skewless.expectations import _parquet_glob, load_schema

    settings = _settings(Path(args["repo"]), Path(args["var"]))
    repo = settings.repo_path.absolute()
    modules: dict[str, Any] = {}
    plans = []
    for target in _found(settings):
        schema = load_schema(repo, target, modules)
        parts = ["count(*)"]
        for name in schema.columns:
            column = '"' + name.replace('"', '""') + '"'
            parts += [f"count({column})", f"min({column})", f"max({column})"]
        plans.append((target.name, _parquet_glob(target.path), ", ".join(parts)))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    tables: dict[str, Any] = {}
    started = time.perf_counter()
    for name, glob, select in plans:
        t0 = time.perf_counter()
        rows = con.sql(f"SELECT {select} FROM read_parquet(?)", params=[glob]).fetchall()[0][0]
        tables[name] = {"rows": int(rows), "seconds": round(time.perf_counter() - t0, 3)}
    seconds = time.perf_counter() - started
    con.close()
    return {"seconds": seconds, "tables": tables, "rows": sum(t["rows"] for t in tables.values())}


def stage_generate(args: dict[str, Any]) -> dict[str, Any]:
    from offline import stage_generate as generate

    return generate(args)


def stage_pipeline(args: dict[str, Any]) -> dict[str, Any]:
    from offline import stage_pipeline as pipeline

    return pipeline(args)


def stage_apply(args: dict[str, Any]) -> dict[str, Any]:
    from offline import stage_apply as apply

    return apply(args)


STAGES = {"generate": stage_generate, "pipeline": stage_pipeline, "apply": stage_apply,
          "validate": stage_validate, "floor": stage_floor}


def bench(tmp: Path, console) -> dict[str, Any]:
    from catalog import run_stage
    from offline import END, SIZES, copy_repo

    script = Path(__file__)
    repo, var = copy_repo(tmp / "repo"), tmp / "var"
    args = {"repo": str(repo), "var": str(var), "reference_time": END.isoformat()}
    generate = run_stage("generate", {"repo": str(repo), "cards": SIZES["10m"]}, tmp, console,
                         script)
    pipeline = run_stage("pipeline", {"repo": str(repo)}, tmp, console, script)
    apply = run_stage("apply", args, tmp, console, script)
    validate = run_stage("validate", args, tmp, console, script)
    floor = run_stage("floor", args, tmp, console, script)
    return {
        "transactions": generate["rows_out"], "cards": SIZES["10m"],
        "setup": {name: {"seconds": round(stage["seconds"], 2),
                         "peak_rss_mb": stage["peak_rss_mb"]}
                  for name, stage in (("generate", generate), ("pipeline", pipeline),
                                      ("apply", apply))},
        "validate": {"seconds": round(validate["seconds"], 2),
                     "tables_seconds": round(validate["tables_seconds"], 2),
                     "process_seconds": validate["process_seconds"],
                     "peak_rss_mb": validate["peak_rss_mb"], "rows": validate["rows"],
                     "tables": validate["tables"], "passed": validate["passed"],
                     "notes": validate["notes"]},
        "floor": {"seconds": round(floor["seconds"], 2), "peak_rss_mb": floor["peak_rss_mb"],
                  "rows": floor["rows"], "tables": floor["tables"]},
    }


def report(doc: dict[str, Any], console) -> None:
    from rich.table import Table

    result = doc["result"]
    ours, floor = result["validate"], result["floor"]
    table = Table(title=f"Expectations over the 10M bench tables "
                        f"({result['transactions']:,} transactions)")
    for column in ("table", "rows", "validate s", "duckdb scan s", "ratio", "findings"):
        table.add_column(column, justify="left" if column in ("table", "findings") else "right")
    for name, mine in ours["tables"].items():
        peer = floor["tables"].get(name, {})
        ratio = mine["seconds"] / peer["seconds"] if peer.get("seconds") else None
        table.add_row(name, f"{mine['rows'] or 0:,}", f"{mine['seconds']:.2f}",
                      f"{peer.get('seconds', float('nan')):.2f}",
                      "—" if ratio is None else f"{ratio:.1f}×",
                      "; ".join(mine["findings"]) or "none")
    table.add_row("all", f"{ours['rows']:,}", f"{ours['seconds']:.2f}", f"{floor['seconds']:.2f}",
                  f"{ours['seconds'] / floor['seconds']:.1f}×" if floor["seconds"] else "—", "")
    console.print(table)
    met_s = ours["seconds"] < TARGET_SECONDS
    met_rss = ours["peak_rss_mb"] < TARGET_RSS_MB
    console.print(
        f"validation {ours['seconds']:.1f} s (the tables {ours['tables_seconds']:.1f} s, the rest "
        f"reading the registry, the schemas and storing the results; process "
        f"{ours['process_seconds']:.1f} s), peak RSS "
        f"{ours['peak_rss_mb']:,.0f} MB; duckdb scan {floor['seconds']:.1f} s, "
        f"{floor['peak_rss_mb']:,.0f} MB. Target < {TARGET_SECONDS:.0f} s: "
        f"{'[green]MET[/]' if met_s else '[red]NOT MET[/]'}; < {TARGET_RSS_MB / 1024:.0f} GB: "
        f"{'[green]MET[/]' if met_rss else '[red]NOT MET[/]'}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_stage":
        from catalog import run_stage_child

        return run_stage_child(*argv[1:4], stages=STAGES)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp directory")
    opts = parser.parse_args(argv)

    import psutil
    from offline import _git_state, _versions
    from rich.console import Console

    os.environ["FEAST_USAGE"] = "False"
    console = Console(width=None if sys.stdout.isatty() else 160)
    tmp = Path(tempfile.mkdtemp(prefix="skewless-bench-expectations-"))
    doc: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/expectations.py", *argv]),
        "machine": {"cpus": os.cpu_count(),
                    "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
                    "platform": platform.platform()},
        "versions": _versions(), "git": _git_state(),
        "measured_at": datetime.now(UTC).isoformat(),
        "targets": {"seconds": TARGET_SECONDS, "peak_rss_mb": TARGET_RSS_MB},
    }
    try:
        doc["result"] = bench(tmp, console)
    finally:
        if opts.keep_temp:
            console.print(f"[yellow]kept[/] {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(doc, console)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    console.print(f"[green]results[/] → {RESULTS.relative_to(ROOT)}")
    result = doc["result"]["validate"]
    ok = (result["passed"] and result["seconds"] < TARGET_SECONDS
          and result["peak_rss_mb"] < TARGET_RSS_MB)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
