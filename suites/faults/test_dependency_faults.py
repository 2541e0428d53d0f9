"""A dependency of `skewless serve` dies under load and comes back (`make test-faults`).

Redis killed (SIGKILL) while four clients score: every refused answer is a fast 503 naming
the online store, scoring resumes on its own once Redis is back, /healthz never falters, and
every 2xx is logged exactly once. The registry's PostgreSQL stopped (as an operator's restart
does) while clients score and an operator promotes and rolls back over /admin: scoring never
notices, admin calls answer 503 naming the metadata database within a bound, succeed again
once it is back, and the registry ends with one production version and every answered
promotion in its history and audit.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from skewless.db import CONNECT_TIMEOUT_SECONDS, DatabaseUnavailable, make_engine, upgrade
from skewless.embedded_redis import RedisServer, find_redis_server
from skewless.registry import Registry, bootstrap_production
from suites.faults.load import Load, Outcome
from tests.support.postgres import PostgresCluster
from tests.support.service_harness import ROW, ServeProcess, read_logs, serve_env

pytestmark = pytest.mark.redis
logger = logging.getLogger(__name__)

ROWS = [ROW | {"card_id": 100 + i, "merchant_id": 5000 + i, "amount": 5.0 + 7.5 * i}
        for i in range(64)]
DOWN_SECONDS = 3.0  # how long each dependency stays down
# Redis down: each answer within the predictor's Redis timeout (0.5 s) plus scheduling slack.
REDIS_ANSWER_BOUND = 1.0
RECOVERY_BOUND = 3.0  # from the dependency accepting connections again to the first success
# PostgreSQL down: an admin call makes at most two connection attempts (its own query, then
# its audit event), each given up after the connect timeout; plus a promotion's model swap.
ADMIN_ANSWER_BOUND = 2 * CONNECT_TIMEOUT_SECONDS + 2.0
TOKEN = "faults-admin-token-0123456789"
NAME = "fraud_model_v1"
ACTOR = "fault drill"


@dataclass
class Poll:
    """One thread GETting ``url`` every ``every`` seconds; (sent, elapsed, status) kept."""

    url: str
    every: float = 0.05
    results: list[tuple[float, float, int | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Poll:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._stop.wait(self.every):
                sent = time.monotonic()
                try:
                    status: int | None = http.get(self.url).status_code
                except httpx.HTTPError:
                    status = None
                self.results.append((sent, time.monotonic() - sent, status))


def ended(o: Outcome) -> float:
    return o.started + o.elapsed


def test_redis_killed_and_restarted_under_load(demo, tmp_path):
    """Redis SIGKILLed under four clients, restarted on its port after 3 s (empty: features
    NOT_FOUND, predictions 200, as after a Redis that lost its data)."""
    redis = RedisServer(binary=find_redis_server(), data_dir=tmp_path / "redis",
                        persist=False).start()
    settings = demo.settings.model_copy(update={"redis": redis.connection_string})
    log_dir = tmp_path / "log"
    server = ServeProcess(serve_env(settings, feature_log_dir=log_dir),
                          tmp_path / "serve.log").start()
    began = time.monotonic()
    try:
        with Poll(server.url + "/healthz") as health, \
                Load(server.url, ROWS, workers=4, timeout=5) as load:
            assert load.wait_for(lambda o: sum(x.ok for x in o) >= 200, 30)
            assert redis.process is not None
            killing = time.monotonic()  # answers that ended before this had a live Redis
            redis.process.kill()  # no shutdown, no save: a crash
            redis.process.wait()
            killed = time.monotonic()
            time.sleep(DOWN_SECONDS)
            ready = httpx.get(server.url + "/readyz", timeout=5)
            restarting = time.monotonic()
            redis.start()  # the same port; returns once it answers
            restarted = time.monotonic()
            assert load.wait_for(
                lambda o: sum(x.ok and x.started > restarted for x in o) >= 200, 30)
            outcomes = load.stop()  # every request answered before the SIGTERM
        server.terminate()
        assert server.wait() == 0
    finally:
        server.stop()
        redis.stop()
    wall = time.monotonic() - began

    assert [o for o in outcomes if o.status is None] == [], "transport errors"
    assert {o.status for o in outcomes} <= {200, 503}
    refused = [o for o in outcomes if o.status == 503]
    assert refused, "Redis was down and nothing was refused"
    assert all(o.detail and o.detail.startswith("online store unavailable") for o in refused)
    slowest = max(o.elapsed for o in outcomes)
    assert slowest < REDIS_ANSWER_BOUND
    # Before the kill everything scored; after it nothing did until Redis was back.
    assert all(o.ok for o in outcomes if ended(o) < killing)
    down = [o for o in outcomes if killed < o.started and ended(o) < restarting]
    assert len(down) >= 20 and all(o.status == 503 for o in down)
    recovered = min(ended(o) for o in outcomes if o.ok and o.started > restarting)
    assert recovered - restarted < RECOVERY_BOUND
    assert all(o.ok for o in outcomes if o.started > recovered), "503s after the recovery"
    assert ready.status_code == 503 and "online store unavailable" in ready.json()["detail"]
    assert sum(killed < sent < restarting for sent, _, _ in health.results) >= 10
    assert all(status == 200 and elapsed < 1.0 for _, elapsed, status in health.results)

    # Exactly one logged row per 2xx answer, none for a 503.
    logged = read_logs(log_dir)
    answered = sum(o.ok for o in outcomes)
    assert len(logged) == answered
    assert logged["__request_id"].is_unique
    assert "Traceback" not in server.log_path.read_text()
    first_refused = min(o.started for o in refused)
    last_refused = max(ended(o) for o in refused)
    logger.info("redis: %d answers (%d 200, %d 503) in %.1f s; 503s from %.2f s after the kill "
                "to %.2f s after the restart; first 200 %.2f s after the restart (Redis took "
                "%.2f s to start); slowest "
                "answer %.0f ms; %d health checks", len(outcomes), answered, len(refused), wall,
                first_refused - killed, last_refused - restarted, recovered - restarted,
                restarted - restarting,
                slowest * 1e3, len(health.results))


@dataclass
class AdminCall:
    kind: str  # list, promote, rollback or audit
    started: float
    elapsed: float
    status: int | None
    detail: str | None
    reason: str | None = None
    answer: Any = None

    @property
    def writes(self) -> bool:
        return self.kind in ("promote", "rollback")


@dataclass
class AdminTraffic:
    """An operator flipping production between two versions as fast as the API answers.

    Each round reads the versions, then promotes the candidate (forced: the gate is not what
    is tested) when the original is production, or rolls back when the candidate is; every
    third round reads the audit. When the read fails, the write is still tried, on the last
    production read (a refused write changes nothing). Each write carries a reason of its
    own, to find it later.
    """

    url: str
    original: str
    candidate: str
    pause: float = 0.1
    calls: list[AdminCall] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> AdminTraffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> list[AdminCall]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(ADMIN_ANSWER_BOUND + 10)
            assert not self._thread.is_alive()
        return self.snapshot()

    def snapshot(self) -> list[AdminCall]:
        with self._lock:
            return list(self.calls)

    def wait_for(self, predicate: Callable[[list[AdminCall]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate(self.snapshot()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _call(self, http: httpx.Client, kind: str, method: str, path: str,
              reason: str | None = None, **kwargs: Any) -> AdminCall:
        started = time.monotonic()
        try:
            response = http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            call = AdminCall(kind, started, time.monotonic() - started, None, repr(exc), reason)
        else:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text[:500]}
            ok = response.status_code == 200
            detail = None if ok else body.get("detail")
            call = AdminCall(kind, started, time.monotonic() - started, response.status_code,
                             detail if isinstance(detail, str) or detail is None
                             else json.dumps(detail), reason, body if ok else None)
        with self._lock:
            self.calls.append(call)
        return call

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Skewless-Actor": ACTOR}
        # A client timeout well past the bound: a hang shows as a slow call, not a lost one.
        with httpx.Client(base_url=self.url, headers=headers,
                          timeout=ADMIN_ANSWER_BOUND + 5) as http:
            round_, production = 0, self.original
            while not self._stop.is_set():
                round_ += 1
                listed = self._call(http, "list", "GET", "/admin/models", params={"name": NAME})
                if listed.status == 200:
                    production = {r["stage"]: r["version"] for r in listed.answer}["production"]
                reason = f"fault drill {round_}"
                if production == self.candidate:
                    self._call(http, "rollback", "POST", f"/admin/models/{NAME}/rollback",
                               reason, json={"reason": reason})
                else:
                    self._call(http, "promote", "POST",
                               f"/admin/models/{NAME}/versions/{self.candidate}/promote",
                               reason, json={"reason": reason, "force": True})
                if round_ % 3 == 0:
                    self._call(http, "audit", "GET", "/admin/audit", params={"limit": 5})
                self._stop.wait(self.pause)


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found[1])


def register_copy(registry: Registry, source, target, version: str) -> str:
    """The same model registered again under another version name (a valid artefact)."""
    shutil.copytree(source, target)
    contract = json.loads((target / "contract.json").read_text())
    contract["model"]["version"] = version
    (target / "contract.json").write_text(json.dumps(contract))
    return registry.register(target).version


def test_registry_postgres_restarted_under_admin_traffic(demo, tmp_path):
    cluster = PostgresCluster().start()
    server: ServeProcess | None = None
    began = time.monotonic()
    try:
        url = cluster.create_database("registry")
        settings = demo.settings.model_copy(update={
            "var_dir": tmp_path / "var", "database_url": url, "admin_token": SecretStr(TOKEN),
            "feature_log_dir": tmp_path / "log"})
        upgrade(url)
        original = bootstrap_production(settings, demo.model.directory).version
        with Registry.from_settings(settings) as registry:
            candidate = register_copy(registry, demo.model.directory,
                                      tmp_path / "models" / "drill", "fault-drill")
        server = ServeProcess(
            serve_env(settings, database_url=url, admin_token=TOKEN,
                      feature_log_dir=tmp_path / "log", registry_poll_seconds=0.5),
            tmp_path / "serve.log").start()

        def writes_ok(after: float, count: int) -> Callable[[list[AdminCall]], bool]:
            return lambda calls: sum(c.writes and c.status == 200 and c.started > after
                                     for c in calls) >= count

        with Load(server.url, ROWS, workers=3, timeout=5) as load, \
                AdminTraffic(server.url, original, candidate) as admin:
            assert admin.wait_for(writes_ok(0, 4), 30), admin.snapshot()[-3:]
            stopping = time.monotonic()
            cluster.stop_server()
            stopped = time.monotonic()
            time.sleep(DOWN_SECONDS)
            restarting = time.monotonic()
            cluster.start_server()  # returns once it accepts connections
            restarted = time.monotonic()
            assert admin.wait_for(writes_ok(restarted, 4), 30), admin.snapshot()[-3:]
            calls = admin.stop()
            outcomes = load.stop()

        # The follower survived the outage: a change made outside the service (no admin
        # call to tell it) is noticed by polling.
        with Registry.from_settings(settings) as registry:
            before = registry.production_version(NAME)
            if before == candidate:
                after = registry.rollback(NAME, "operator", "after the drill").version
            else:
                after = registry.force_promote(NAME, candidate, "operator", "after the drill",
                                               {}).version
        followed = time.monotonic()
        with httpx.Client(base_url=server.url, timeout=5) as http:
            while http.get("/readyz").json().get("model_version") != after:
                assert time.monotonic() - followed < 10, "the registry follower stopped"
                time.sleep(0.05)
            noticed = time.monotonic() - followed
            metrics = http.get("/metrics").text

        # What the database holds at the end.
        engine = make_engine(url)
        try:
            with engine.connect() as db:
                productions = db.execute(sa.text(
                    "SELECT version FROM model_versions WHERE name = :name "
                    "AND stage = 'production'"), {"name": NAME}).scalars().all()
                index = db.execute(sa.text(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = "
                    "'uq_model_versions_one_production'")).scalar_one()
                transitions = db.execute(sa.text(
                    "SELECT v.version, t.to_stage, t.reason FROM stage_transitions t "
                    "JOIN model_versions v ON v.id = t.model_version_id")).all()
                audit = db.execute(sa.text(  # the middleware's events, one per call
                    "SELECT action, outcome, detail FROM audit_events WHERE actor = :actor "
                    "AND (action LIKE 'GET %' OR action LIKE 'POST %')"),
                    {"actor": f"{ACTOR} (admin token)"}).all()
                forced = db.execute(sa.text(
                    "SELECT detail FROM audit_events WHERE outcome = 'forced'")).scalars().all()
        finally:
            engine.dispose()
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
    wall = time.monotonic() - began

    # Scoring never needed the database.
    assert outcomes and all(o.status == 200 for o in outcomes), \
        {(o.status, o.detail) for o in outcomes if o.status != 200}
    assert {o.model_version for o in outcomes} == {original, candidate}
    scored_while_down = sum(stopped < o.started and ended(o) < restarting for o in outcomes)
    assert scored_while_down >= 50

    # Admin calls: 200, or 503 naming the metadata database, never slower than the bound.
    assert {c.status for c in calls} <= {200, 503}, {(c.status, c.detail) for c in calls}
    refused = [c for c in calls if c.status == 503]
    assert all(c.detail and c.detail.startswith("metadata database unavailable: ")
               for c in refused), {c.detail for c in refused}
    slowest = max(c.elapsed for c in calls)
    assert slowest < ADMIN_ANSWER_BOUND
    down = [c for c in calls if stopped < c.started and c.started + c.elapsed < restarting]
    assert all(c.status == 503 for c in down)
    # Reads and writes alike (the writes all of one kind: production is known not to change).
    assert {"list", "audit"} <= {c.kind for c in down} and sum(c.writes for c in down) >= 3
    assert all(c.status == 200 for c in calls if c.started + c.elapsed < stopping)
    recovered = min(c.started + c.elapsed for c in calls
                    if c.status == 200 and c.started > restarted)
    assert recovered - restarted < RECOVERY_BOUND
    assert all(c.status == 200 for c in calls if c.started > recovered)

    # One production version, as the database's partial unique index guarantees.
    assert productions == [after]
    assert "UNIQUE" in index and "WHERE" in index and "production" in index
    # Every write that answered 200 is in the history and the audit; none that answered
    # 503 left a trace.
    ok_writes = {c.reason: c.kind for c in calls if c.writes and c.status == 200}
    assert len(ok_writes) >= 8
    drill = re.compile(r"(rollback: )?(fault drill \d+)$")
    recorded = {m[2]: "rollback" if m[1] else "promote" for _, to, reason in transitions
                if to == "production" and (m := drill.match(reason))}
    assert recorded == ok_writes
    audited = {(a.detail or {}).get("reason"): a for a in audit if a.outcome == "200"}
    for reason, kind in ok_writes.items():
        action, _, _ = audited[reason]
        assert action.endswith("/promote" if kind == "promote" else "/rollback")
    forced_reasons = {d.get("reason") for d in forced}
    assert {r for r, k in ok_writes.items() if k == "promote"} <= forced_reasons
    assert not {c.reason for c in calls if c.writes and c.status != 200} & forced_reasons
    # Each admin call was audited, or (the database down) logged and counted instead.
    unaudited = metric(metrics, "skewless_admin_unaudited_total")
    assert len(audit) + unaudited == len(calls)
    assert unaudited >= 1
    assert metric(metrics, "skewless_registry_errors_total") >= 1

    log = server.log_path.read_text()
    assert "Traceback" not in log
    assert "model registry unavailable" in log and "model registry reachable again" in log
    assert "could not audit" in log
    logger.info(
        "postgres: stop took %.2f s, down %.1f s, start took %.2f s; %d admin calls (%d 503, "
        "slowest %.0f ms, bound %.0f s), first admin 200 %.2f s after the restart; %d "
        "writes answered 200; %d predictions (%d while down), all 200; follower noticed an "
        "outside change in %.2f s; wall %.1f s", stopped - stopping, restarting - stopped,
        restarted - restarting, len(calls), len(refused), slowest * 1e3, ADMIN_ANSWER_BOUND,
        recovered - restarted, len(ok_writes), len(outcomes), scored_while_down, noticed, wall)


def test_a_database_that_never_answers_fails_within_the_connect_timeout():
    """A server that accepts the connection and says nothing (a hung host, a black-holed
    route behind a proxy) costs a registry call the connect timeout, not minutes."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the handshake; nobody ever answers
        port = silent.getsockname()[1]
        registry = Registry(f"postgresql+psycopg://postgres@127.0.0.1:{port}/registry")
        started = time.monotonic()
        try:
            with pytest.raises(DatabaseUnavailable, match="^metadata database unavailable: "):
                registry.versions()
        finally:
            registry.close()
        took = time.monotonic() - started
    assert CONNECT_TIMEOUT_SECONDS - 0.5 < took < CONNECT_TIMEOUT_SECONDS + 2
