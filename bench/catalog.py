"""Catalog benchmark: page render times with 1,000 features, statistics refresh over 10M rows.

Target (the issue): catalog index and feature pages < 100 ms (p95) with 1,000 features
registered; the statistics refresh over the 10M-row bench data < 60 s.

Pages. A synthetic Feast repo in a temp directory: 5 entities, 50 batch feature views of
20 features each (Int64, Float64 and String; every field with a description and tags, every
view with an owner, tags and a description), 5 feature services over overlapping views, and
a 2,000-row parquet source per view. `feast apply` (SQLite online store), the metadata
database migrated (no model versions: lineage pages query it and find none), and
`refresh_stats(online=False)` so every page has statistics. `skewless catalog serve` then
runs as its own process (the client does not share its GIL); once `/api/catalog` answers,
each endpoint gets an uncounted warm-up and ``--requests`` sequential, timed requests
(httpx, keep-alive). Every answer must be 200; the index must list 1,000 feature rows.

Refresh. The 10M-transaction data exactly as bench/offline.py generates it (69,600 cards ×
60 days to 2026-11-01, seed 7) in a temp copy of feature_repo/ (code only), the pipeline's
feature tables, and one extra feature view over the raw transactions parquet (10M rows), so
that the refresh scans them too. After `feast apply` (private redis-server),
``training.stats.compute_stats(settings, store, online=False)`` runs in a child process:
wall seconds and peak RSS. The peer line is a plain single-pass duckdb scan
(``count(*)``, ``min``, ``max``, ``avg`` of every feature column) over the same parquet
files: the floor any statistics job pays.

    .venv/bin/python bench/catalog.py [--requests 200] [--warmup 20] [--skip-10m] [--keep-temp]

Results are printed and written to ``var/bench/catalog.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
RESULTS = ROOT / "var" / "bench" / "catalog.json"
TARGET_PAGE_MS = 100.0
TARGET_REFRESH_S = 60.0
MB = 1024 * 1024

# The synthetic repo of the pages part.
VIEWS = 50
ROWS_PER_VIEW = 2_000
ENTITY_IDS = 500
SEARCH_WORD = "velocity"  # in one feature name per view: 50 hits
TAG_FILTER = "window=7d"
ENTITIES = [
    ("customer", "A person holding one or more accounts."),
    ("account", "A ledger account of a customer."),
    ("device", "A phone, tablet or computer seen at login."),
    ("merchant", "An acquiring merchant that receives payments."),
    ("store", "A physical point of sale of a merchant."),
]
DOMAINS = ["activity", "spend", "risk", "profile", "sessions", "returns", "support", "loyalty",
           "geo", "devices"]
TEAMS = ["risk", "growth", "payments", "identity", "ops"]
# (name, dtype, description, tags): the 20 features of every view (refs differ by view).
TEMPLATES = [
    ("txn_count_1d", "Int64", "Transactions in the previous day", {"window": "1d", "kind": "count"}),
    ("txn_count_7d", "Int64", "Transactions in the previous 7 days", {"window": "7d", "kind": "count"}),
    ("login_count_7d", "Int64", "Logins in the previous 7 days", {"window": "7d", "kind": "count"}),
    ("distinct_devices_28d", "Int64", "Distinct devices seen in the previous 28 days",
     {"window": "28d", "kind": "distinct"}),
    ("failed_attempts_1d", "Int64", "Failed authentication attempts in the previous day",
     {"window": "1d", "kind": "count"}),
    ("days_since_signup", "Int64", "Whole days since sign-up", {"kind": "age"}),
    ("chargeback_count_90d", "Int64", "Chargebacks in the previous 90 days",
     {"window": "90d", "kind": "count"}),
    ("amount_sum_1d", "Float64", "Amount spent in the previous day", {"window": "1d", "kind": "sum"}),
    ("amount_mean_7d", "Float64", "Mean amount over the previous 7 days",
     {"window": "7d", "kind": "mean"}),
    ("amount_max_28d", "Float64", "Largest amount in the previous 28 days",
     {"window": "28d", "kind": "max"}),
    ("velocity_ratio_7d", "Float64", "Spending speed of the last day against the 7-day mean",
     {"window": "7d", "kind": "ratio"}),
    ("refund_rate_28d", "Float64", "Share of refunded payments over 28 days",
     {"window": "28d", "kind": "rate"}),
    ("risk_score_7d", "Float64", "Rule-based risk score, smoothed over 7 days",
     {"window": "7d", "kind": "score"}),
    ("balance_mean_28d", "Float64", "Mean end-of-day balance over 28 days",
     {"window": "28d", "kind": "mean"}),
    ("home_country", "String", "Country of the registered address", {"kind": "categorical"}),
    ("preferred_channel", "String", "Most used channel: pos, online or atm",
     {"kind": "categorical"}),
    ("segment", "String", "Marketing segment", {"kind": "categorical"}),
    ("tier", "String", "Loyalty tier", {"kind": "categorical"}),
    ("last_device_os", "String", "Operating system of the last device seen",
     {"kind": "categorical"}),
    ("region", "String", "Sales region", {"kind": "categorical"}),
]
CATEGORIES = {
    "home_country": ["DE", "FR", "NL", "ES", "IT", "PL", "SE", "PT"],
    "preferred_channel": ["pos", "online", "atm"],
    "segment": ["retail", "business", "student", "premium"],
    "tier": ["bronze", "silver", "gold", "platinum"],
    "last_device_os": ["ios", "android", "windows", "macos", "linux"],
    "region": ["north", "south", "east", "west", "central"],
}

FEATURE_STORE_YAML = """\
project: catalog_bench
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""

