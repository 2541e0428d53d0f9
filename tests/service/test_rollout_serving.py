"""A challenger served beside production by `skewless serve`, under concurrent clients.

One process for the module, with its own metadata database: production is the demo model;
the challengers are a second model (another seed) and a copy of the demo model whose first
tree answers NaN on some paths (it passes the artefact check, whose smoke row takes the one
finite path). The admin API moves them into shadow and canary; the process follows.
In-process, a challenger that raises or hangs fails and delays no request.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr

from service.app import create_app, serve_in_thread
from skewless.artifact import sha256_file
from skewless.registry import Registry, bootstrap_production
from skewless.reports.rollout import RolloutReport
from skewless.rollout import on_canary
from skewless.settings import Settings
from tests.support.service_harness import ROW, ServeProcess, read_logs, serve_env
from training.evaluation.gate import promote
from training.rollout import apply as apply_rollout_policy
from training.train import train_model

pytestmark = pytest.mark.redis
TOKEN = "test-admin-token-rollout-0123"
NAME = "fraud_model_v1"
NAN_VERSION = "nan-leaves"


def nan_leaves(source: Path, target: Path) -> Path:
    """A copy of the model at ``source`` whose trees answer NaN on every leaf but the one an
    all-missing row reaches: a row with any value its trees split on scores NaN."""
    shutil.copytree(source, target)
    text = (source / "model.txt").read_text()
    booster = lgb.Booster(model_str=text)
    keep = booster.predict(np.full((1, booster.num_feature()), np.nan), pred_leaf=True)[0]

    def poison(tree: re.Match[str]) -> str:
        leaf = int(keep[int(tree.group(1))])
        values = [v if i == leaf else "nan" for i, v in enumerate(tree.group(3).split())]
        return f"Tree={tree.group(1)}\n{tree.group(2)}{' '.join(values)}"

    text = re.sub(r"(?m)^Tree=(\d+)\n((?:(?!Tree=).*\n)*?leaf_value=)([^\n]*)", poison, text)
    text = re.sub(r"tree_sizes=[^\n]*\n", "", text)  # the sizes changed: parse sequentially
    (target / "model.txt").write_text(text)
    contract = json.loads((target / "contract.json").read_text())
    contract["model"].update(version=NAN_VERSION, sha256=sha256_file(target / "model.txt"))
    (target / "contract.json").write_text(json.dumps(contract))
    return target


@dataclass
class Rollout:
    settings: Settings
    server: ServeProcess
    log_dir: Path
    v1: str
    v2: str
    v2_directory: Path

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=120,
                            headers={"Authorization": f"Bearer {TOKEN}"})


def register_challengers(settings: Settings, demo: Any) -> tuple[str, str, Path]:
    v1 = bootstrap_production(settings, demo.model.directory).version
    registry = Registry.from_settings(settings)
    try:
        second = train_model(demo.training_set, settings.model_dir, settings.holdout_days,
                             settings.validation_days, seed=11)
        v2 = registry.register(second.directory).version
        registry.register(nan_leaves(demo.model.directory,
                                     settings.model_dir / NAME / NAN_VERSION))
    finally:
        registry.close()
    return v1, v2, second.directory


@pytest.fixture(scope="module")
def rollout(demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout")
    settings = demo.settings.model_copy(update={
        "var_dir": root / "var", "feature_log_dir": root / "log",
        "admin_token": SecretStr(TOKEN)})
    v1, v2, v2_directory = register_challengers(settings, demo)
    env = serve_env(settings, feature_log_dir=root / "log", admin_token=TOKEN,
                    registry_poll_seconds=0.3, feature_log_flush_seconds=0.2,
                    # The budget has its own test below; here a loaded machine must not make
                    # a challenger score late.
                    shadow_budget_ms=1000.0)
    server = ServeProcess(env, root / "serve.log").start()
    yield Rollout(settings, server, root / "log", v1, v2, v2_directory)
    server.stop()
    assert "Traceback" not in (root / "serve.log").read_text()


def challenge(rollout: Rollout, version: str | None, stage: str = "shadow",
              percent: float | None = None) -> None:
    """Put ``version`` in ``stage`` (None: end the rollout); wait until the process serves it."""
    with rollout.admin() as admin:
        # From whatever stage the last test left: 409 when there is no rollout to end.
        admin.post(f"/admin/models/{NAME}/rollout/end", json={"reason": "test"})
        if version is not None:
            body: dict[str, Any] = {"reason": "test"}
            if percent is not None:
                body["percent"] = percent
            answer = admin.post(f"/admin/models/{NAME}/versions/{version}/{stage}", json=body)
            assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            serving = admin.get("/readyz").json().get("challenger") or {}
            if (version is None and serving.get("version") is None) or (
                    serving.get("version") == version and serving.get("stage") == stage
                    and serving.get("traffic_percent") == percent):
                return
            time.sleep(0.1)
    raise AssertionError(f"the process did not serve {version} as {stage}")


def rows_for(cards: list[int]) -> list[dict[str, Any]]:
    return [{**ROW, "card_id": card, "merchant_id": card % 50,
             "amount": round(5 + (card * 37) % 400 + 0.25, 2), "local_hour": card % 24}
            for card in cards]


def score_all(url: str, rows: list[dict[str, Any]], clients: int = 4,
              **params: Any) -> list[dict[str, Any]]:
    """Each row's /predict answer, sent by ``clients`` concurrent clients."""
    def send(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with httpx.Client(base_url=url, timeout=30) as http:
            out = []
            for row in chunk:
                answer = http.post("/predict", json=row, params=params)
                assert answer.status_code == 200, answer.text
                out.append(answer.json())
            return out

    chunks = [rows[i::clients] for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        answered = list(pool.map(send, chunks))
    by_position: list[dict[str, Any]] = [{}] * len(rows)
    for i, part in enumerate(answered):
        for j, answer in enumerate(part):
            by_position[i + j * clients] = answer
    return by_position


def logged(rollout: Rollout, answers: list[dict[str, Any]]) -> pd.DataFrame:
    """The logged rows of ``answers`` (waiting for the writer), indexed by request id."""
    wanted = {a["request_id"] for a in answers}
    deadline = time.monotonic() + 30
    while True:
        frame = read_logs(rollout.log_dir)
        if not frame.empty:
            frame = frame[frame["__request_id"].isin(wanted)]
            if len(frame) == len(wanted) or time.monotonic() > deadline:
                return frame.set_index("__request_id")
        elif time.monotonic() > deadline:
            raise AssertionError("nothing logged")
        time.sleep(0.2)


def without_ids(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items() if k != "request_id"} for a in answers]


def independent_scores(directory: Path, features: list[dict[str, Any]]) -> np.ndarray:
    """LightGBM's own pandas path over the served vectors: the contract's categories as
    pandas categories, no code of the predictor's."""
    contract = json.loads((directory / "contract.json").read_text())
    names = [f["name"] for f in contract["features"]]
    frame = pd.DataFrame([{n: f[n]["value"] for n in names} for f in features], columns=names)
    for name, categories in (contract.get("categories") or {}).items():
        frame[name] = pd.Categorical(frame[name], categories=categories)
    for name in names:
        if name not in (contract.get("categories") or {}):
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    booster = lgb.Booster(model_file=str(directory / "model.txt"))
    return np.asarray(booster.predict(frame))


def test_a_shadow_changes_no_answer_and_every_row_carries_both_scores(rollout):
    rows = rows_for(list(range(1, 241)))
    challenge(rollout, None)
    alone = score_all(rollout.server.url, rows, include_features="true")
    challenge(rollout, rollout.v2, "shadow")
    shadowed = score_all(rollout.server.url, rows, include_features="true")
    assert without_ids(shadowed) == without_ids(alone)
    assert {a["model_version"] for a in shadowed} == {rollout.v1}
    with httpx.Client(base_url=rollout.server.url, timeout=30) as http:
        batch = http.post("/predict/batch", json={"rows": rows[:50]}).json()
    assert batch["model_version"] == rollout.v1
    assert [p["score"] for p in batch["predictions"]] == [a["score"] for a in alone[:50]]
    assert {p["model_version"] for p in batch["predictions"]} == {rollout.v1}

    log = logged(rollout, shadowed)
    assert len(log) == len(shadowed)
    answers = {a["request_id"]: a for a in shadowed}
    assert (log["challenger_version"] == rollout.v2).all()
    assert (log["challenger_stage"] == "shadow").all()
    assert (log["challenger_outcome"] == "scored").all()
    assert (log["model_version"] == rollout.v1).all()
    assert (log["production_version"] == rollout.v1).all()
    for request_id, row in log.iterrows():
        assert row["score"] == row["production_score"] == answers[request_id]["score"]
    # The challenger's logged scores are what its booster gives the served vectors.
    order = [a["request_id"] for a in shadowed]
    expected = independent_scores(rollout.v2_directory, [a["features"] for a in shadowed])
    np.testing.assert_allclose(log.loc[order, "challenger_score"].to_numpy(), expected,
                               rtol=1e-9)
    assert not np.allclose(expected, [a["score"] for a in shadowed])  # another model
    assert (log["challenger_model_us"] > 0).all() and (log["production_model_us"] > 0).all()


def test_a_canary_answers_its_share_sticky_per_card_and_names_the_version(rollout):
    percent = 20.0
    challenge(rollout, rollout.v2, "canary", percent)
    cards = list(range(1000, 2500))
    rows = rows_for(cards + cards)  # each card twice
    answers = score_all(rollout.server.url, rows)
    versions: dict[int, set[str]] = {}
    for row, answer in zip(rows, answers, strict=True):
        versions.setdefault(row["card_id"], set()).add(answer["model_version"])
    assert all(len(v) == 1 for v in versions.values())  # sticky
    on = {card for card, v in versions.items() if v == {rollout.v2}}
    share = 100 * len(on) / len(cards)
    assert abs(share - percent) <= 2, share
    assert on == {card for card in cards if on_canary(card, percent)}  # the stable hash
    assert {v for vs in versions.values() for v in vs} == {rollout.v1, rollout.v2}

    with httpx.Client(base_url=rollout.server.url, timeout=30) as http:
        batch = http.post("/predict/batch", json={"rows": rows_for(cards[:200])}).json()
    assert batch["model_version"] == rollout.v1
    assert [p["model_version"] for p in batch["predictions"]] == [
        rollout.v2 if card in on else rollout.v1 for card in cards[:200]]

    log = logged(rollout, answers)
    assert len(log) == len(answers)
    for answer in answers:
        row = log.loc[answer["request_id"]]
        assert (row["model_version"], row["score"]) == (answer["model_version"],
                                                       answer["score"])
        assert row["production_version"] == rollout.v1
        assert row["challenger_version"] == rollout.v2 and row["challenger_stage"] == "canary"
        assert row["challenger_outcome"] == "scored"
        if answer["model_version"] == rollout.v2:
            assert row["challenger_score"] == answer["score"]
            assert row["production_score"] != answer["score"]
        else:
            assert row["production_score"] == answer["score"]
            assert not np.isnan(row["challenger_score"])  # scored in the shadow


def test_a_challenger_scoring_nan_fails_no_request(rollout):
    cards = list(range(100, 700))  # cards with features online
    for stage, percent in (("canary", 50.0), ("shadow", None)):
        challenge(rollout, NAN_VERSION, stage, percent)
        answers = score_all(rollout.server.url, rows_for(cards))
        assert all(np.isfinite(a["score"]) for a in answers)
        log = logged(rollout, answers)
        outcomes = log["challenger_outcome"].value_counts().to_dict()
        assert outcomes.get("nonfinite", 0) > 500, outcomes
        bad = log[log["challenger_outcome"] == "nonfinite"]
        assert bad["challenger_score"].isna().all()
        assert (bad["model_version"] == rollout.v1).all()  # production answered them
        assert (bad["score"] == bad["production_score"]).all()
        assert (log["challenger_stage"] == stage).all()
    # The rollout policy aborts it on the shadow's 600 events: nearly all non-finite.
    aborted = abort_by_policy(rollout, rollout.settings, NAN_VERSION)
    assert aborted.comparison.events == len(cards)
    assert {c.name for c in aborted.decision.checks if c.breached} >= {"rollout_max_error_rate"}
    challenge(rollout, None)
    with httpx.Client(base_url=rollout.server.url, timeout=30) as http:
        metrics = http.get("/metrics").text
    assert float(re.search(r'skewless_challenger_scores_total\{outcome="nonfinite"\} (\S+)',
                           metrics).group(1)) > 100


def test_a_challenger_that_raises_or_hangs_fails_and_delays_no_request(rollout, tmp_path):
    settings = rollout.settings.model_copy(update={
        "feature_log_dir": tmp_path / "log", "feature_log_flush_seconds": 0.2,
        "registry_poll_seconds": 3600.0, "shadow_budget_ms": 100.0})
    app = create_app(settings, promote=promote)
    challenge(rollout, rollout.v2, "shadow")  # the registry both processes read
    with serve_in_thread(app) as url:
        predictor = app.state.predictor
        assert predictor.challenger.route.version == rollout.v2
        scorer = predictor.challenger.route.scorer

        def hang(*args: Any) -> float:
            time.sleep(1.0)
            return 0.5

        scorer.predict_one = hang
        scorer.predict = hang
        rows = rows_for(list(range(7000, 7030)))
        with httpx.Client(base_url=url, timeout=30) as http:
            slow = []
            for row in rows:
                started = time.perf_counter()
                answer = http.post("/predict", json=row)
                slow.append((time.perf_counter() - started, answer))
        assert all(a.status_code == 200 for _, a in slow)
        assert max(s for s, _ in slow) < 0.5  # the hung challenger delays nobody

        def fail(*args: Any) -> float:
            raise RuntimeError("challenger broke")

        scorer.predict_one = fail
        scorer.predict = fail
        time.sleep(1.5)  # the hung calls return (their scores are dropped as late)
        with rollout.admin() as admin:
            assert admin.post(f"/admin/models/{NAME}/versions/{rollout.v2}/canary",
                              json={"reason": "test", "percent": 50}).status_code == 200
        asyncio_refresh(url)
        assert predictor.challenger.route.stage == "canary"
        with httpx.Client(base_url=url, timeout=30) as http:
            failing = [http.post("/predict", json=row) for row in rows]
            batch = http.post("/predict/batch", json={"rows": rows})
        assert all(a.status_code == 200 for a in failing) and batch.status_code == 200
        assert {a.json()["model_version"] for a in failing} == {rollout.v1}
        assert {p["model_version"] for p in batch.json()["predictions"]} == {rollout.v1}
    log = read_logs(tmp_path / "log").set_index("__request_id")
    late = log.loc[[a.json()["request_id"] for _, a in slow]]
    assert (late["challenger_outcome"] == "late").all()
    assert late["challenger_score"].isna().all()
    errors = log.loc[[a.json()["request_id"] for a in failing]]
    assert (errors["challenger_outcome"] == "error").all()
    assert (errors["score"] == errors["production_score"]).all()
    assert len(log) == len(rows) * 3  # every answered row logged once, none lost
    # The rollout policy aborts it: 60 of its 90 events failed, 30 came late.
    aborted = abort_by_policy(rollout, settings.model_copy(update={"rollout_min_events": 90}),
                              rollout.v2)
    assert aborted.comparison.outcomes["error"] == 60 and aborted.comparison.outcomes["late"] == 30
    assert {c.name for c in aborted.decision.checks if c.breached} == {
        "rollout_max_error_rate", "rollout_max_missing_rate"}
    challenge(rollout, None)


def abort_by_policy(rollout: Rollout, settings: Settings, version: str) -> RolloutReport:
    """`skewless rollout apply`'s policy, run once: it must abort ``version``."""
    registry = Registry.from_settings(settings)
    try:
        report = apply_rollout_policy(settings, registry, NAME)
        assert (report.decision.action, report.decision.applied) == ("abort", True), report
        assert registry.get(NAME, version).stage == "candidate"
        last = registry.get(NAME, version).details()["transitions"][-1]
        assert last["actor"] == "skewless rollout" and last["evidence"]["evidence"]["checks"]
    finally:
        registry.close()
    return report


def asyncio_refresh(url: str) -> None:
    """Tell the in-process app the registry changed (its admin reload)."""
    answer = httpx.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=30)
    assert answer.status_code == 200, answer.text
