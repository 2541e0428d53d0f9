"""Offline benchmark: feature pipeline, `feast apply` and the point-in-time training set.

For each size a fresh temp directory gets a copy of the feature repo (code only), seeded raw
data (fixed ``end``, default seed) and then, each in its own child process so that wall time
and peak RSS belong to that stage alone:

  generate         raw transactions, labels, cards, merchants (not a target, for scale)
  pipeline         training.pipeline.build_feature_tables (duckdb SQL)
  apply (duckdb)   `feast apply` of the repo copy, against a private redis-server
  apply (file)     `feast apply` of a second copy whose offline store is Feast's `file` (dask)
  training duckdb  training.dataset.build_training_set, the project's path
  training file    the same entity dataframe through the `file` store's historical retrieval

The `file` store is expected to return fewer rows than there are label events (it drops
entity rows without a feature row inside the TTL), so that stage reports what it returned
instead of failing. It runs under a timeout (``--timeout-file-store``).

    .venv/bin/python bench/offline.py [--sizes demo,10m] [--timeout-file-store 900]

Results are printed as tables and merged (by size) into ``var/bench/offline.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPO = ROOT / "feature_repo"
RESULTS = ROOT / "var" / "bench" / "offline.json"
END = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 60
# Cards per size, 60 days to END, seed 7: 2,000 → 295,270 transactions; 69,600 → 10,037,699
SIZES = {"demo": 2_000, "10m": 69_600}
FEATURE_TABLES = ("card_activity.parquet", "card_profile.parquet", "merchant_stats.parquet")
TARGET_SECONDS = 15.0
TARGET_RSS_MB = 4096.0
MB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# Child side: one stage per process.
# --------------------------------------------------------------------------------------------


def _settings(repo: Path, var: Path):
    from skewless.settings import Settings

    # Everything explicit: a .env in the working directory must not redirect the bench.
    return Settings(repo_path=repo, var_dir=var, redis=None, events_path=None, labels_path=None,
                    truth_path=None, feature_service="fraud_model_v1")


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def stage_generate(args: dict[str, Any]) -> dict[str, Any]:
    from training.generate import GenerateConfig, generate, write_generated

    config = GenerateConfig(cards=args["cards"], days=DAYS, end=END)
    started = time.perf_counter()
    data = generate(config)
    write_generated(data, Path(args["repo"]) / "data" / "raw")
    seconds = time.perf_counter() - started
    meta = data.meta
    return {"seconds": seconds, "rows_in": None, "rows_out": meta["transactions"],
            "detail": {"cards": meta["cards"], "merchants": meta["merchants"],
                       "transactions": meta["transactions"], "labels": len(data.labels),
                       "fraud_rate": meta["fraud_rate"]}}


def stage_pipeline(args: dict[str, Any]) -> dict[str, Any]:
    from training.pipeline import PipelinePaths, build_feature_tables

    repo = Path(args["repo"])
    raw = repo / "data" / "raw"
    paths = PipelinePaths(raw / "transactions.parquet", raw / "labels.parquet",
                          raw / "cards.parquet", raw / "merchants.parquet", repo / "data")
    started = time.perf_counter()
    counts = build_feature_tables(paths)
    seconds = time.perf_counter() - started
    rows_in = _parquet_rows(paths.transactions)
    return {"seconds": seconds, "rows_in": rows_in, "rows_out": int(sum(counts.values())),
            "detail": {"tables": counts, "labels_in": _parquet_rows(paths.labels)}}


def stage_apply(args: dict[str, Any]) -> dict[str, Any]:
    from skewless.embedded_redis import redis_for
    from skewless.feast_cli import run_feast

    settings = _settings(Path(args["repo"]), Path(args["var"]))
    with redis_for(settings):
        started = time.perf_counter()
        result = run_feast(settings, "apply")
        seconds = time.perf_counter() - started
    lines = result.stdout.strip().splitlines()
    return {"seconds": seconds, "rows_in": None, "rows_out": None,
            "detail": {"feast_output": lines[-1] if lines else ""}}


class _Timer:
    """Accumulates wall time of wrapped calls by label (timing only; behaviour unchanged).

    With a ``progress`` file it also records, as each call starts and ends, what has finished
    and what is running, so that a stage stopped by the parent still says where it was.
    """

    def __init__(self, progress: str | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.top_level = 0.0  # time inside wrapped calls not nested in another wrapped call
        self.running: list[str] = []
        self.progress = Path(progress) if progress else None
        self.started = time.perf_counter()

    def _write(self) -> None:
        if self.progress is not None:
            self.progress.write_text(json.dumps({
                "elapsed": round(time.perf_counter() - self.started, 2),
                "finished_seconds": _rounded(self.seconds), "running": self.running,
                "rss_mb": _rusage_mb()["self_mb"],
            }))

    def wrap(self, label: str, fn):
        def timed(*a, **kw):
            started = time.perf_counter()
            outermost = not self.running
            self.running.append(label)
            self._write()
            try:
                result = fn(*a, **kw)
            except BaseException:
                # Includes the SystemExit of the parent's SIGTERM: not a finished phase.
                self.running.remove(label)
                self.seconds[f"{label} (interrupted)"] = time.perf_counter() - started
                self._write()
                raise
            self.running.remove(label)
            elapsed = time.perf_counter() - started
            self.seconds[label] = self.seconds.get(label, 0.0) + elapsed
            if outermost:
                self.top_level += elapsed
            self._write()
            return result

        return timed


def _instrument_feast(timer: _Timer) -> None:
    """Time Feast's phases: the offline store's join, the on-demand transformation, pandas."""
    from feast.infra.offline_stores.offline_store import RetrievalJob
    from feast.on_demand_feature_view import OnDemandFeatureView

    job_classes = [RetrievalJob]
    try:
        from feast.infra.offline_stores.ibis import IbisRetrievalJob

        job_classes.append(IbisRetrievalJob)
    except ImportError:  # pragma: no cover
        pass
    try:
        from feast.infra.offline_stores.dask import DaskRetrievalJob

        job_classes.append(DaskRetrievalJob)
    except ImportError:  # pragma: no cover
        pass
    for cls in job_classes:
        if "_to_arrow_internal" in cls.__dict__:
            cls._to_arrow_internal = timer.wrap("offline store join (_to_arrow_internal)",
                                                cls.__dict__["_to_arrow_internal"])
    OnDemandFeatureView.transform_arrow = timer.wrap(
        "on-demand transformation (transform_arrow)", OnDemandFeatureView.transform_arrow)
    RetrievalJob.to_arrow = timer.wrap("RetrievalJob.to_arrow (join + on-demand)",
                                       RetrievalJob.to_arrow)
    RetrievalJob.to_df = timer.wrap("RetrievalJob.to_df (to_arrow + to_pandas)", RetrievalJob.to_df)


def _label_event_count(repo: Path) -> int:
    """Independent count of label events known at END (what the training set must hold)."""
    import duckdb

    raw = repo / "data" / "raw"
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        return int(con.execute(
            f"""SELECT count(*) FROM read_parquet('{raw / 'transactions.parquet'}') t
                JOIN read_parquet('{raw / 'labels.parquet'}') l USING (transaction_id)
                WHERE l.label_timestamp <= TIMESTAMPTZ '{END.isoformat()}'
                  AND t.event_timestamp < TIMESTAMPTZ '{END.isoformat()}'"""
        ).fetchone()[0])
    finally:
        con.close()


def stage_training_duckdb(args: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.compute as pc

    import training.dataset as dataset

    timer = _Timer(args.get("progress"))
    _instrument_feast(timer)  # imports feast before the clock starts
    dataset.load_label_events = timer.wrap("load_label_events", dataset.load_label_events)
    dataset.open_store = timer.wrap("open_store", dataset.open_store)
    dataset.cast_features = timer.wrap("cast_features", dataset.cast_features)
    settings = _settings(Path(args["repo"]), Path(args["var"]))
    output = Path(args["var"]) / "training_set.parquet"
    started = time.perf_counter()
    # What `skewless dataset` runs: slices streamed to parquet.
    rows_out = dataset.write_training_set(settings, output, cutoff=END)
    seconds = time.perf_counter() - started
    timer.seconds["untimed remainder (resolve, plan, reorder, write)"] = (
        seconds - timer.top_level)
    rss = _rusage_mb()  # before the independent count below
    import pyarrow.parquet as pq

    table = pq.read_table(output)
    features = [c for c in table.column_names if "__" in c]
    any_null = None
    for c in features:
        mask = table.column(c).is_null()
        any_null = mask if any_null is None else pc.or_(any_null, mask)
    null_rows = int(pc.sum(any_null).as_py() or 0) if any_null is not None else 0
    del table
    return {"seconds": seconds, "rows_in": _label_event_count(Path(args["repo"])),
            "rows_out": rows_out, "rusage": rss,
            "detail": {"features": len(features), "rows_with_a_null_feature": null_rows,
                       "breakdown_seconds": _rounded(timer.seconds)}}


def stage_training_file(args: dict[str, Any]) -> dict[str, Any]:
    """The same entity dataframe as build_training_set, through the `file` (dask) store."""
    import training.dataset as dataset
    from skewless.contract import resolve_service

    timer = _Timer(args.get("progress"))
    _instrument_feast(timer)  # imports feast before the clock starts
    settings = _settings(Path(args["repo"]), Path(args["var"]))
    started = time.perf_counter()
    store = timer.wrap("open_store", dataset.open_store)(settings)
    spec = resolve_service(store, settings.feature_service)
    source = dataset.LabelSource.from_settings(settings)
    events = timer.wrap("load_label_events", dataset.load_label_events)(source, spec, END)
    events = events.to_pandas()
    label_cols = [source.id_column, source.label_column, source.label_timestamp_column]
    entity_df = events.drop(columns=label_cols[1:]).rename(
        columns={source.timestamp_column: "event_timestamp"}
    )
    job = store.get_historical_features(
        entity_df=entity_df,
        features=store.get_feature_service(settings.feature_service),
        full_feature_names=True,
    )
    result = job.to_df()
    seconds = time.perf_counter() - started
    ids = result[source.id_column]
    missing = [f.name for f in spec.features if f.name not in result.columns]
    present = [f.name for f in spec.features if f.name in result.columns]
    return {"seconds": seconds, "rows_in": len(events), "rows_out": len(result),
            "detail": {"distinct_ids_returned": int(ids.nunique()),
                       "label_events_dropped": int(len(events) - ids.nunique()),
                       "duplicate_rows": int(ids.duplicated().sum()),
                       "missing_feature_columns": missing,
                       "rows_with_a_null_feature": int(result[present].isna().any(axis=1).sum()),
                       "breakdown_seconds": _rounded(timer.seconds)}}


STAGES = {
    "generate": stage_generate,
    "pipeline": stage_pipeline,
    "apply": stage_apply,
    "training_duckdb": stage_training_duckdb,
    "training_file": stage_training_file,
}


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in values.items()}


def _rusage_mb() -> dict[str, float]:
    # Linux reports ru_maxrss in KiB. RUSAGE_CHILDREN is the largest waited-for descendant
    # (the `feast` CLI, redis-server), not a sum.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self_mb": round(own, 1), "children_mb": round(children, 1)}


def run_stage_child(name: str, args_json: str, out: str, stages: dict[str, Any] | None = None) -> int:
    """Run one stage (of ``stages``, default this file's) and write its result to ``out``."""
    os.environ["FEAST_USAGE"] = "False"
    # On the parent's SIGTERM (timeout) unwind normally, so redis_for stops its server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = (stages or STAGES)[name](json.loads(args_json))
    result.setdefault("rusage", _rusage_mb())
    Path(out).write_text(json.dumps(result, default=str))
    return 0


# --------------------------------------------------------------------------------------------
# Parent side: repo copies, child processes, RSS sampling, tables.
# --------------------------------------------------------------------------------------------


def copy_repo(dest: Path, offline_store: str | None = None) -> Path:
    """Copy the repo's code and config (not data/); optionally switch the offline store."""
    dest.mkdir(parents=True)
    for path in REPO.iterdir():
        if path.is_file() and (path.suffix == ".py" or path.name in (".feastignore",)):
            shutil.copy2(path, dest / path.name)
    yaml = (REPO / "feature_store.yaml").read_text()
    if offline_store is not None:
        yaml, n = re.subn(r"(?m)^(offline_store:\n(?:\s*#.*\n)*\s+type:\s*)\S+", rf"\g<1>{offline_store}",
                          yaml)
        if n != 1:
            raise RuntimeError("could not find offline_store.type in feature_store.yaml")
    (dest / "feature_store.yaml").write_text(yaml)
    (dest / "data").mkdir()
    return dest


def link_data(src_repo: Path, dest_repo: Path) -> None:
    """Hard-link (or copy) the raw and feature tables of one repo copy into another."""
    def link(src: Path, dst: Path) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    (dest_repo / "data" / "raw").mkdir(parents=True, exist_ok=True)
    for path in (src_repo / "data" / "raw").iterdir():
        link(path, dest_repo / "data" / "raw" / path.name)
    for name in FEATURE_TABLES:
        link(src_repo / "data" / name, dest_repo / "data" / name)


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _stop_group(popen: subprocess.Popen) -> None:
    """Stop the stage's process group (the child, its `feast` CLI and redis-server)."""
    try:
        os.killpg(popen.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        popen.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    popen.wait()


def run_stage(name: str, label: str, args: dict[str, Any], work: Path,
              timeout: float | None = None, memory_limit_mb: float | None = None,
              script: Path | None = None) -> dict[str, Any]:
    """Run stage ``name`` as ``script _stage …`` (default this file) in a child process of its
    own session: its result, wall seconds and peak RSS, or how and where it was stopped."""
    import psutil

    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
    out, log, progress = (work / f"{slug}{ext}" for ext in (".json", ".log", ".progress.json"))
    args = {**args, "progress": str(progress)}
    env = {**os.environ, "FEAST_USAGE": "False"}
    env.pop("SKEWLESS_REDIS", None)
    cmd = [sys.executable, str(script or Path(__file__).resolve()), "_stage", name, json.dumps(args),
           str(out)]
    started = time.perf_counter()
    with log.open("w") as log_file:
        popen = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                 cwd=str(work), start_new_session=True)
        proc = psutil.Process(popen.pid)
        peak_tree = 0
        status = "ok"
        try:
            while popen.poll() is None:
                peak_tree = max(peak_tree, _tree_rss(proc))
                if timeout is not None and time.perf_counter() - started > timeout:
                    status = "timeout"
                elif memory_limit_mb is not None and peak_tree > memory_limit_mb * MB:
                    status = "memory limit"
                if status != "ok":
                    _stop_group(popen)
                    break
                time.sleep(0.2)
        except BaseException:  # Ctrl-C: the child has its own session and would live on
            _stop_group(popen)
            raise
    process_seconds = time.perf_counter() - started
    record: dict[str, Any] = {
        "stage": label, "status": status, "process_seconds": round(process_seconds, 2),
        "peak_tree_rss_mb": round(peak_tree / MB, 1), "timeout_seconds": timeout,
        "memory_limit_mb": memory_limit_mb,
    }
    if status == "ok" and popen.returncode == 0 and out.is_file():
        result = json.loads(out.read_text())
        rusage = result.pop("rusage")
        record.update(result)
        record["seconds"] = round(result["seconds"], 2)
        record["rusage_mb"] = rusage
        # The stage's peak: the larger of the kernel high-water marks of the stage process
        # and of its largest child (the `feast` CLI for apply), and the sampled tree total.
        record["peak_rss_mb"] = max(rusage["self_mb"], rusage["children_mb"],
                                    record["peak_tree_rss_mb"])
    else:
        if status == "ok":
            status = record["status"] = "error"
        # A stopped stage's seconds are how long it ran before it was stopped.
        record.update(seconds=None if status == "error" else round(process_seconds, 2),
                      rows_in=None, rows_out=None, peak_rss_mb=record["peak_tree_rss_mb"],
                      detail={"log_tail": log.read_text()[-3000:]})
        if progress.is_file():
            record["detail"]["progress_when_stopped"] = json.loads(progress.read_text())
    return record


def bench_size(size: str, timeout_file: float, memory_limit_mb: float, keep: bool,
               console) -> dict[str, Any]:
    cards = SIZES[size]
    tmp = Path(tempfile.mkdtemp(prefix=f"skewless-bench-{size}-"))
    stages: list[dict[str, Any]] = []

    def run(name: str, label: str, args: dict[str, Any], timeout: float | None = None) -> bool:
        console.print(f"[dim]{size}: {label} …[/]")
        record = run_stage(name, label, args, tmp, timeout, memory_limit_mb)
        stages.append(record)
        shown = f"{record['seconds']} s" if record["seconds"] is not None else "—"
        console.print(f"[dim]{size}: {label}: {record['status']}, {shown}, "
                      f"{record['peak_rss_mb']:.0f} MB[/]")
        if record["status"] == "error":
            console.print(f"[red]{label} failed[/]:")
            console.print(record["detail"]["log_tail"], markup=False, highlight=False)
        return record["status"] == "ok"

    try:
        duck = copy_repo(tmp / "repo_duckdb")
        file_repo = copy_repo(tmp / "repo_file", offline_store="file")
        duck_args = {"repo": str(duck), "var": str(tmp / "var_duckdb")}
        file_args = {"repo": str(file_repo), "var": str(tmp / "var_file")}
        if run("generate", "generate", {"repo": str(duck), "cards": cards}) and run(
            "pipeline", "pipeline", {"repo": str(duck)}
        ):
            link_data(duck, file_repo)
            if run("apply", "apply (duckdb)", duck_args):
                run("training_duckdb", "training set (duckdb)", duck_args)
            if run("apply", "apply (file)", file_args):
                run("training_file", "training set (file)", file_args, timeout=timeout_file)
    finally:
        if keep:
            console.print(f"[yellow]kept[/] {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    transactions = next((s["rows_out"] for s in stages if s["stage"] == "generate"), None)
    return {"size": size, "cards": cards, "days": DAYS, "end": END.isoformat(),
            "transactions": transactions, "measured_at": datetime.now(UTC).isoformat(),
            "stages": stages}


def _fmt_int(value: Any) -> str:
    return "—" if value is None else f"{value:,}"


def _fmt_s(stage: dict[str, Any] | None) -> str:
    if stage is None:
        return "—"
    if stage["status"] == "timeout":
        return f"timeout >{stage['timeout_seconds']:.0f}"
    if stage["status"] == "memory limit":
        return f">{stage['memory_limit_mb'] / 1024:.0f} GB @{stage['seconds']:.0f}"
    if stage["status"] == "error":
        return "error"
    return f"{stage['seconds']:.2f}"


def _target(results: dict[str, Any]) -> dict[str, Any] | None:
    big = results.get("10m")
    if not big:
        return None
    duck = next((s for s in big["stages"] if s["stage"] == "training set (duckdb)"), None)
    if duck is None or duck["status"] != "ok":
        return {"met": False, "reason": "duckdb training set did not complete"}
    return {"seconds": duck["seconds"], "peak_rss_mb": duck["peak_rss_mb"],
            "transactions": big["transactions"],
            "met": duck["seconds"] < TARGET_SECONDS and duck["peak_rss_mb"] < TARGET_RSS_MB}


def report(results: dict[str, Any], console, all_results: dict[str, Any] | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Skewless offline benchmark (each stage in its own process)")
    for col, justify in (("size", "left"), ("stage", "left"), ("wall s", "right"),
                         ("peak RSS MB", "right"), ("rows in", "right"), ("rows out", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for size, res in results.items():
        for stage in res["stages"]:
            table.add_row(size, stage["stage"], _fmt_s(stage), f"{stage['peak_rss_mb']:,.0f}",
                          _fmt_int(stage.get("rows_in")), _fmt_int(stage.get("rows_out")))
        table.add_section()
    console.print(table)
    console.print("[dim]wall s: the stage's own work (child start-up and imports excluded); "
                  "peak RSS: kernel high-water mark of the stage process or its largest child, "
                  "or the sampled process-tree total if larger. 'timeout >N': stopped after N s "
                  "of the child process; '>N GB @T': stopped when the process tree passed N GB, "
                  "T s after the child started.[/]")

    cmp_table = Table(title="Point-in-time training set: Feast duckdb vs default file (dask) store")
    for col in ("size", "label events", "duckdb rows", "duckdb s", "duckdb MB", "file rows",
                "file s", "file MB"):
        cmp_table.add_column(col, justify="left" if col == "size" else "right")
    for size, res in results.items():
        by = {s["stage"]: s for s in res["stages"]}
        duck, fil = by.get("training set (duckdb)"), by.get("training set (file)")
        events = (duck or {}).get("rows_in") or (fil or {}).get("rows_in")
        cmp_table.add_row(
            size, _fmt_int(events),
            _fmt_int((duck or {}).get("rows_out")), _fmt_s(duck),
            f"{duck['peak_rss_mb']:,.0f}" if duck else "—",
            _fmt_int((fil or {}).get("rows_out")), _fmt_s(fil),
            f"{fil['peak_rss_mb']:,.0f}" if fil else "—",
        )
    console.print(cmp_table)

    for size, res in results.items():
        by = {s["stage"]: s for s in res["stages"]}
        for label in ("training set (duckdb)", "training set (file)"):
            stage = by.get(label)
            if stage is None:
                continue
            if stage["status"] == "ok":
                parts = ", ".join(f"{k} {v:.2f} s"
                                  for k, v in stage["detail"]["breakdown_seconds"].items())
                console.print(f"[dim]{size} {label}: {escape(parts)}[/]")
            elif "progress_when_stopped" in stage["detail"]:
                prog = stage["detail"]["progress_when_stopped"]
                parts = ", ".join(f"{k} {v:.2f} s" for k, v in prog["finished_seconds"].items())
                console.print(f"[dim]{size} {label} {stage['status']}: {escape(parts or '—')}[/]")

    target = _target(all_results or results)
    earlier = "10m" not in results and target is not None
    line = f"10M-row source → training set < {TARGET_SECONDS:.0f} s and < {TARGET_RSS_MB / 1024:.0f} GB"
    if target is None:
        console.print(f"{line}: [yellow]not measured[/] (run with --sizes 10m)")
    elif "reason" in target:
        console.print(f"{line}: [red]NOT MET[/] ({target['reason']})")
    else:
        verdict = "[green]MET[/]" if target["met"] else "[red]NOT MET[/]"
        console.print(f"{line}: {verdict} — duckdb {target['seconds']:.2f} s, "
                      f"{target['peak_rss_mb'] / 1024:.2f} GB peak RSS "
                      f"({target['transactions']:,} transactions"
                      + (f"; earlier run {all_results['10m']['measured_at']})" if earlier else ")"))


def _git_state() -> dict[str, Any]:
    """The commit measured and any uncommitted changes in the working tree at the time."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"head": git("rev-parse", "HEAD").strip() or None,
            "uncommitted": [line[3:] for line in git("status", "--porcelain").splitlines() if line]}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("feast", "duckdb", "dask", "pandas", "pyarrow", "ibis-framework", "polars",
                "pandera"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_stage":
        return run_stage_child(*argv[1:4])

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="demo,10m", help="comma-separated: demo, 10m")
    parser.add_argument("--timeout-file-store", type=float, default=900.0,
                        help="seconds allowed for the file-store training set (default 900)")
    parser.add_argument("--memory-limit-gb", type=float, default=None,
                        help="stop a stage whose process tree exceeds this RSS "
                        "(default: 2/3 of RAM, at most 16)")
    parser.add_argument("--keep-temp", action="store_true",
                        help="keep the temp directories (for profiling)")
    opts = parser.parse_args(argv)
    sizes = [s.strip() for s in opts.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {', '.join(unknown)}; choose from {', '.join(SIZES)}")

    import psutil
    from rich.console import Console

    os.environ["FEAST_USAGE"] = "False"
    console = Console(width=None if sys.stdout.isatty() else 150)
    limit_gb = opts.memory_limit_gb or min(16.0, psutil.virtual_memory().total / 1024**3 * 2 / 3)
    git_state = _git_state()
    results = {size: bench_size(size, opts.timeout_file_store, limit_gb * 1024, opts.keep_temp,
                                console)
               for size in sizes}
    for res in results.values():
        res["git"] = git_state
    previous: dict[str, Any] = {}
    if RESULTS.is_file():
        try:
            previous = json.loads(RESULTS.read_text()).get("sizes", {})
        except (json.JSONDecodeError, AttributeError):
            previous = {}
    merged = {**previous, **results}
    report(results, console, merged)
    doc = {
        "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
                    "platform": platform.platform()},
        "versions": _versions(),
        "target": {"text": f"10M-row source → training set < {TARGET_SECONDS:.0f} s and "
                           f"< {TARGET_RSS_MB / 1024:.0f} GB", "result": _target(merged)},
        "sizes": merged,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    console.print(f"[green]results[/] → {RESULTS.relative_to(ROOT)}")
    failed = [s["stage"] for r in results.values() for s in r["stages"] if s["status"] == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