DEFINITIONS = '''\
"""Synthetic definitions of bench/catalog.py, built from data/spec.json."""

import json
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

DATA = Path(__file__).resolve().parent / "data"
TYPES = {"Int64": Int64, "Float64": Float64, "String": String}


def _build() -> None:
    # Feast collects the module's top-level objects: each one gets a global name.
    spec = json.loads((DATA / "spec.json").read_text())
    entities, views = {}, {}
    for e in spec["entities"]:
        entities[e["name"]] = globals()[e["name"] + "_entity"] = Entity(
            name=e["name"], join_keys=[e["key"]], value_type=ValueType.INT64,
            description=e["description"], owner=e["owner"], tags=e["tags"])
    for v in spec["views"]:
        source = globals()[v["name"] + "_source"] = FileSource(
            name=v["name"] + "_source", path=str(DATA / (v["name"] + ".parquet")),
            timestamp_field="event_timestamp", owner=v["owner"],
            description="Daily snapshots behind " + v["name"] + ".")
        views[v["name"]] = globals()[v["name"] + "_fv"] = FeatureView(
            name=v["name"], entities=[entities[v["entity"]]], ttl=timedelta(days=v["ttl_days"]),
            schema=[Field(name=f["name"], dtype=TYPES[f["dtype"]], description=f["description"],
                          tags=f["tags"]) for f in v["features"]],
            source=source, online=True, description=v["description"], owner=v["owner"],
            tags=v["tags"])
    for s in spec["services"]:
        globals()[s["name"] + "_service"] = FeatureService(
            name=s["name"], features=[views[n] for n in s["views"]],
            description=s["description"], owner=s["owner"], tags=s["tags"])


_build()
'''

RAW_VIEW = '''\
"""bench/catalog.py: the raw transactions as a feature view, so the refresh scans all of them."""

from datetime import timedelta
from pathlib import Path

from entities import card
from feast import FeatureView, Field, FileSource
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64, String

RAW = Path(__file__).resolve().parent / "data" / "raw" / "transactions.parquet"

transactions_raw_source = FileSource(
    name="transactions_raw_source", path=str(RAW), file_format=ParquetFormat(),
    timestamp_field="event_timestamp", description="Every generated transaction.",
)

transactions_raw_fv = FeatureView(
    name="transactions_raw", entities=[card], ttl=timedelta(days=2),
    schema=[
        Field(name="amount", dtype=Float64, description="Transaction amount."),
        Field(name="channel", dtype=String, description="pos, online or atm."),
        Field(name="local_hour", dtype=Int64, description="Hour of day, 0-23."),
    ],
    source=transactions_raw_source, online=False,
    description="The raw transactions, one row each.", owner="bench@skewless.example",
    tags={"team": "bench"},
)
'''


# --------------------------------------------------------------------------------------------
# The synthetic repo (pages part).
# --------------------------------------------------------------------------------------------


