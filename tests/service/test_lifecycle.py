"""The served model follows the registry: admin API, hot swap and rollback under load.

One `skewless serve` process for the module, with its own metadata database: production
starts as the demo model; a second model (another seed) and a copy whose model file was
changed after its registration are candidates. In-process, a model slot refuses what a check
process did not parse first, and a pinned directory rewritten after its check.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from service import model_slot
from service.app import create_app
from service.metrics import Metrics
from service.model_slot import ModelSlot
from skewless.artifact import sha256_file
from skewless.contract import resolve_service
from skewless.errors import SkewlessError
from skewless.registry import Registry, bootstrap_production
from skewless.settings import Settings
from tests.support.service_harness import ROW, ServeProcess, read_logs, serve_env
from training.train import train_model

pytestmark = pytest.mark.redis
TOKEN = "test-admin-token-0123456789"
NAME = "fraud_model_v1"


@dataclass
class Lifecycle:
    settings: Settings
    server: ServeProcess
    v1: str
    v2: str
    corrupt: str
    corrupt_sha256: tuple[str, str]  # registered, then on disk

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=60,
                            headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture(scope="module")
def lifecycle(demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("lifecycle")
    settings = demo.settings.model_copy(update={
        "var_dir": root / "var", "feature_log_dir": root / "log",
        "admin_token": SecretStr(TOKEN)})
    v1 = bootstrap_production(settings, demo.model.directory).version
    registry = Registry.from_settings(settings)
    second = train_model(demo.training_set, settings.model_dir, settings.holdout_days,
                         settings.validation_days, seed=11)
    v2 = registry.register(second.directory).version
    # A copy registered intact (checked), whose model file is changed afterwards.
    corrupt_dir = settings.model_dir / NAME / "corrupt"
    shutil.copytree(demo.model.directory, corrupt_dir)
    contract = json.loads((corrupt_dir / "contract.json").read_text())
    contract["model"]["version"] = "corrupt"
    (corrupt_dir / "contract.json").write_text(json.dumps(contract))
    registered = registry.register(corrupt_dir).sha256
    (corrupt_dir / "model.txt").write_text("tree\nnot a model\n")
    registry.close()
    env = serve_env(settings, feature_log_dir=root / "log", admin_token=TOKEN,
                    registry_poll_seconds=0.3, feature_log_flush_seconds=0.2)
    server = ServeProcess(env, root / "serve.log").start()
    yield Lifecycle(settings, server, v1, v2, "corrupt",
                    (registered, sha256_file(corrupt_dir / "model.txt")))
    server.stop()


def test_admin_needs_the_token_and_audits_every_call(lifecycle):
    url = lifecycle.server.url
    anonymous = httpx.get(f"{url}/admin/models")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    wrong = httpx.get(f"{url}/admin/models", headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()["detail"]) == (
        403, "token not accepted (unknown, revoked or expired)")
    with lifecycle.admin() as admin:
        admin.headers["X-Skewless-Actor"] = "alice"
        listed = admin.get("/admin/models")
        assert listed.status_code == 200
        assert {r["version"]: r["stage"] for r in listed.json()} == {
            lifecycle.v1: "production", lifecycle.v2: "candidate", "corrupt": "candidate"}
        missing = admin.get(f"/admin/models/{NAME}/versions/nope")
        assert missing.status_code == 404
        assert missing.json()["detail"] == f"model {NAME} has no version nope"
        unreasoned = admin.post(f"/admin/models/{NAME}/versions/{lifecycle.v2}/promote",
                                json={"force": True})
        assert unreasoned.status_code == 400 and "needs a reason" in unreasoned.json()["detail"]
        production = admin.post(f"/admin/models/{NAME}/versions/{lifecycle.v1}/archive",
                                json={"reason": "tidy"})
        assert production.status_code == 409 and "is production" in production.json()["detail"]
        blank = admin.post(f"/admin/models/{NAME}/rollback", json={"reason": ""})
        assert blank.status_code == 422 and blank.json()["detail"][0]["loc"] == ["body", "reason"]
        audit = admin.get("/admin/audit", params={"limit": 8}).json()
    calls = [(e["actor"], e["action"], e["outcome"]) for e in reversed(audit)
             if e["action"].startswith(("GET", "POST"))]
    assert calls[-7:] == [
        ("anonymous", "GET /admin/models", "401"),
        ("wrong token", "GET /admin/models", "403"),
        ("alice (admin token)", "GET /admin/models", "200"),
        ("alice (admin token)", f"GET /admin/models/{NAME}/versions/nope", "404"),
        ("alice (admin token)", f"POST /admin/models/{NAME}/versions/{lifecycle.v2}/promote",
         "400"),
        ("alice (admin token)", f"POST /admin/models/{NAME}/versions/{lifecycle.v1}/archive",
         "409"),
        ("alice (admin token)", f"POST /admin/models/{NAME}/rollback", "422"),
    ]


@dataclass
class Load:
    """Clients that keep scoring; every response is kept with when it was sent."""

    url: str
    results: list[tuple[float, float, int, str | None, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, offset: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            i = offset
            while not self.stop.is_set():
                i += 1
                sent = time.monotonic()
                try:
                    response = http.post("/predict", json=ROW | {"amount": 1.0 + i % 500})
                    body = response.json() if response.status_code == 200 else {}
                    self.results.append((sent, time.monotonic(), response.status_code,
                                         body.get("model_version"), body.get("request_id")))
                except httpx.TransportError:
                    self.results.append((sent, time.monotonic(), 0, None, None))

    def start(self, clients: int = 4) -> Load:
        self.threads = [threading.Thread(target=self._run, args=(n * 10**6,)) for n in
                        range(clients)]
        for t in self.threads:
            t.start()
        return self

    def wait_for(self, more: int, timeout: float = 60) -> None:
        target = len(self.results) + more
        deadline = time.monotonic() + timeout
        while len(self.results) < target:
            assert time.monotonic() < deadline, f"only {len(self.results)} responses"
            time.sleep(0.05)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_hot_swap_and_rollback_under_load_fail_no_request(lifecycle):
    v1, v2 = lifecycle.v1, lifecycle.v2
    load = Load(lifecycle.server.url).start()
    try:
        load.wait_for(500)
        asked = time.monotonic()
        with lifecycle.admin() as admin:  # the admin call tells the predictor at once
            promoted = admin.post(f"/admin/models/{NAME}/versions/{v2}/promote",
                                  json={"force": True, "reason": "hot swap under load"})
        swapped = time.monotonic()
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["serving"] == v2
        load.wait_for(1500)
        registry = Registry.from_settings(lifecycle.settings)
        rollback_asked = time.monotonic()
        assert registry.rollback(NAME, "operator", "rollback under load").version == v1
        registry.close()
        with httpx.Client(base_url=lifecycle.server.url) as http:  # noticed by polling
            while http.get("/readyz").json().get("model_version") != v1:
                assert time.monotonic() - rollback_asked < 10
                time.sleep(0.05)
        rolled_back = time.monotonic()
        load.wait_for(1000)
    finally:
        load.finish()
    results = load.results
    assert len(results) >= 3000
    assert [r for r in results if r[2] != 200] == []
    assert {r[3] for r in results} == {v1, v2}
    assert {r[3] for r in results if r[1] < asked} == {v1}
    assert {r[3] for r in results if swapped < r[0] and r[1] < rollback_asked} == {v2}
    assert {r[3] for r in results if r[0] > rolled_back} == {v1}
    # Every logged row names the version that scored it.
    time.sleep(0.5)
    logged = read_logs(lifecycle.settings.feature_log_dir).set_index("__request_id")
    served = {r[4]: r[3] for r in results}
    assert logged.loc[list(served), "model_version"].to_dict() == served


def test_a_corrupt_artefact_is_refused_and_the_old_model_keeps_serving(lifecycle):
    with lifecycle.admin() as admin:
        before = admin.get("/readyz").json()["model_version"]
        forced = admin.post(f"/admin/models/{NAME}/versions/corrupt/promote",
                            json={"force": True, "reason": "test a broken artefact"})
        assert forced.status_code == 200, forced.text
        assert forced.json()["serving"] == before  # refused: the old model still serves
        scored = admin.post("/predict", json=ROW)
        assert scored.status_code == 200 and scored.json()["model_version"] == before
        assert admin.get("/readyz").status_code == 200
        metrics = admin.get("/metrics").text
        assert 'skewless_model_loads_total{outcome="refused"} 1.0' in metrics
        rolled = admin.post(f"/admin/models/{NAME}/rollback", json={"reason": "broken"})
        assert rolled.json() == {"production": before, "serving": before}
    log = lifecycle.server.log_path.read_text()
    assert f"refusing production version corrupt of {NAME}; still serving {before}" in log
    registered, on_disk = lifecycle.corrupt_sha256
    assert f"sha256 {on_disk} does not match the checked and registered {registered}" in log


def test_every_environment_starts_without_a_shared_token_and_an_unknown_one_does_not(demo):
    # Outside development /admin takes named tokens only: no shared secret is needed to start.
    for environment in ("test", "production"):
        settings = demo.settings.model_copy(update={"environment": environment})
        assert create_app(settings).state.settings.environment == environment
    with pytest.raises(SkewlessError, match="must be one of"):
        create_app(demo.settings.model_copy(update={"environment": "prod"}))


def slot_for(demo, **kwargs) -> ModelSlot:
    return ModelSlot(resolve_service(demo.store(), NAME), Metrics(), **kwargs)


def pinned_copy(demo, target, text: str | None = None):
    """The demo model copied to ``target``, its model text replaced by ``text`` (the
    contract naming the new text's sha256)."""
    shutil.copytree(demo.model.directory, target)
    if text is not None:
        (target / "model.txt").write_text(text)
        contract = json.loads((target / "contract.json").read_text())
        contract["model"]["sha256"] = sha256_file(target / "model.txt")
        (target / "contract.json").write_text(json.dumps(contract))
    return target


def test_a_pinned_model_is_checked_in_a_child_before_it_is_parsed_here(demo, tmp_path):
    text = (demo.model.directory / "model.txt").read_text()
    crashing = pinned_copy(demo, tmp_path / "crash", re.sub(r"num_cat=\d+\n", "", text, count=1))
    slot = slot_for(demo, pinned=crashing)
    slot.load()  # parsed in this process, the test process would abort here
    assert slot.scorer is None
    assert "LightGBM crashed on the model in" in slot.problem
    assert "killed by SIGABRT" in slot.problem
    good = slot_for(demo, pinned=pinned_copy(demo, tmp_path / "good"))
    good.load()
    assert good.scorer is not None and good.version == demo.model.contract.version
    good.close()


def test_a_pinned_directory_rewritten_after_its_check_is_not_parsed(demo, tmp_path,
                                                                    monkeypatch):
    pinned = pinned_copy(demo, tmp_path / "pinned")
    checked = sha256_file(pinned / "model.txt")
    real_check = model_slot.check_artifact

    def check_then_rewrite(directory, sha256, limits, **kwargs):
        outcome = real_check(directory, sha256, limits, **kwargs)
        # Model and contract rewritten together, consistent with each other.
        (pinned / "model.txt").write_text((pinned / "model.txt").read_text() + "\n")
        contract = json.loads((pinned / "contract.json").read_text())
        contract["model"]["sha256"] = sha256_file(pinned / "model.txt")
        (pinned / "contract.json").write_text(json.dumps(contract))
        return outcome

    monkeypatch.setattr(model_slot, "check_artifact", check_then_rewrite)
    slot = slot_for(demo, pinned=pinned)
    slot.load()
    assert slot.scorer is None
    assert f"not the {checked} it was checked and registered with" in slot.problem


def test_a_registry_version_without_a_check_is_checked_in_a_child_before_it_is_served(
        demo, tmp_path):
    """An upgrade from before artefact checks: production has no recorded check. The
    predictor checks it in a separate process, records and audits that, then serves it."""
    settings = demo.settings.model_copy(update={"var_dir": tmp_path / "var"})
    version = bootstrap_production(settings, demo.model.directory).version
    registry = Registry.from_settings(settings)
    with registry.engine.begin() as connection:  # as if registered before checks existed
        connection.execute(sa.text("UPDATE model_versions SET artifact_checked_at = NULL"))
    checks = []
    slot = slot_for(demo, registry=registry)
    real = model_slot.ModelSlot.checked

    def counted(self, row):
        checks.append(row.version)
        return real(self, row)

    try:
        model_slot.ModelSlot.checked = counted  # type: ignore[method-assign]
        slot.load()
        assert slot.version == version, slot.problem
        assert registry.get(NAME, version).artifact_checked_at is not None
        events = [(e.actor, e.action, e.outcome) for e in registry.audit_events()]
        assert ("skewless serve", "check artefact", "passed") in events
        assert asyncio.run(slot.refresh()) == version  # polled again: nothing checked again
    finally:
        model_slot.ModelSlot.checked = real  # type: ignore[method-assign]
        slot.close()
        registry.close()
    assert checks == [version]
