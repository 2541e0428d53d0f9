"""The model page's rollout section: the latest rollout report, on the pages of the versions
it names.

A registry (SQLite) with fraud v1 in production, v2 its canary and v3 a candidate; the
catalog over a Feast repo with nothing applied (no feature is needed to show a model
version). A report is written as `skewless rollout apply` writes it; the JSON API and the
page must show its figures on v2's and v1's pages, and nothing on v3's, on another model's
report or without one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from feast import FeatureStore

from service.app import install_error_handlers, serve_in_thread
from service.catalog.catalog import Catalog
from service.catalog.routes import install_catalog
from skewless.db import upgrade
from skewless.registry import Registry
from skewless.reports.rollout import Comparison, Decision, RolloutReport
from skewless.settings import Settings
from tests.support.artifacts import write_artifact
from tests.support.rollout_reports import held_report
from training.rollout import write_report

GATE = 'slice card_type=<script>alert("x")</script>: ROC AUC 0.81 under the floor 0.85'


def empty_feast_repo(root: Path) -> FeatureStore:
    """A real Feast repo with nothing applied: no feature is needed to show a model version."""
    root.mkdir(parents=True)
    (root / "feature_store.yaml").write_text(
        "project: skewless\nregistry: data/registry.db\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\n"
        "entity_key_serialization_version: 3\n")
    return FeatureStore(repo_path=str(root))


@pytest.fixture
def catalog(tmp_path: Path):
    settings = Settings(repo_path=tmp_path / "repo", var_dir=tmp_path / "var",
                        feature_service="fraud")
    upgrade(settings.resolved_database_url)
    registry = Registry(settings.resolved_database_url)
    for v in ("v1", "v2", "v3"):
        registry.register(write_artifact(tmp_path / "models" / v, v), actor="trainer")
    registry.promote("fraud", "v1", "alice", "first", {}, expected_production=None)
    registry.canary("fraud", "v2", 10, "bob", "shadow looked fine")
    store = empty_feast_repo(tmp_path / "repo")
    app = FastAPI()
    install_catalog(app, Catalog(settings, store, registry))
    install_error_handlers(app)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield settings, registry, http
    registry.close()


def held(registry: Registry, name: str = "fraud") -> RolloutReport:
    """v2's rollout as `skewless rollout apply` reports it: better on its labels, but the
    gate refused its promotion, so held."""
    status = registry.rollout("fraud")
    assert status.production is not None and status.challenger is not None
    return held_report(
        name, status.production, status.challenger, datetime.now(UTC), gate=GATE,
        traffic_percent=status.traffic_percent,
        started_at=status.started_at.isoformat() if status.started_at else None,
        feature_service="fraud")


class Facts(HTMLParser):
    """The texts of the ``data-fact`` cells of the page's rollout table."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.facts: dict[str, str] = {}
        self._in_rollout = False
        self._fact: str | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._in_rollout = a.get("id") == "rollout"
        elif tag == "td" and self._in_rollout and a.get("data-fact"):
            self._fact, self._text = a["data-fact"], []
        elif tag == "br" and self._fact:
            self._text.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._fact:
            self.facts[self._fact] = " ".join("".join(self._text).split())
            self._fact = None
        elif tag == "table":
            self._in_rollout = False

    def handle_data(self, data: str) -> None:
        if self._fact:
            self._text.append(data)


def page(http: httpx.Client, version: str) -> tuple[dict, str]:
    api = http.get(f"/api/catalog/models/fraud/versions/{version}")
    assert api.status_code == 200, api.text
    html = http.get(f"/catalog/models/fraud/versions/{version}")
    assert html.status_code == 200, html.text
    return api.json(), html.text


def test_the_challengers_and_productions_pages_show_the_report(catalog):
    settings, registry, http = catalog
    report = held(registry)
    write_report(settings, report)
    started = datetime.fromisoformat(report.comparison.started_at or "")
    generated = datetime.fromisoformat(report.generated_at)

    detail, html = page(http, "v2")
    rollout = detail["rollout"]
    assert {**rollout, "started_at": datetime.fromisoformat(rollout["started_at"]),
            "generated_at": datetime.fromisoformat(rollout["generated_at"])} == {
        "role": "challenger", "challenger": "v2", "production": "v1", "stage": "canary",
        "traffic_percent": 10.0, "started_at": started, "events": 48_213,
        "error_rate": pytest.approx(123 / 48_213), "score_psi": 0.0312, "agreement": 0.9874,
        "production_p99_ms": 0.087, "challenger_p99_ms": 0.142, "labels": 31_420,
        "roc_auc_difference": 0.0135, "roc_auc_low": 0.0061, "roc_auc_high": 0.0208,
        "action": "hold", "reasons": report.decision.reasons, "gate": GATE, "applied": True,
        "command": "apply", "generated_at": generated}
    assert "<h2>Rollout</h2>" in html
    facts = Facts(html).facts
    assert facts == {
        "role": "challenger (canary at 10%) against production v1",
        "started_at": started.strftime("%Y-%m-%d %H:%M UTC"),
        "events": "48,213", "error_rate": f"{123 / 48_213:.4f}", "score_psi": "0.0312",
        "agreement": "0.9874", "p99_ms": "production v1 0.087 · challenger v2 0.142",
        "labels": "31,420",
        "roc_auc_difference": "+0.0135 (95% +0.0061 to +0.0208)",
        "decision": "hold (applied): ROC AUC difference [+0.0061, +0.0208] on 31,420 labels "
                    f"lies above 0.005 (rollout_promote_margin) the gate: {GATE}",
        "generated_at": f"skewless rollout apply, {generated:%Y-%m-%d %H:%M} UTC"}
    # The gate's words are shown, never run.
    assert "<script>" not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html

    detail, html = page(http, "v1")
    assert detail["rollout"] == {**rollout, "role": "production"}
    assert Facts(html).facts["role"] == "production against the challenger v2 (canary at 10%)"


def test_a_version_the_report_does_not_name_shows_no_rollout(catalog):
    settings, registry, http = catalog
    detail, html = page(http, "v2")  # no report yet
    assert detail["rollout"] is None and "Rollout" not in html
    write_report(settings, held(registry))
    detail, html = page(http, "v3")
    assert detail["rollout"] is None and "Rollout" not in html
    assert page(http, "v2")[0]["rollout"]["role"] == "challenger"
    # A report on another model with the same version names.
    write_report(settings, held(registry, name="other"))
    assert page(http, "v2")[0]["rollout"] is None
    # Without a challenger, nothing to show on production's page.
    now = datetime.now(UTC).isoformat()
    write_report(settings, RolloutReport(
        feature_service="fraud", generated_at=now, labels_known_at=now, command="status",
        comparison=Comparison(name="fraud", production="v1", challenger=None),
        decision=Decision(action="none", reasons=["no challenger"])))
    assert page(http, "v1")[0]["rollout"] is None