def repo_spec() -> dict[str, Any]:
    entities = [{"name": name, "key": f"{name}_id", "description": description,
                 "owner": f"{TEAMS[i]}@bench.example", "tags": {"domain": DOMAINS[i]}}
                for i, (name, description) in enumerate(ENTITIES)]
    views = []
    for i in range(VIEWS):
        entity = ENTITIES[i % len(ENTITIES)][0]
        domain = DOMAINS[i // len(ENTITIES)]
        team = TEAMS[i % len(TEAMS)]
        features = [{"name": name, "dtype": dtype,
                     "description": f"{description} ({entity}, {domain}).",
                     "tags": {**tags, "pii": "false"}}
                    for name, dtype, description, tags in TEMPLATES]
        views.append({
            "name": f"{entity}_{domain}_{i:02d}", "entity": entity, "ttl_days": 2 + i % 29,
            "owner": f"{team}@bench.example", "features": features,
            "description": f"{domain.capitalize()} of each {entity}, as of each UTC midnight.",
            "tags": {"team": team, "domain": domain, "cadence": ("daily", "hourly")[i % 2]},
        })
    services = []
    for k in range(5):
        # Ten views each, the first five shared by every service: features in 1 to 5 services.
        names = list(dict.fromkeys([v["name"] for v in views[:5]]
                                   + [v["name"] for j, v in enumerate(views) if j % 9 == k]))
        services.append({"name": f"model_{k}", "views": names[:10],
                         "description": f"Inputs of model {k}.",
                         "owner": f"{TEAMS[k]}@bench.example", "tags": {"model": f"m{k}"}})
    return {"entities": entities, "views": views, "services": services}


def write_synthetic_repo(repo: Path, spec: dict[str, Any]) -> int:
    """The repo's files and one parquet source per view; returns the number of features."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = repo / "data"
    data.mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(FEATURE_STORE_YAML)
    (repo / "definitions.py").write_text(DEFINITIONS)
    (repo / ".feastignore").write_text("data/\n")
    (data / "spec.json").write_text(json.dumps(spec, indent=1))
    end = np.datetime64("2026-11-01T00:00:00", "us")
    for i, view in enumerate(spec["views"]):
        rng = np.random.default_rng(100 + i)
        n = ROWS_PER_VIEW
        days = rng.integers(1, 31, n)
        columns: dict[str, Any] = {
            f"{view['entity']}_id": pa.array(rng.integers(1, ENTITY_IDS + 1, n), pa.int64()),
            # Microseconds (duckdb cannot cast TIMESTAMPTZ_NS), UTC midnights.
            "event_timestamp": pa.array(end - days.astype("timedelta64[D]"),
                                        pa.timestamp("us", tz="UTC")),
        }
        for j, f in enumerate(view["features"]):
            missing = rng.random(n) < 0.05
            if f["dtype"] == "Int64":
                values = rng.poisson(3 + 7 * (j % 5), n)
                columns[f["name"]] = pa.array(values, pa.int64(), mask=missing)
            elif f["dtype"] == "Float64":
                values = rng.gamma(2.0, 40.0, n)
                columns[f["name"]] = pa.array(values, pa.float64(), mask=missing)
            else:
                vocab = CATEGORIES[f["name"]]
                values = np.array(vocab, dtype=object)[rng.integers(0, len(vocab), n)]
                columns[f["name"]] = pa.array(values, pa.string(), mask=missing)
        pq.write_table(pa.table(columns), data / f"{view['name']}.parquet")
    return sum(len(v["features"]) for v in spec["views"])


def sample_refs(spec: dict[str, Any], count: int) -> list[tuple[str, str]]:
    """``count`` (view, feature) pairs spread over every view and every feature type."""
    views = spec["views"]
    return [(views[n % len(views)]["name"], TEMPLATES[(n * 7) % len(TEMPLATES)][0])
            for n in range(count)]


# --------------------------------------------------------------------------------------------
# Child side: one stage per process.
# --------------------------------------------------------------------------------------------


def _settings(repo: Path, var: Path, feature_service: str = "fraud_model_v1"):
    from skewless.settings import Settings

    # Everything explicit: a .env in the working directory must not redirect the bench.
    return Settings(repo_path=repo, var_dir=var, redis=None, events_path=None, labels_path=None,
                    truth_path=None, feature_service=feature_service, database_url=None,
                    feature_log_dir=None)


def stage_pages_setup(args: dict[str, Any]) -> dict[str, Any]:
    """`feast apply`, migrations and the statistics refresh of the synthetic repo."""
    from skewless.db import upgrade
    from skewless.feast_cli import run_feast
    from training.stats import refresh_stats

    settings = _settings(Path(args["repo"]), Path(args["var"]), "model_0")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    run_feast(settings, "apply")
    seconds["feast apply"] = time.perf_counter() - started
    started = time.perf_counter()
    upgrade(settings.resolved_database_url)
    seconds["db upgrade"] = time.perf_counter() - started
    started = time.perf_counter()
    doc = refresh_stats(settings, online=False)
    seconds["refresh"] = time.perf_counter() - started
    errors = {k: v["error"] for k, v in doc["views"].items() if v.get("error")}
    return {"seconds": seconds, "features_with_stats": len(doc["features"]),
            "views": len(doc["views"]), "rows": sum(v.get("rows", 0) for v in doc["views"].values()),
            "errors": errors, "stats_bytes": settings.catalog_stats_path.stat().st_size}


def stage_generate(args: dict[str, Any]) -> dict[str, Any]:
    from offline import stage_generate as generate

    return generate(args)


def stage_pipeline(args: dict[str, Any]) -> dict[str, Any]:
    from offline import stage_pipeline as pipeline

    return pipeline(args)


def stage_apply(args: dict[str, Any]) -> dict[str, Any]:
    from offline import stage_apply as apply

    return apply(args)


def _passes(doc_features: dict[str, Any], view: str) -> int:
    """Scans compute_stats makes of a view: statistics, histograms, top values per String."""
    mine = [s for k, s in doc_features.items() if k.split(":", 1)[0] == view]
    return 1 + any("histogram" in s for s in mine) + sum(1 for s in mine if "top_values" in s)


def stage_stats(args: dict[str, Any]) -> dict[str, Any]:
    """What `skewless catalog refresh --no-online` computes, timed apart from opening the store."""
    from skewless.feast_cli import open_store
    from training.stats import compute_stats

    settings = _settings(Path(args["repo"]), Path(args["var"]))
    started = time.perf_counter()
    store = open_store(settings)
    store.list_feature_views()
    open_seconds = time.perf_counter() - started
    started = time.perf_counter()
    doc = compute_stats(settings, store, online=False)
    seconds = time.perf_counter() - started
    views = {name: {"rows": v.get("rows"), "seconds": v.get("seconds"), "error": v.get("error"),
                    "features": sum(1 for k in doc["features"] if k.split(":", 1)[0] == name),
                    "passes": _passes(doc["features"], name)}
             for name, v in doc["views"].items()}
    return {"seconds": seconds, "doc_seconds": doc["seconds"], "open_store_seconds": open_seconds,
            "features": len(doc["features"]), "views": views,
            "rows": sum(v["rows"] or 0 for v in views.values())}


def stage_floor(args: dict[str, Any]) -> dict[str, Any]:
    """One plain duckdb pass per source: count(*), min, max (and avg) of every column."""
    import duckdb

    from skewless.feast_cli import open_store
    from training.stats import NUMERIC_TYPES, _parquet_glob, _q

    settings = _settings(Path(args["repo"]), Path(args["var"]))
    store = open_store(settings)
    plans = []
    for view in sorted(store.list_feature_views(), key=lambda v: v.name):
        parts = ["count(*)"]
        ts = view.batch_source.timestamp_field
        if ts:
            parts += [f"min({_q(ts)})", f"max({_q(ts)})"]
        for f in view.features:
            c = _q(f.name)
            parts += [f"count({c})", f"min({c})", f"max({c})"]
            if str(f.dtype) in NUMERIC_TYPES:
                parts.append(f"avg(CAST({c} AS DOUBLE))")
        plans.append((view.name, _parquet_glob(view.batch_source.path), ", ".join(parts)))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    views: dict[str, Any] = {}
    started = time.perf_counter()
    for name, glob, select in plans:
        t0 = time.perf_counter()
        rows = con.sql(f"SELECT {select} FROM read_parquet(?, union_by_name = true)",
                       params=[glob]).fetchall()[0][0]
        views[name] = {"rows": int(rows), "seconds": round(time.perf_counter() - t0, 3)}
    seconds = time.perf_counter() - started
    con.close()
    return {"seconds": seconds, "views": views, "rows": sum(v["rows"] for v in views.values())}


STAGES = {
    "pages_setup": stage_pages_setup,
    "generate": stage_generate,
    "pipeline": stage_pipeline,
    "apply": stage_apply,
    "stats": stage_stats,
    "floor": stage_floor,
}


def run_stage_child(name: str, args_json: str, out: str,
                    stages: dict[str, Any] | None = None) -> int:
    import signal

    from offline import _rusage_mb

    os.environ["FEAST_USAGE"] = "False"
    # On the parent's SIGTERM unwind normally, so redis_for stops its server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = (stages or STAGES)[name](json.loads(args_json))
    result["rusage"] = _rusage_mb()
    Path(out).write_text(json.dumps(result, default=str))
    return 0


# --------------------------------------------------------------------------------------------
# Parent side.
# --------------------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """Ours without any SKEWLESS_* of the developer's shell (it must not redirect the bench)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKEWLESS_")}
    env.update(FEAST_USAGE="False", PYTHONUNBUFFERED="1")
    return env


def run_stage(name: str, args: dict[str, Any], work: Path, console,
              script: Path = Path(__file__)) -> dict[str, Any]:
    """Run one stage of ``script`` (its ``_stage`` entry) in a child process: its result, wall
    seconds and peak RSS."""
    import psutil
    from offline import _stop_group, _tree_rss

    out, log = work / f"{name}.json", work / f"{name}.log"
    cmd = [sys.executable, str(script.resolve()), "_stage", name, json.dumps(args), str(out)]
    console.print(f"[dim]{name} …[/]")
    started = time.perf_counter()
    with log.open("w") as log_file:
        popen = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=clean_env(),
                                 cwd=str(work), start_new_session=True)
        proc = psutil.Process(popen.pid)
        peak_tree = 0
        try:
            while popen.poll() is None:
                peak_tree = max(peak_tree, _tree_rss(proc))
                time.sleep(0.1)
        except BaseException:  # Ctrl-C: the child has its own session and would live on
            _stop_group(popen)
            raise
    process_seconds = time.perf_counter() - started
    if popen.returncode != 0 or not out.is_file():
        raise RuntimeError(f"stage {name} failed ({popen.returncode}):\n{log.read_text()[-4000:]}")
    result = json.loads(out.read_text())
    rusage = result.pop("rusage")
    result["process_seconds"] = round(process_seconds, 2)
    # The kernel high-water marks of the stage process and of its largest child (the `feast`
    # CLI for apply), or the sampled process-tree total if larger.
    result["peak_rss_mb"] = round(max(rusage["self_mb"], rusage["children_mb"], peak_tree / MB), 1)
    shown = result["seconds"] if isinstance(result["seconds"], float) else sum(
        result["seconds"].values())
    console.print(f"[dim]{name}: {shown:.2f} s, {result['peak_rss_mb']:,.0f} MB peak RSS[/]")
    return result


