"""Online benchmark: 1-row POST /predict against tuned `feast serve`, same features, same Redis.

Setup, all inside one temp directory (the developer's repo, data and Redis are untouched):
a copy of feature_repo/ (code only), demo-sized data generated to end at the current hour
(the batch views' TTL is 2 days, so served values must be recent), the feature tables,
`feast apply`, a point-in-time training set and a model, and `feast materialize` of the whole
window into a private redis-server.

Servers, each started for one run and stopped after it, so only one is ever busy:

  ours (log on)    `skewless serve`, served features logged (SKEWLESS_FEATURE_LOG_DIR)
  ours (spool)     the same with SKEWLESS_FEATURE_LOG_DURABILITY=spool: each answer waits for
                   its row to be synced to the spool
  feast            `feast serve -w 1 --max-requests 0 --no-access-log`, feature service
                   fraud_model_v1 (17 batch features + 5 on-demand), returns the features
  feast (pandas)   the same on the pandas-mode copy of the repo
  ours (log off)   `skewless serve` with SKEWLESS_FEATURE_LOG_ENABLED=false
  ours (pandas)    `skewless serve` (log on) on a copy of the repo whose on-demand view is
                   written in pandas mode (Feast's default; the same logic over DataFrames),
                   with its own model trained on it: the cost of pandas mode per request
  feast batch      the same `feast serve`, only the 17 batch feature refs (no on-demand view)
  ours (shadow)    `skewless serve` (log on) with a challenger in shadow: a second model of
                   the same size scored on every request off the request path
  ours (canary)    the same challenger as a canary answering CANARY_PERCENT% of the cards
                   (and scored in the shadow on the rest)
  ours (ages off)  `skewless serve` (log on) with SKEWLESS_FEATURE_AGE_METRICS=false: the cost
                   of observing each served value's age
  ours (cluster)   `skewless serve` (log on) on the cluster profile: the same window
                   materialized into a three-node Redis Cluster on this machine (not in the
                   default list: ``--variants ours_log_on,ours_cluster,feast,feast_cluster``)
  feast (cluster)  the tuned `feast serve` on the same cluster (`-f feature_store.cluster.yaml`)

They run in the order of ``--variants``, ``--rounds`` times. Load is `wrk -t1 -c8 --latency` with a Lua
script that rotates through pre-generated request bodies (real cards, merchants, amounts,
channels and hours from the generated transactions; the same rows for every server) and
prints its summary as JSON from ``done()``. Each run starts with a warm-up that is not counted.

After every run of our service the served-feature log is counted (parquet rows, after the
service was stopped and flushed) and compared with the service's own prediction counter and
with the 2xx answers the clients saw (wrk cannot see the answers to requests in flight when
it stops, so those are bounded by what it had sent). A last, separate run reads the
Server-Timing header of every answer under the same load.

    .venv/bin/python bench/serve.py [--duration 10] [--rounds 2] [--warmup 2]
                                    [--connections 8] [--bodies 2000] [--keep-temp]

Needs `wrk`: installed with apt-get when it is not on the PATH. Results are printed and
written to ``var/bench/serve.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "var" / "bench" / "serve.json"
BIN = Path(sys.executable).parent
FEATURE_SERVICE = "fraud_model_v1"
DAYS = 60
RECENT_DAYS = 7  # request bodies are drawn from the last week of transactions
VERIFY_ROWS = 100  # requests per server checked one by one before it is timed
# The repo's code and config (its definitions, expectations, feature_store.yaml variants).
REPO_FILES = tuple(sorted(
    p.name for p in (ROOT / "feature_repo").iterdir()
    if p.is_file() and (p.suffix in (".py", ".yaml") or p.name == ".feastignore")))
JSON_MARK = "BENCH_JSON "
CANARY_PERCENT = 20.0

# Rotates through request bodies (one JSON document per line of the file named after `--`)
# and prints wrk's summary as one JSON line. With a second argument "timing" it also reads
# every answer's Server-Timing header (that costs wrk time: only for the diagnostic run).
LUA = r"""
local bodies_path = nil
local timing = false
local reqs = {}
local idx = 0
local stages = {"features", "transform", "model", "log", "total"}
sent = 0
statuses = {}
-- One flat global list per stage: wrk's thread:get() crashes on nested tables.
for _, name in ipairs(stages) do _G["st_" .. name] = {} end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function timing_response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local h = headers["server-timing"] or headers["Server-Timing"]
  if h then
    local total = 0
    for name, dur in string.gmatch(h, "(%w+);dur=([%d%.]+)") do
      local list = _G["st_" .. name]
      if list then
        list[#list + 1] = tonumber(dur)
        total = total + tonumber(dur)
      end
    end
    st_total[#st_total + 1] = total
  end
end

function init(args)
  bodies_path = args[1]
  timing = args[2] == "timing"
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(bodies_path) do
    if #line > 0 then
      reqs[#reqs + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  idx = math.random(#reqs) - 1
  if timing then
    response = timing_response
  end
end

function request()
  sent = sent + 1
  idx = idx % #reqs + 1
  return reqs[idx]
end

local function pct(sorted, p)
  if #sorted == 0 then return -1 end
  local i = math.max(1, math.ceil(#sorted * p / 100))
  return sorted[i]
end

function done(summary, latency, requests)
  local total_sent = 0
  local merged = {}
  for _, name in ipairs(stages) do merged[name] = {} end
  local codes = {}
  for _, t in ipairs(threads) do
    total_sent = total_sent + (t:get("sent") or 0)
    for _, name in ipairs(stages) do
      for _, v in ipairs(t:get("st_" .. name) or {}) do table.insert(merged[name], v) end
    end
    for code, n in pairs(t:get("statuses") or {}) do
      codes[code] = (codes[code] or 0) + n
    end
  end
  local e = summary.errors
  local parts = {
    string.format('"requests":%d,"duration_us":%d,"bytes":%d,"sent":%d', summary.requests,
      summary.duration, summary.bytes, total_sent),
    string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,' ..
      '"p90":%d,"p99":%d,"p999":%d}', latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9)),
  }
  local timing_parts = {}
  for _, name in ipairs(stages) do
    local list = merged[name]
    if #list > 0 then
      table.sort(list)
      local sum = 0
      for _, v in ipairs(list) do sum = sum + v end
      table.insert(timing_parts, string.format('"%s":{"n":%d,"mean":%.4f,"p50":%.4f,' ..
        '"p90":%.4f,"p99":%.4f,"max":%.4f}', name, #list, sum / #list, pct(list, 50),
        pct(list, 90), pct(list, 99), list[#list]))
    end
  end
  table.insert(parts, '"server_timing_ms":{' .. table.concat(timing_parts, ",") .. '}')
  local code_parts = {}
  for code, n in pairs(codes) do
    table.insert(code_parts, string.format('"%d":%d', code, n))
  end
  table.insert(parts, '"statuses":{' .. table.concat(code_parts, ",") .. '}')
  io.write("BENCH_JSON {" .. table.concat(parts, ",") .. "}\n")
end
"""


# --------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """wrk's path; installs Debian's package when it is missing (needs root)."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: apt-get install -y wrk", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is still not on the PATH after apt-get install")
    return found


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    return (out.stdout + out.stderr).strip().splitlines()[0]


@dataclass
class WrkResult:
    requests: int
    sent: int
    seconds: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    server_timing_ms: dict[str, dict[str, float]]
    statuses: dict[str, int]
    text: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def non_2xx(self) -> int:
        return self.errors["status"]  # wrk counts every status above 399 here

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def in_flight(self) -> int:
        """Requests sent whose answers wrk did not wait for when its time was up."""
        return max(self.sent - self.requests, 0)

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "sent": self.sent, "seconds": round(self.seconds, 3),
                "rps": round(self.rps, 1), "errors": self.errors, "non_2xx": self.non_2xx,
                "latency_ms": {k: round(v / 1e3, 3) for k, v in self.latency_us.items()},
                **({"server_timing_ms": self.server_timing_ms} if self.server_timing_ms else {}),
                **({"statuses": self.statuses} if self.statuses else {})}


def run_wrk(wrk: str, script: Path, url: str, bodies: Path, seconds: float, connections: int,
            threads: int, timing: bool = False) -> WrkResult:
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
           "--timeout", "5s", "-s", str(script), url, "--", str(bodies),
           *(["timing"] if timing else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    lines = [line for line in out.stdout.splitlines() if line.startswith(JSON_MARK)]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    data = json.loads(lines[-1][len(JSON_MARK):])
    return WrkResult(
        # wrk calls request() once more than it sends, to check the script (thread 0 only).
        requests=data["requests"], sent=data["sent"] - 1, seconds=data["duration_us"] / 1e6,
        errors=data["errors"], latency_us=data["latency_us"],
        server_timing_ms=data["server_timing_ms"], statuses=data["statuses"],
        text=out.stdout.split(JSON_MARK)[0].rstrip(),
    )


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def http(method: str, url: str, body: Any = None, timeout: float = 10.0,
         ) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@dataclass
class Server:
    """A server process this script started, in its own session (process group)."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    port: int
    ready_path: str
    process: subprocess.Popen[bytes] | None = None
    pid: int = 0
    start_seconds: float = 0.0
    stop_seconds: float = 0.0
    exit_code: int | None = None
    leftovers: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> Server:
        started = time.perf_counter()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.process.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start ({self.process.returncode}):\n"
                                   f"{self.log_tail()}")
            try:
                if http("GET", self.base_url + self.ready_path, timeout=2)[0] == 200:
                    self.start_seconds = time.perf_counter() - started
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 45.0) -> None:
        """SIGTERM, wait; SIGKILL the process group only if it will not stop."""
        process = self.process
        if process is None:
            return
        started = time.perf_counter()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"  ! {self.name} ignored SIGTERM for {timeout:.0f} s: SIGKILL", flush=True)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.stop_seconds = time.perf_counter() - started
        self.exit_code = process.returncode
        # Anything left in the group (e.g. a gunicorn worker) is ours to end.
        self.leftovers = group_members(process.pid)
        if self.leftovers:
            time.sleep(2)
            if group_members(process.pid):
                os.killpg(process.pid, signal.SIGKILL)
        self.process = None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def log_problems(self) -> list[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines()
                if any(w in line for w in ("Traceback", "ERROR", "CRITICAL", "Exception"))]


def group_members(pgid: int) -> list[int]:
    import psutil

    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


# --------------------------------------------------------------------------------------------
# Setup: data, model, Redis
# --------------------------------------------------------------------------------------------


@dataclass
class Fixture:
    tmp: Path
    repo: Path
    var: Path
    redis: str
    end: datetime
    spec: Any
    batch_refs: list[str]
    transactions: Any
    model_version: str
    model_dir: Path
    facts: dict[str, Any]
    pandas_repo: Path | None = None  # the repo with the on-demand view in pandas mode
    pandas_var: Path | None = None
    cluster: str | None = None  # the Redis Cluster's nodes, materialized like ``redis``


def build_fixture(tmp: Path, redis: str, cards: int | None = None) -> Fixture:
    """The served world; ``cards`` overrides the generator's default number of cards."""
    from feast import FeatureStore

    from skewless.contract import resolve_service
    from skewless.feast_cli import run_feast
    from skewless.registry import bootstrap_production
    from skewless.settings import Settings
    from training.dataset import build_training_set
    from training.generate import GenerateConfig, generate, write_generated
    from training.pipeline import PipelinePaths, build_feature_tables
    from training.train import train_model

    repo = tmp / "feature_repo"
    repo.mkdir(parents=True)
    for name in REPO_FILES:
        shutil.copy(ROOT / "feature_repo" / name, repo / name)
    var = tmp / "var"
    # Everything explicit: a .env in the working directory must not redirect the bench.
    settings = Settings(repo_path=repo, var_dir=var, redis=redis, events_path=None,
                        labels_path=None, truth_path=None, model_path=None,
                        feature_service=FEATURE_SERVICE)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    facts: dict[str, Any] = {"data_end": end.isoformat()}

    def step(name: str, fn: Any) -> Any:
        started = time.perf_counter()
        print(f"  {name} …", end="", flush=True)
        with warnings.catch_warnings():  # Feast and ibis warn about their own internals
            warnings.simplefilter("ignore")
            result = fn()
        seconds = time.perf_counter() - started
        facts.setdefault("setup_seconds", {})[name] = round(seconds, 1)
        print(f" {seconds:.1f} s", flush=True)
        return result

    sized = {"cards": cards} if cards else {}
    data = step("generate", lambda: generate(GenerateConfig(
        end=end, days=DAYS, holdout_days=settings.holdout_days, **sized)))
    step("write raw data", lambda: write_generated(data, settings.raw_dir))
    step("feature tables", lambda: build_feature_tables(PipelinePaths.from_settings(settings)))
    step("feast apply", lambda: run_feast(settings, "apply"))
    ts = step("training set", lambda: build_training_set(settings, cutoff=end))
    model = step("train", lambda: train_model(
        ts, settings.model_dir, settings.holdout_days, settings.validation_days,
        seed=settings.seed, truth_path=settings.resolved_truth_path))
    step("register as production", lambda: bootstrap_production(settings, model.directory))
    # The whole window of every feature table: card_profile rows are stamped with the card's
    # issue date, years before the transactions (a 61-day window would leave most cards
    # without a profile online).
    start = PipelinePaths.from_settings(settings).earliest_event() - timedelta(days=1)
    facts["materialize_from"] = start.isoformat()
    step("feast materialize", lambda: run_feast(
        settings, "materialize", start.strftime("%Y-%m-%dT%H:%M:%S"),
        end.strftime("%Y-%m-%dT%H:%M:%S")))

    pandas_repo, pandas_var = step("pandas-mode repo, training set, model",
                                   lambda: pandas_mode_world(tmp, settings, end))

    store = FeatureStore(repo_path=str(repo))
    spec = resolve_service(store, FEATURE_SERVICE)
    views = spec.definitions["views"]
    batch_refs = [f"{f.view}:{f.feature}" for f in spec.features if views[f.view]["kind"] == "batch"]
    facts.update(transactions=int(data.meta["transactions"]), cards=int(data.meta["cards"]),
                 merchants=int(data.meta["merchants"]))
    return Fixture(tmp, repo, var, redis, end, spec, batch_refs, data.transactions,
                   model.contract.version, model.directory, facts, pandas_repo, pandas_var)


def materialize_cluster(fx: Fixture, nodes: str) -> None:
    """The fixture's repo applied on the cluster profile and the same window materialized
    into the cluster's nodes."""
    from skewless.feast_cli import run_feast
    from skewless.settings import Settings

    settings = Settings(repo_path=fx.repo, var_dir=fx.var, redis=nodes, profile="cluster",
                        events_path=None, labels_path=None, truth_path=None, model_path=None,
                        feature_service=FEATURE_SERVICE)
    from tests.support.redis_cluster import redis_cluster_only

    redis_cluster_only(fx.repo)  # serving reads Redis Cluster; no Spark needed for it
    started = time.perf_counter()
    run_feast(settings, "apply")
    run_feast(settings, "materialize", fx.facts["materialize_from"][:19],
              fx.end.strftime("%Y-%m-%dT%H:%M:%S"))
    fx.facts.setdefault("setup_seconds", {})["cluster apply + materialize"] = round(
        time.perf_counter() - started, 1)
    fx.cluster = nodes


def pandas_mode_world(tmp: Path, settings: Any, end: datetime) -> tuple[Path, Path]:
    """A copy of the repo whose on-demand view is in pandas mode, applied (its own registry,
    the same project, so it reads the Redis keys already materialized), with a model trained
    on it through the same point-in-time path and registered as production in its own var."""
    from skewless.feast_cli import run_feast
    from skewless.registry import bootstrap_production
    from tests.support.pandas_mode import in_pandas_mode
    from training.dataset import build_training_set
    from training.train import train_model

    repo = tmp / "feature_repo_pandas"
    (repo / "data").mkdir(parents=True)
    for name in REPO_FILES:
        shutil.copy(settings.repo_path / name, repo / name)
    on_demand = repo / "on_demand.py"
    on_demand.write_text(in_pandas_mode(on_demand.read_text()))
    for item in settings.data_dir.iterdir():  # the feature tables and raw data, shared
        if item.name != "registry.db":
            (repo / "data" / item.name).symlink_to(item)
    pandas = settings.model_copy(update={"repo_path": repo, "var_dir": tmp / "var_pandas"})
    run_feast(pandas, "apply")
    ts = build_training_set(pandas, cutoff=end)
    model = train_model(ts, pandas.model_dir, pandas.holdout_days, pandas.validation_days,
                        seed=pandas.seed, truth_path=pandas.resolved_truth_path)
    bootstrap_production(pandas, model.directory)
    return repo, pandas.var_dir


@dataclass
class Bodies:
    ours: Path
    feast: Path
    feast_batch: Path
    rows: list[dict[str, Any]]
    facts: dict[str, Any]


def write_bodies(fx: Fixture, n: int, seed: int) -> Bodies:
    """Request rows drawn from the last week's real transactions; one file per request shape."""
    tx = fx.transactions
    recent = tx[tx["event_timestamp"] >= fx.end - timedelta(days=RECENT_DAYS)]
    sample = recent.sample(n=min(n, len(recent)), random_state=seed)
    keys = [k.name for k in fx.spec.entity_keys]
    requests = [r.name for r in fx.spec.request_fields]
    rows = [
        {"card_id": int(r.card_id), "merchant_id": int(r.merchant_id), "amount": float(r.amount),
         "channel": str(r.channel), "local_hour": int(r.local_hour)}
        for r in sample.itertuples(index=False)
    ]
    if sorted(rows[0]) != sorted(keys + requests):
        raise RuntimeError(f"the service expects {keys + requests}, the bench sends {sorted(rows[0])}")
    directory = fx.tmp / "bodies"
    directory.mkdir()

    def write(name: str, docs: list[dict[str, Any]]) -> Path:
        path = directory / f"{name}.jsonl"
        path.write_text("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in docs))
        return path

    ours = write("ours", rows)
    feast = write("feast", [feast_body(row, keys + requests) for row in rows])
    feast_batch = write("feast_batch", [feast_body(row, keys, fx.batch_refs) for row in rows])
    facts = {"rows": len(rows), "distinct_cards": len({r["card_id"] for r in rows}),
             "distinct_merchants": len({r["merchant_id"] for r in rows}),
             "from": (fx.end - timedelta(days=RECENT_DAYS)).isoformat(),
             "channels": {c: sum(r["channel"] == c for r in rows) for c in ("pos", "online", "atm")}}
    return Bodies(ours, feast, feast_batch, rows, facts)


def feast_body(row: dict[str, Any], fields: list[str], refs: list[str] | None = None,
               ) -> dict[str, Any]:
    entities = {name: [row[name]] for name in fields}
    if refs is None:
        return {"feature_service": FEATURE_SERVICE, "entities": entities}
    return {"features": refs, "entities": entities}


# --------------------------------------------------------------------------------------------
# Variants and runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    kind: str  # "ours" or "feast"
    logging: bool = True
    batch_only: bool = False
    checkout: Path | None = None  # run `skewless serve` from this checkout of another commit
    spool: bool = False  # SKEWLESS_FEATURE_LOG_DURABILITY=spool
    pandas: bool = False  # the repo whose on-demand view is in pandas mode
    rollout: str | None = None  # "shadow" or "canary": a challenger beside production
    ages: bool = True  # SKEWLESS_FEATURE_AGE_METRICS: each served value's age observed
    cluster: bool = False  # the cluster profile: the same values on a 3-node Redis Cluster


VARIANTS = (
    Variant("ours_log_on", "skewless /predict (log on)", "ours", logging=True),
    Variant("ours_pandas", "skewless /predict (pandas-mode)", "ours", logging=True,
            pandas=True),
    Variant("ours_spool", "skewless /predict (spool)", "ours", logging=True, spool=True),
    Variant("ours_shadow", "skewless /predict (shadow)", "ours", logging=True,
            rollout="shadow"),
    Variant("ours_canary", f"skewless /predict (canary {CANARY_PERCENT:g}%)", "ours",
            logging=True, rollout="canary"),
    Variant("ours_ages_off", "skewless /predict (ages off)", "ours", logging=True, ages=False),
    Variant("feast", "feast serve (service)", "feast"),
    Variant("feast_pandas", "feast serve (pandas-mode)", "feast", pandas=True),
    Variant("ours_log_off", "skewless /predict (log off)", "ours", logging=False),
    Variant("feast_batch", "feast serve (17 batch refs)", "feast", batch_only=True),
    Variant("ours_cluster", "skewless /predict (Redis Cluster)", "ours", logging=True,
            cluster=True),
    Variant("feast_cluster", "feast serve (Redis Cluster)", "feast", cluster=True),
)
BASELINE = "feast"


PROMETHEUS_MULTIPROCESS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) of every process in the process group ``pgid`` so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid``'s main thread (the event loop's, for our server) so far."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def base_env(fx: Fixture) -> dict[str, str]:
    # No SKEWLESS_* of the developer's shell may redirect the servers; nor the Prometheus
    # multiprocess directory that importing Feast here put in this process's environment
    # (inherited, it would make every metric update of the servers a file write).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SKEWLESS_") and k not in PROMETHEUS_MULTIPROCESS}
    env.update(FEAST_USAGE="False", SKEWLESS_REDIS=fx.redis, PYTHONUNBUFFERED="1")
    return env


def make_server(variant: Variant, fx: Fixture, run_dir: Path) -> Server:
    from skewless.embedded_redis import free_port

    port = free_port()
    env = base_env(fx)
    if variant.cluster:
        if fx.cluster is None:
            raise RuntimeError(f"{variant.label}: no Redis Cluster was started")
        env.update(SKEWLESS_REDIS=fx.cluster, SKEWLESS_PROFILE="cluster")
    if variant.kind == "ours":
        repo, var = ((fx.pandas_repo, fx.pandas_var) if variant.pandas else (fx.repo, fx.var))
        env.update(SKEWLESS_REPO_PATH=str(repo), SKEWLESS_VAR_DIR=str(var),
                   SKEWLESS_FEATURE_LOG_DIR=str(run_dir / "feature_log"),
                   SKEWLESS_FEATURE_LOG_ENABLED="true" if variant.logging else "false",
                   SKEWLESS_FEATURE_AGE_METRICS="true" if variant.ages else "false")
        if variant.spool:
            env.update(SKEWLESS_FEATURE_LOG_DURABILITY="spool",
                       SKEWLESS_FEATURE_LOG_SPOOL_DIR=str(run_dir / "spool"))
        if variant.rollout is not None:  # its registry is made by rollout_registry
            env.update(SKEWLESS_DATABASE_URL=f"sqlite:///{run_dir / 'rollout.db'}")
        if variant.checkout is not None:  # its packages shadow the installed ones
            # An earlier commit may know fewer migrations: it gets a database of its own,
            # migrated by its own code, and serves the fixture's model pinned.
            env.update(PYTHONPATH=str(variant.checkout),
                       SKEWLESS_DATABASE_URL=f"sqlite:///{run_dir / 'baseline.db'}",
                       SKEWLESS_MODEL_PATH=str(fx.model_dir))
            subprocess.run([str(BIN / "skewless"), "db", "upgrade"], env=env, check=True,
                           capture_output=True)
        cmd = [str(BIN / "skewless"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        ready = "/readyz"
    else:
        # Tuned: one worker that is never recycled (the default recycles it every ~1,000
        # requests), no access log.
        repo = fx.pandas_repo if variant.pandas else fx.repo
        profile = ["-f", str(repo / "feature_store.cluster.yaml")] if variant.cluster else []
        cmd = [str(BIN / "feast"), "-c", str(repo), *profile, "serve", "--host", "127.0.0.1",
               "-p", str(port), "--no-access-log", "-w", "1", "--max-requests", "0"]
        ready = "/health"
    return Server(variant.label, cmd, env, run_dir, run_dir / "server.log", port, ready)


def rollout_registry(fx: Fixture, env: dict[str, str], run_dir: Path, stage: str) -> None:
    """A metadata database of the run's own: the fixture's model in production and a copy of
    it registered as another version (so the challenger costs what production costs), in
    ``stage``."""
    from skewless.registry import Registry, bootstrap_production
    from skewless.settings import Settings

    url = env["SKEWLESS_DATABASE_URL"]
    subprocess.run([str(BIN / "skewless"), "db", "upgrade"], env=env, check=True,
                   capture_output=True)
    settings = Settings(repo_path=fx.repo, var_dir=fx.var, redis=fx.redis, database_url=url,
                        feature_service=FEATURE_SERVICE, model_path=None)
    bootstrap_production(settings, fx.model_dir)
    challenger = run_dir / "challenger"
    shutil.copytree(fx.model_dir, challenger)
    contract = json.loads((challenger / "contract.json").read_text())
    contract["model"]["version"] = "challenger"
    (challenger / "contract.json").write_text(json.dumps(contract))
    registry = Registry.from_settings(settings)
    try:
        registry.register(challenger)
        if stage == "shadow":
            registry.shadow(FEATURE_SERVICE, "challenger", "bench", "bench")
        else:
            registry.canary(FEATURE_SERVICE, "challenger", CANARY_PERCENT, "bench", "bench")
    finally:
        registry.close()


def request_path(variant: Variant) -> str:
    return "/predict" if variant.kind == "ours" else "/get-online-features"


def body_file(variant: Variant, bodies: Bodies) -> Path:
    if variant.kind == "ours":
        return bodies.ours
    return bodies.feast_batch if variant.batch_only else bodies.feast


def verify(variant: Variant, server: Server, fx: Fixture, bodies: Bodies,
           ) -> tuple[int, dict[str, Any], list[dict[str, tuple[Any, str]]]]:
    """POST the first rows one by one: all must answer 200 with features; returns the 2xx
    count, the share of PRESENT statuses and each row's (value, status) by feature name."""
    path = request_path(variant)
    docs = [json.loads(line) for line in body_file(variant, bodies).read_text().splitlines()]
    names = (fx.spec.feature_names if not variant.batch_only
             else [r.replace(":", "__") for r in fx.batch_refs])
    short = {f.feature: f.name for f in fx.spec.features}
    vectors: list[dict[str, tuple[Any, str]]] = []
    for doc in docs[:VERIFY_ROWS]:
        query = "?include_features=true" if variant.kind == "ours" else ""
        status, _, raw = http("POST", server.base_url + path + query, doc)
        if status != 200:
            raise RuntimeError(f"{variant.label}: {path} answered {status}: {raw[:500]!r}")
        payload = json.loads(raw)
        if variant.kind == "ours":
            vector = {k: (v["value"], v["status"]) for k, v in payload["features"].items()}
        else:
            vector = {
                short[name]: (result["values"][0], result["statuses"][0])
                for name, result in zip(payload["metadata"]["feature_names"], payload["results"],
                                        strict=True)
                if name in short
            }
        missing = set(names) - set(vector)
        if missing:
            raise RuntimeError(f"{variant.label}: answer lacks features {sorted(missing)}")
        vectors.append(vector)
    statuses = [s for v in vectors for _, s in v.values()]
    present = sum(s == "PRESENT" for s in statuses) / len(statuses)
    return len(vectors), {"rows": len(vectors), "features": len(names),
                          "present_share": round(present, 4)}, vectors


def compare_vectors(a: list[dict[str, tuple[Any, str]]], b: list[dict[str, tuple[Any, str]]],
                    ) -> dict[str, Any]:
    """Served values and statuses that differ between two servers over the same rows."""
    values: dict[str, int] = {}
    statuses: dict[str, dict[str, int]] = {}
    compared = 0
    for va, vb in zip(a, b, strict=True):
        for name in va.keys() & vb.keys():
            compared += 1
            (x, sx), (y, sy) = va[name], vb[name]
            same = (x == y or (isinstance(x, float) and isinstance(y, float | int)
                               and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)))
            if not same:
                values[name] = values.get(name, 0) + 1
            if sx != sy:
                pair = statuses.setdefault(name, {})
                pair[f"{sx} vs {sy}"] = pair.get(f"{sx} vs {sy}", 0) + 1
    return {"values_compared": compared, "values_differing": values,
            "statuses_differing": statuses}


def metric_value(text: str, name: str) -> float:
    """The sum of a Prometheus metric's samples (over all its label sets)."""
    total = 0.0
    for line in text.splitlines():
        if line and not line.startswith("#"):
            sample, _, value = line.rpartition(" ")
            if sample == name or sample.startswith(name + "{"):
                total += float(value)
    return total


def parquet_rows(directory: Path) -> tuple[int, int]:
    """Rows and files of the finished parquet files under ``directory`` (hidden ones are
    files still being written)."""
    import pyarrow.parquet as pq

    rows = files = 0
    if directory.exists():
        for path in directory.rglob("*.parquet"):
            if not path.name.startswith("."):
                rows += pq.ParquetFile(path).metadata.num_rows
                files += 1
    return rows, files


@dataclass
class RunResult:
    variant: str
    round: int
    measured: WrkResult
    warmup: WrkResult
    facts: dict[str, Any]
    problems: list[str]

    def summary(self) -> dict[str, Any]:
        return {"variant": self.variant, "round": self.round, **self.measured.summary(),
                "warmup": self.warmup.summary(), **self.facts, "problems": self.problems}


def one_run(variant: Variant, round_no: int, fx: Fixture, bodies: Bodies, args: argparse.Namespace,
            wrk: str, script: Path, reference: dict[str, list[dict[str, Any]]],
            timing: bool = False) -> RunResult:
    tag = f"{variant.key}-r{round_no}" + ("-timing" if timing else "")
    run_dir = fx.tmp / "runs" / tag
    run_dir.mkdir(parents=True)
    server = make_server(variant, fx, run_dir)
    if variant.rollout is not None:
        rollout_registry(fx, server.env, run_dir, variant.rollout)
    problems: list[str] = []
    facts: dict[str, Any] = {}
    url = server.base_url + request_path(variant)
    bodies_path = body_file(variant, bodies)
    STARTED.append(server)
    try:
        server.start()
        facts["start_seconds"] = round(server.start_seconds, 1)
        verified, facts["verify"], vectors = verify(variant, server, fx, bodies)
        reference.setdefault(variant.key, vectors)
        if timing:
            facts["idle_server_timing_ms"] = idle_server_timing(server, bodies)
            verified += facts["idle_server_timing_ms"]["client"]["n"]
        warm = run_wrk(wrk, script, url, bodies_path, args.warmup, args.connections, args.threads)
        cpu_before = group_cpu_seconds(server.pid)
        loop_before = main_thread_cpu_seconds(server.pid)
        measured = run_wrk(wrk, script, url, bodies_path, args.duration, args.connections,
                           args.threads, timing=timing)
        if measured.requests:  # the server's CPU per answered request, whatever else ran
            facts["cpu_ms_per_request"] = round(
                (group_cpu_seconds(server.pid) - cpu_before) * 1e3 / measured.requests, 4)
            # Of which the main thread's (for our server, the event loop's): the rest is the
            # log writer's, the shadow scorer's and worker threads'.
            facts["main_thread_cpu_ms_per_request"] = round(
                (main_thread_cpu_seconds(server.pid) - loop_before) * 1e3 / measured.requests,
                4)
        if variant.kind == "ours":
            time.sleep(0.5)  # let answers to wrk's last in-flight requests finish
            metrics = http("GET", server.base_url + "/metrics")[2].decode()
            facts["service_predictions"] = int(metric_value(metrics, "skewless_predictions_total"))
            facts["readyz_before_stop"] = json.loads(http("GET", server.base_url + "/readyz")[2])
    finally:
        server.stop()
    facts["stop_seconds"] = round(server.stop_seconds, 1)
    facts["exit_code"] = server.exit_code
    if server.exit_code not in (0, None):
        problems.append(f"exited with {server.exit_code} on SIGTERM")
    if server.leftovers:
        problems.append(f"processes left in its group after it exited: {server.leftovers}")
    log_lines = server.log_problems()
    if log_lines:
        problems.append(f"{len(log_lines)} error lines in its log, e.g. {log_lines[0][:200]}")
    for label, result in (("warm-up", warm), ("measured", measured)):
        if result.non_2xx or result.socket_errors:
            problems.append(f"{label}: {result.non_2xx} non-2xx, socket errors {result.errors}")
    if variant.kind == "ours":
        facts["log_check"] = log_check(variant, fx, run_dir, verified, warm, measured, facts)
        if not facts["log_check"]["ok"]:
            problems.append("feature log check failed: " + facts["log_check"]["line"])
    return RunResult(variant.key, round_no, measured, warm, facts, problems)


def log_check(variant: Variant, fx: Fixture, run_dir: Path, verified: int, warm: WrkResult,
              measured: WrkResult, facts: dict[str, Any]) -> dict[str, Any]:
    """Served rows on disk against the service's counter and the 2xx answers clients saw."""
    logged, files = parquet_rows(run_dir / "feature_log")
    fallback, _ = parquet_rows(fx.var / "feature_logs_unwritten")
    predictions = facts["service_predictions"]
    client_2xx = verified + warm.ok + measured.ok
    in_flight = warm.in_flight + measured.in_flight
    book = facts["readyz_before_stop"].get("feature_log", {})
    check: dict[str, Any] = {
        "logging": variant.logging, "parquet_rows": logged, "parquet_files": files,
        "fallback_rows": fallback, "service_predictions": predictions, "client_2xx": client_2xx,
        "wrk_in_flight_at_stop": in_flight, "readyz_rows_written": book.get("rows_written"),
        "readyz_buffered_rows": book.get("buffered_rows"),
    }
    if variant.logging:
        ok = logged == predictions and client_2xx <= logged <= client_2xx + in_flight and not fallback
        check["line"] = (
            f"{logged:,} rows in {files} parquet files {'==' if logged == predictions else '!='} "
            f"{predictions:,} predictions counted by the service; clients saw {client_2xx:,} 2xx "
            f"({verified} one by one + {warm.ok:,} warm-up + {measured.ok:,} measured) + "
            f"{in_flight} requests in flight when wrk stopped = {client_2xx + in_flight:,}"
            + (" (exact)" if logged == client_2xx + in_flight else
               f" ({client_2xx + in_flight - logged} in-flight requests never reached the service)")
        )
    else:
        ok = logged == 0 and not book.get("rows_written") and not book.get("buffered_rows")
        check["line"] = (
            f"logging off: {logged} rows on disk, /readyz rows_written="
            f"{book.get('rows_written')} buffered_rows={book.get('buffered_rows')} after "
            f"{predictions:,} predictions"
        )
    if variant.rollout is not None:
        check["challenger"] = challenger_outcomes(run_dir / "feature_log")
        check["line"] += f"; challenger {check['challenger']}"
        # Every row carries its challenger's outcome; the challenger (a copy of production)
        # never fails. Under a saturating load a few shadow scores may miss their budget
        # (late, or skipped when its queue is full): counted, as in production, not failed.
        ok = ok and set(check["challenger"]["outcomes"]) <= {"scored", "late", "overloaded"}
    check["ok"] = ok
    return check


def challenger_outcomes(directory: Path) -> dict[str, Any]:
    """How the logged rows' challenger scores fared, and who answered them."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    files = [str(p) for p in directory.rglob("*.parquet") if not p.name.startswith(".")]
    table = pads.dataset(files, format="parquet").to_table(
        columns=["model_version", "challenger_outcome"])

    def counts(column: str) -> dict[str, int]:
        return {str(v["values"]): int(v["counts"])
                for v in pc.value_counts(table[column]).to_pylist()}

    return {"outcomes": counts("challenger_outcome"), "answered_by": counts("model_version")}


def idle_server_timing(server: Server, bodies: Bodies, n: int = 300) -> dict[str, dict[str, float]]:
    """Server-Timing of sequential requests (one at a time: no queueing)."""
    stages: dict[str, list[float]] = {}
    client: list[float] = []
    for row in bodies.rows[VERIFY_ROWS:VERIFY_ROWS + n]:
        started = time.perf_counter()
        status, headers, raw = http("POST", server.base_url + "/predict", row)
        if status != 200:
            raise RuntimeError(f"/predict answered {status}: {raw[:500]!r}")
        client.append((time.perf_counter() - started) * 1e3)
        header = {k.lower(): v for k, v in headers.items()}.get("server-timing", "")
        total = 0.0
        for part in header.split(","):
            name, _, dur = part.strip().partition(";dur=")
            if dur:
                stages.setdefault(name, []).append(float(dur))
                total += float(dur)
        stages.setdefault("total", []).append(total)
    stages["client"] = client
    return {name: _percentiles(values) for name, values in stages.items()}


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)]

    return {"n": len(ordered), "mean": round(statistics.fmean(ordered), 4), "p50": round(pct(50), 4),
            "p90": round(pct(90), 4), "p99": round(pct(99), 4), "max": round(ordered[-1], 4)}


STARTED: list[Server] = []


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def aggregate(runs: list[RunResult], variants: tuple[Variant, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for variant in variants:
        mine = [r for r in runs if r.variant == variant.key]
        if not mine:
            continue
        out[variant.key] = {
            "label": variant.label,
            "rps_median": round(statistics.median(r.measured.rps for r in mine), 1),
            "rps_rounds": [round(r.measured.rps, 1) for r in mine],
            "p50_ms": round(statistics.median(r.measured.latency_us["p50"] for r in mine) / 1e3, 3),
            "p99_ms": round(statistics.median(r.measured.latency_us["p99"] for r in mine) / 1e3, 3),
            "non_2xx": sum(r.measured.non_2xx for r in mine),
            "socket_errors": sum(r.measured.socket_errors for r in mine),
            "flagged": any(r.problems for r in mine),
            "cpu_ms_per_request": round(statistics.median(
                r.facts.get("cpu_ms_per_request", math.nan) for r in mine), 4),
            "main_thread_cpu_ms_per_request": round(statistics.median(
                r.facts.get("main_thread_cpu_ms_per_request", math.nan) for r in mine), 4),
        }
    base = out.get(BASELINE, {}).get("rps_median")
    for row in out.values():
        row["ratio_to_feast"] = round(row["rps_median"] / base, 2) if base else None
    return out


def cpu_ratio(row: dict[str, Any], base: dict[str, Any]) -> float:
    return float(row["cpu_ms_per_request"] / base["cpu_ms_per_request"])


def print_table(table: dict[str, dict[str, Any]]) -> None:
    header = (f"{'server':<30} {'req/s':>8} {'(rounds)':<17} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'CPU ms/req':>10} {'(main)':>7} {'non-2xx':>7} {'errors':>6}  {'vs feast serve':<14}")
    print(header)
    print("-" * len(header))
    for row in table.values():
        rounds = "/".join(f"{v:.0f}" for v in row["rps_rounds"])
        ratio = f"{row['ratio_to_feast']:.2f}x" if row["ratio_to_feast"] is not None else "-"
        flag = "  ! flagged" if row["flagged"] else ""
        print(f"{row['label']:<30} {row['rps_median']:>8,.0f} {rounds:<17} {row['p50_ms']:>7.2f} "
              f"{row['p99_ms']:>7.2f} {row['cpu_ms_per_request']:>10.3f} "
              f"{row['main_thread_cpu_ms_per_request']:>7.3f} {row['non_2xx']:>7} "
              f"{row['socket_errors']:>6}  {ratio:<14}{flag}")


def baseline_variant(ref: str, path: Path) -> Variant:
    """`skewless serve` as of git ``ref``: a detached worktree whose packages shadow today's."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
                   check=True, capture_output=True)
    short = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], check=True,
                           capture_output=True, text=True).stdout.strip()
    return Variant("ours_baseline", f"skewless @{short} (log on)", "ours", checkout=path)


def print_before_after(table: dict[str, dict[str, Any]]) -> None:
    before, after = table.get("ours_baseline"), table.get("ours_log_on")
    if not (before and after):
        return
    overlap = (max(min(before["rps_rounds"]), min(after["rps_rounds"]))
               <= min(max(before["rps_rounds"]), max(after["rps_rounds"])))
    change = 100 * (after["rps_median"] / before["rps_median"] - 1)
    print(f"\nbefore/after: {before['label']} {before['rps_median']:,.0f} → today "
          f"{after['rps_median']:,.0f} req/s ({change:+.1f}%), p99 {before['p99_ms']:.2f} → "
          f"{after['p99_ms']:.2f} ms"
          + ("; the rounds' req/s ranges overlap: within run-to-run noise" if overlap else ""))


def print_timing(run: RunResult) -> None:
    idle = run.facts.get("idle_server_timing_ms", {})
    load = run.measured.server_timing_ms
    print(f"Server-Timing of skewless /predict (log on), ms: idle = "
          f"{idle.get('client', {}).get('n', 0)} sequential requests; load = "
          f"{load.get('total', {}).get('n', 0):,} answers under wrk's load "
          f"(one more run, {run.measured.seconds:.0f} s); 'client' is the latency the caller saw")
    print(f"{'stage':<10} {'idle p50':>9} {'idle p99':>9} {'load p50':>9} {'load p90':>9} "
          f"{'load p99':>9} {'load max':>9}")
    for name in ("features", "transform", "model", "log", "total"):
        i, ld = idle.get(name, {}), load.get(name, {})
        print(f"{name:<10} {i.get('p50', float('nan')):>9.3f} {i.get('p99', float('nan')):>9.3f} "
              f"{ld.get('p50', float('nan')):>9.3f} {ld.get('p90', float('nan')):>9.3f} "
              f"{ld.get('p99', float('nan')):>9.3f} {ld.get('max', float('nan')):>9.3f}")
    lat = run.measured.latency_us
    client = idle.get("client", {})
    print(f"{'client':<10} {client.get('p50', float('nan')):>9.3f} {client.get('p99', float('nan')):>9.3f} "
          f"{lat['p50'] / 1e3:>9.3f} {lat['p90'] / 1e3:>9.3f} {lat['p99'] / 1e3:>9.3f} "
          f"{lat['max'] / 1e3:>9.3f}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="times the servers alternate")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds before each run")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--bodies", type=int, default=2000, help="distinct request rows")
    parser.add_argument("--timing-duration", type=float, default=5.0,
                        help="seconds of the Server-Timing run (0: skip it)")
    parser.add_argument("--seed", type=int, default=11, help="seed of the request sample")
    parser.add_argument("--variants",
                        default="ours_log_on,ours_shadow,ours_canary,ours_ages_off,ours_pandas,"
                                "ours_spool,feast,feast_pandas,ours_log_off,feast_batch",
                        help="which servers to run, comma-separated, in this order")
    parser.add_argument("--baseline", metavar="REF",
                        help="also run `skewless serve` as of git REF (log on), right after "
                             "today's, for a before/after in the same run")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp directory")
    return parser.parse_args()


def machine_facts(wrk: str) -> dict[str, Any]:
    import feast
    import psutil

    return {
        "cpu_count": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
        "cpu_model": _cpu_model(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(), "python": platform.python_version(),
        "feast": feast.__version__, "wrk": wrk_version(wrk),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _raise_exit(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    args = parse_args()
    os.environ["FEAST_USAGE"] = "False"
    signal.signal(signal.SIGTERM, _raise_exit)
    for category in (DeprecationWarning, FutureWarning, RuntimeWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    wrk = ensure_wrk()

    from skewless.embedded_redis import RedisServer, find_redis_server
    from skewless.settings import export_for_feast

    tmp = Path(tempfile.mkdtemp(prefix="skewless-bench-serve-"))
    redis: RedisServer | None = None
    cluster: Any = None  # a LocalCluster when a cluster variant runs
    runs: list[RunResult] = []
    problems: list[str] = []
    try:
        machine = machine_facts(wrk)
        print(f"machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
              f"{machine['memory_gb']} GiB, Python {machine['python']}, feast {machine['feast']}, "
              f"{machine['wrk']}")
        print(f"temp: {tmp}")
        redis = RedisServer(binary=find_redis_server(), data_dir=tmp / "redis", persist=False).start()
        export_for_feast(redis.connection_string)  # the feast children read ${SKEWLESS_REDIS}
        print(f"redis: {redis.binary} on {redis.connection_string}")
        fx = build_fixture(tmp, redis.connection_string)
        if any(v.cluster for v in VARIANTS if v.key in args.variants.split(",")):
            from tests.support.redis_cluster import LocalCluster

            cluster = LocalCluster(find_redis_server(), tmp / "cluster").start()
            materialize_cluster(fx, cluster.connection_string)
            print(f"redis cluster: 3 masters on {cluster.connection_string}, materialized "
                  f"({fx.facts['setup_seconds']['cluster apply + materialize']} s)")
        bodies = write_bodies(fx, args.bodies, args.seed)
        script = tmp / "bench.lua"
        script.write_text(LUA)
        n_batch, n_all = len(fx.batch_refs), len(fx.spec.features)
        features = {
            "feature_service": FEATURE_SERVICE, "features": n_all, "batch_features": n_batch,
            "on_demand_features": n_all - n_batch,
            "batch_views": sorted({r.split(":")[0] for r in fx.batch_refs}),
            "entity_keys": [k.name for k in fx.spec.entity_keys],
            "request_fields": [r.name for r in fx.spec.request_fields],
        }
        print(f"features: {FEATURE_SERVICE} = {n_all} ({n_batch} batch in "
              f"{len(features['batch_views'])} views + {n_all - n_batch} on-demand); batch-only "
              f"variant = {n_batch} refs; keys {features['entity_keys']}, request fields "
              f"{features['request_fields']}; model {fx.model_version}")
        print(f"requests: {bodies.facts['rows']:,} rows from the last {RECENT_DAYS} days of "
              f"{fx.facts['transactions']:,} transactions ({bodies.facts['distinct_cards']:,} cards, "
              f"{bodies.facts['distinct_merchants']:,} merchants), rotated by wrk")
        print(f"load: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency, "
              f"{args.warmup:g} s uncounted warm-up, {args.rounds} rounds, one server at a time\n")

        variants, order = VARIANTS, args.variants.split(",")
        if args.baseline:
            baseline = baseline_variant(args.baseline, tmp / "baseline")
            variants += (baseline,)
            at = order.index("ours_log_on") + 1 if "ours_log_on" in order else 0
            order.insert(at, baseline.key)
            print(f"baseline: {baseline.label} from a checkout of {args.baseline}")
        reference: dict[str, list[dict[str, Any]]] = {}
        for round_no in range(1, args.rounds + 1):
            for variant in [v for key in order for v in variants if v.key == key]:
                result = one_run(variant, round_no, fx, bodies, args, wrk, script, reference)
                runs.append(result)
                m = result.measured
                print(f"round {round_no} {variant.label:<30} {m.rps:>8,.0f} req/s  "
                      f"p50 {m.latency_us['p50'] / 1e3:6.2f} ms  p99 {m.latency_us['p99'] / 1e3:6.2f} ms"
                      f"  non-2xx {m.non_2xx}  errors {m.socket_errors}", flush=True)
                if "log_check" in result.facts:
                    check = result.facts["log_check"]
                    print(f"  log check {'OK' if check['ok'] else 'FAILED'}: {check['line']}")
                for problem in result.problems:
                    print(f"  ! {problem}")
        agreement = {
            key: compare_vectors(reference["ours_log_on"], reference[key])
            for key in ("ours_pandas", "feast", "feast_pandas", "feast_batch", "ours_cluster",
                        "feast_cluster")
            if key in reference and "ours_log_on" in reference
        }
        timing_run = None
        if args.timing_duration > 0:
            timing_args = argparse.Namespace(**{**vars(args), "duration": args.timing_duration})
            timing_run = one_run(VARIANTS[0], 0, fx, bodies, timing_args, wrk, script, reference,
                                 timing=True)
        table = aggregate(runs, variants)
        print()
        print_table(table)
        if args.baseline:
            print_before_after(table)
        on, off = table.get("ours_log_on"), table.get("ours_log_off")
        logging_cost = None
        if on and off:
            logging_cost = round(100 * (1 - on["rps_median"] / off["rps_median"]), 1)
            overlap = (max(min(on["rps_rounds"]), min(off["rps_rounds"]))
                       <= min(max(on["rps_rounds"]), max(off["rps_rounds"])))
            print(f"\nlogging cost: {off['rps_median']:,.0f} → {on['rps_median']:,.0f} req/s = "
                  f"{logging_cost:.1f}% throughput lost with the served-feature log on "
                  f"(p50 {off['p50_ms']:.2f} → {on['p50_ms']:.2f} ms, "
                  f"p99 {off['p99_ms']:.2f} → {on['p99_ms']:.2f} ms)"
                  + ("; the rounds' req/s ranges overlap: within run-to-run noise" if overlap else ""))
        for key in ("ours_shadow", "ours_canary"):
            challenged = table.get(key)
            if on and challenged:
                print(f"{challenged['label']}: {on['rps_median']:,.0f} → "
                      f"{challenged['rps_median']:,.0f} req/s = "
                      f"{100 * (1 - challenged['rps_median'] / on['rps_median']):.1f}% "
                      f"throughput lost to the challenger (p99 {on['p99_ms']:.2f} → "
                      f"{challenged['p99_ms']:.2f} ms; server CPU per request "
                      f"{on['cpu_ms_per_request']:.3f} → {challenged['cpu_ms_per_request']:.3f}"
                      f" ms = {100 * (cpu_ratio(challenged, on) - 1):+.1f}%)")
        ours_cluster, feast_cluster = table.get("ours_cluster"), table.get("feast_cluster")
        if on and ours_cluster:
            print(f"Redis Cluster (3 masters, this machine): {on['rps_median']:,.0f} req/s on one "
                  f"Redis → {ours_cluster['rps_median']:,.0f} on the cluster "
                  f"({100 * (ours_cluster['rps_median'] / on['rps_median'] - 1):+.1f}%), p99 "
                  f"{on['p99_ms']:.2f} → {ours_cluster['p99_ms']:.2f} ms"
                  + (f"; feast serve on the same cluster {feast_cluster['rps_median']:,.0f} "
                     f"req/s (ours {ours_cluster['rps_median'] / feast_cluster['rps_median']:.1f}x)"
                     if feast_cluster else ""))
        ages_off = table.get("ours_ages_off")
        if on and ages_off:
            print(f"feature age histogram: {ages_off['rps_median']:,.0f} req/s without it → "
                  f"{on['rps_median']:,.0f} with it "
                  f"({100 * (on['rps_median'] / ages_off['rps_median'] - 1):+.1f}%); server CPU "
                  f"per request {ages_off['cpu_ms_per_request']:.3f} → "
                  f"{on['cpu_ms_per_request']:.3f} ms")
        pandas = table.get("ours_pandas")
        if on and pandas:
            print(f"pandas-mode view: {on['rps_median']:,.0f} → {pandas['rps_median']:,.0f} req/s "
                  f"({100 * (pandas['rps_median'] / on['rps_median'] - 1):+.1f}%), p50 "
                  f"{on['p50_ms']:.2f} → {pandas['p50_ms']:.2f} ms, p99 {on['p99_ms']:.2f} → "
                  f"{pandas['p99_ms']:.2f} ms, the same view written over DataFrames"
                  + (f"; feast serve on that repo: {table['feast_pandas']['rps_median']:,.0f} "
                     f"req/s ({pandas['rps_median'] / table['feast_pandas']['rps_median']:.1f}× "
                     "in our favour)" if "feast_pandas" in table else ""))
        spool = table.get("ours_spool")
        if on and spool:
            print(f"spool durability: {on['rps_median']:,.0f} → {spool['rps_median']:,.0f} req/s "
                  f"({100 * (spool['rps_median'] / on['rps_median'] - 1):+.1f}%), p99 "
                  f"{on['p99_ms']:.2f} → {spool['p99_ms']:.2f} ms, each answer after its row "
                  "was synced to the spool")
        for key, result in agreement.items():
            diff, sdiff = result["values_differing"], result["statuses_differing"]
            print(f"same values: skewless vs {key}: {result['values_compared']:,} values over "
                  f"{VERIFY_ROWS} rows, {sum(diff.values())} differ" + (f" {diff}" if diff else "")
                  + f"; statuses differ for {sum(sum(d.values()) for d in sdiff.values())}"
                  + (f" (skewless vs feast: {sdiff})" if sdiff else ""))
            if diff:
                problems.append(f"served values differ from {key}: {diff}")
        for r in runs:
            if "verify" in r.facts:
                share = r.facts["verify"]["present_share"]
                if share < 0.5:
                    problems.append(f"{r.variant} round {r.round}: only {share:.0%} of values "
                                    "PRESENT: the keys mostly miss")
        checks = [r.facts["log_check"] for r in runs if "log_check" in r.facts]
        print(f"log checks: {sum(c['ok'] for c in checks)}/{len(checks)} OK")
        if timing_run is not None:
            print()
            print_timing(timing_run)
            for problem in timing_run.problems:
                print(f"  ! {problem}")
        problems += [f"{r.variant} round {r.round}: {p}" for r in runs for p in r.problems]
        if timing_run is not None:
            problems += [f"timing run: {p}" for p in timing_run.problems]
        results = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine,
            "config": {k: v for k, v in vars(args).items() if k != "keep_temp"},
            "setup": fx.facts, "features": features, "requests": bodies.facts,
            "commands": {v.key: make_server(v, fx, tmp).cmd for v in variants},
            "table": table, "logging_cost_pct": logging_cost, "agreement": agreement,
            "runs": [r.summary() for r in runs],
            "server_timing": None if timing_run is None else timing_run.summary(),
            "problems": problems,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"\nresults → {RESULTS.relative_to(ROOT)}")
    finally:
        for server in STARTED:
            server.stop()
        if redis is not None:
            redis.stop()
        if cluster is not None:
            cluster.stop()
        if (tmp / "baseline").exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tmp / "baseline")], check=False, capture_output=True)
        import psutil

        left = [f"{p.pid} {' '.join(p.cmdline()[:3])}"
                for p in psutil.Process().children(recursive=True)]
        left += [f"{pid} (group of {s.name})" for s in STARTED if s.pid
                 for pid in group_members(s.pid)]
        print("processes left: " + ("; ".join(left) if left else "none"))
        if args.keep_temp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for problem in problems:
            print(f"  ! {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