def _percentiles(ms: list[float]) -> dict[str, float]:
    import numpy as np

    values = np.array(ms)
    return {"p50": round(float(np.percentile(values, 50)), 2),
            "p95": round(float(np.percentile(values, 95)), 2),
            "p99": round(float(np.percentile(values, 99)), 2),
            "max": round(float(values.max()), 2), "mean": round(float(values.mean()), 2)}


def time_endpoint(http, paths: list[str], requests: int, warmup: int) -> dict[str, Any]:
    """Sequential GETs cycling through ``paths``: latency, sizes and statuses."""
    for i in range(warmup):
        http.get(paths[i % len(paths)])
    ms: list[float] = []
    sizes: list[int] = []
    statuses: dict[int, int] = {}
    last = b""
    for i in range(requests):
        started = time.perf_counter()
        response = http.get(paths[i % len(paths)])
        body = response.content
        ms.append((time.perf_counter() - started) * 1e3)
        sizes.append(len(body))
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        last = body
    return {"requests": requests, "distinct_paths": min(len(paths), requests), **_percentiles(ms),
            "bytes_mean": round(sum(sizes) / len(sizes)), "bytes_max": max(sizes),
            "statuses": statuses, "example": paths[0], "_last": last}


def bench_pages(tmp: Path, requests: int, warmup: int, console) -> dict[str, Any]:
    import httpx
    import psutil
    from serve import BIN, Server

    from skewless.embedded_redis import free_port

    work = tmp / "pages"
    repo, var = work / "repo", work / "var"
    spec = repo_spec()
    started = time.perf_counter()
    features = write_synthetic_repo(repo, spec)
    write_seconds = time.perf_counter() - started
    console.print(f"[dim]pages: {features:,} features in {len(spec['views'])} views written "
                  f"({write_seconds:.1f} s)[/]")
    setup = run_stage("pages_setup", {"repo": str(repo), "var": str(var)}, work, console)
    if setup["errors"]:
        raise RuntimeError(f"statistics errors: {setup['errors']}")
    port = free_port()
    env = clean_env()
    env.update(SKEWLESS_REPO_PATH=str(repo), SKEWLESS_VAR_DIR=str(var),
               SKEWLESS_FEATURE_SERVICE="model_0")
    server = Server("skewless catalog serve",
                    [str(BIN / "skewless"), "catalog", "serve", "--host", "127.0.0.1",
                     "--port", str(port)],
                    env, work, work / "catalog-serve.log", port, "/api/catalog")
    refs = sample_refs(spec, requests)
    word = SEARCH_WORD
    endpoints = {
        "GET /catalog (index)": ["/catalog"],
        f"GET /catalog?q={word}": [f"/catalog?q={word}"],
        f"GET /catalog?tag={TAG_FILTER}": [f"/catalog?tag={TAG_FILTER}"],
        "GET /catalog/features/{view}/{feature}": [f"/catalog/features/{v}/{f}" for v, f in refs],
        "GET …/{feature}/histogram.svg": [f"/catalog/features/{v}/{f}/histogram.svg"
                                          for v, f in refs],
        "GET /api/catalog": ["/api/catalog"],
        "GET /api/catalog/features/{view}/{feature}": [f"/api/catalog/features/{v}/{f}"
                                                      for v, f in refs],
    }
    results: dict[str, Any] = {}
    try:
        server.start()
        console.print(f"[dim]pages: catalog serving on {server.base_url} after "
                      f"{server.start_seconds:.1f} s[/]")
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            for label, paths in endpoints.items():
                results[label] = time_endpoint(http, paths, requests, warmup)
                r = results[label]
                console.print(f"[dim]  {label}: p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, "
                              f"{r['bytes_mean']:,} B[/]")
            index_html = http.get("/catalog").text
            search_html = http.get(f"/catalog?q={word}").text
            api_index = http.get("/api/catalog").json()
        server_rss_mb = psutil.Process(server.pid).memory_info().rss / MB
    finally:
        server.stop()
    problems = server.log_problems()
    for r in results.values():
        r.pop("_last")
    rows_in_index = index_html.count('data-ref="')
    checks = {
        "all_200": all(set(r["statuses"]) == {200} for r in results.values()),
        "index_feature_rows": rows_in_index,
        "index_lists_all": rows_in_index == features,
        "api_features": len(api_index["features"]),
        "search_hits": search_html.count('data-ref="'),
        "search_hits_expected": VIEWS,
        "server_log_problems": problems[:5],
    }
    ok = (checks["all_200"] and checks["index_lists_all"] and checks["api_features"] == features
          and checks["search_hits"] == VIEWS and not problems)
    return {"ok": ok, "features": features, "views": len(spec["views"]),
            "entities": len(spec["entities"]), "feature_services": len(spec["services"]),
            "rows_per_view": ROWS_PER_VIEW, "write_seconds": round(write_seconds, 2),
            "setup": {"seconds": {k: round(v, 2) for k, v in setup["seconds"].items()},
                      "peak_rss_mb": setup["peak_rss_mb"], "rows": setup["rows"],
                      "features_with_stats": setup["features_with_stats"],
                      "stats_bytes": setup["stats_bytes"]},
            "server": {"startup_seconds": round(server.start_seconds, 2),
                       "rss_mb_after": round(server_rss_mb, 1), "exit_code": server.exit_code},
            "requests_per_endpoint": requests, "warmup_per_endpoint": warmup,
            "endpoints": results, "checks": checks}


RAW_VIEW_FILE = "transactions_raw.py"


def bench_refresh(tmp: Path, console) -> dict[str, Any]:
    from offline import SIZES, copy_repo

    work = tmp / "refresh"
    work.mkdir()
    repo, var = copy_repo(work / "repo"), work / "var"
    args = {"repo": str(repo), "var": str(var)}
    setup: dict[str, Any] = {}
    gen = run_stage("generate", {"repo": str(repo), "cards": SIZES["10m"]}, work, console)
    setup["generate"] = gen
    setup["pipeline"] = run_stage("pipeline", {"repo": str(repo)}, work, console)
    (repo / RAW_VIEW_FILE).write_text(RAW_VIEW)
    setup["apply"] = run_stage("apply", args, work, console)
    stats = run_stage("stats", args, work, console)
    floor = run_stage("floor", args, work, console)
    errors = {k: v["error"] for k, v in stats["views"].items() if v["error"]}
    return {
        "transactions": gen["rows_out"], "cards": SIZES["10m"],
        "setup": {k: {"seconds": round(v["seconds"], 2), "peak_rss_mb": v["peak_rss_mb"],
                      "rows_out": v.get("rows_out")} for k, v in setup.items()},
        "stats": {"seconds": round(stats["seconds"], 2), "doc_seconds": stats["doc_seconds"],
                  "open_store_seconds": round(stats["open_store_seconds"], 2),
                  "process_seconds": stats["process_seconds"], "peak_rss_mb": stats["peak_rss_mb"],
                  "features": stats["features"], "rows": stats["rows"], "views": stats["views"],
                  "errors": errors},
        "floor": {"seconds": round(floor["seconds"], 2), "peak_rss_mb": floor["peak_rss_mb"],
                  "rows": floor["rows"], "views": floor["views"]},
        "ok": not errors and stats["rows"] == floor["rows"],
    }


def _verdict(met: bool | None) -> str:
    return "—" if met is None else ("[green]MET[/]" if met else "[red]NOT MET[/]")


def report(doc: dict[str, Any], console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Skewless feature catalog benchmark")
    for col, justify in (("measure", "left"), ("figure", "right"), ("target", "right"),
                         ("result", "left"), ("detail", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    pages = doc.get("pages")
    if pages:
        s = pages["setup"]
        table.add_row(f"setup: {pages['features']:,} features ({pages['views']} views × "
                      f"{pages['rows_per_view']:,} rows)",
                      f"{sum(s['seconds'].values()):.1f} s", "—", "",
                      escape(", ".join(f"{k} {v:.1f} s" for k, v in s["seconds"].items())
                             + f"; stats.json {s['stats_bytes'] / 1e6:.1f} MB"))
        table.add_row("skewless catalog serve: start to first /api/catalog",
                      f"{pages['server']['startup_seconds']:.1f} s", "—", "",
                      f"RSS after the run {pages['server']['rss_mb_after']:,.0f} MB")
        for label, r in pages["endpoints"].items():
            met = r["p95"] < TARGET_PAGE_MS and set(r["statuses"]) == {200}
            table.add_row(escape(label), f"p95 {r['p95']:.1f} ms", f"< {TARGET_PAGE_MS:.0f} ms",
                          _verdict(met),
                          f"p50 {r['p50']:.1f} · p99 {r['p99']:.1f} · max {r['max']:.1f} ms · "
                          f"{r['bytes_mean'] / 1024:,.1f} KiB · {r['requests']}× "
                          f"({r['distinct_paths']} paths) · "
                          + ", ".join(f"{k}: {v}" for k, v in r["statuses"].items()))
        c = pages["checks"]
        table.add_row("index rows / search hits", f"{c['index_feature_rows']:,} / {c['search_hits']}",
                      f"{pages['features']:,} / {c['search_hits_expected']}",
                      _verdict(c["index_lists_all"] and c["search_hits"] == c["search_hits_expected"]),
                      f"/api/catalog features {c['api_features']:,}; server log problems "
                      f"{len(c['server_log_problems'])}")
        table.add_section()
    refresh = doc.get("refresh")
    if refresh:
        earlier = "" if not refresh.get("from_earlier_run") else \
            f" (earlier run {refresh['measured_at']})"
        for stage, r in refresh["setup"].items():
            rows = f"{r['rows_out']:,} rows" if r.get("rows_out") else ""
            table.add_row(f"10M setup: {stage}", f"{r['seconds']:.1f} s", "—", "",
                          f"{r['peak_rss_mb']:,.0f} MB peak RSS" + (f" · {rows}" if rows else ""))
        st, fl = refresh["stats"], refresh["floor"]
        table.add_row(f"refresh: compute_stats (online=False){earlier}", f"{st['seconds']:.1f} s",
                      f"< {TARGET_REFRESH_S:.0f} s", _verdict(st["seconds"] < TARGET_REFRESH_S),
                      f"{st['rows']:,} rows in {len(st['views'])} views · {st['features']} features"
                      f" · {st['peak_rss_mb']:,.0f} MB peak RSS · open_store "
                      f"{st['open_store_seconds']:.1f} s (not counted)")
        table.add_row("peer: plain duckdb scan, count/min/max/avg, one pass",
                      f"{fl['seconds']:.1f} s", "floor", "",
                      f"{fl['rows']:,} rows · {fl['peak_rss_mb']:,.0f} MB peak RSS · refresh = "
                      f"{st['seconds'] / fl['seconds']:.1f}× the floor")
    console.print(table)
    if refresh:
        per = Table(title="Refresh per feature view (10M bench data)")
        for col in ("view", "rows", "features", "passes", "refresh s", "floor s", "ratio"):
            per.add_column(col, justify="left" if col == "view" else "right")
        for name, v in refresh["stats"]["views"].items():
            f = refresh["floor"]["views"].get(name, {})
            ratio = (f"{v['seconds'] / f['seconds']:.1f}×" if v.get("seconds") and f.get("seconds")
                     else "—")
            per.add_row(name, f"{v['rows']:,}" if v["rows"] is not None else "error",
                        str(v["features"]), str(v["passes"]),
                        f"{v['seconds']:.2f}" if v["seconds"] is not None else "—",
                        f"{f['seconds']:.2f}" if f.get("seconds") is not None else "—", ratio)
        console.print(per)
        console.print("[dim]passes: scans compute_stats makes of the source (statistics, "
                      "histograms, then one per String feature for its top values); the floor "
                      "makes one.[/]")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_stage":
        return run_stage_child(*argv[1:4])

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per endpoint")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted requests per endpoint")
    parser.add_argument("--skip-10m", action="store_true",
                        help="only the pages part (an earlier refresh result is kept)")
    parser.add_argument("--skip-pages", action="store_true", help="only the refresh part")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp directory")
    opts = parser.parse_args(argv)

    import psutil
    from offline import _git_state, _versions
    from rich.console import Console

    os.environ["FEAST_USAGE"] = "False"
    console = Console(width=None if sys.stdout.isatty() else 160)
    previous: dict[str, Any] = {}
    if RESULTS.is_file():
        try:
            previous = json.loads(RESULTS.read_text())
        except json.JSONDecodeError:
            previous = {}
    now = datetime.now(UTC).isoformat()
    tmp = Path(tempfile.mkdtemp(prefix="skewless-bench-catalog-"))
    doc: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/catalog.py", *argv]),
        "machine": {"cpus": os.cpu_count(),
                    "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
                    "platform": platform.platform()},
        "versions": _versions(), "git": _git_state(), "measured_at": now,
        "targets": {"pages_p95_ms": TARGET_PAGE_MS, "refresh_seconds": TARGET_REFRESH_S,
                    "text": "pages < 100 ms with 1,000 features; refresh over the 10M-row "
                            "bench data < 60 s"},
    }
    try:
        if not opts.skip_pages:
            doc["pages"] = {**bench_pages(tmp, opts.requests, opts.warmup, console),
                            "measured_at": now}
        elif previous.get("pages"):
            doc["pages"] = {**previous["pages"], "from_earlier_run": True}
        if not opts.skip_10m:
            doc["refresh"] = {**bench_refresh(tmp, console), "measured_at": now}
        elif previous.get("refresh"):
            doc["refresh"] = {**previous["refresh"], "from_earlier_run": True}
    finally:
        if opts.keep_temp:
            console.print(f"[yellow]kept[/] {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(doc, console)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    console.print(f"[green]results[/] → {RESULTS.relative_to(ROOT)}")
    ok = all(doc[part]["ok"] for part in ("pages", "refresh") if part in doc)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
