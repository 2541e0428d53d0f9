"""/admin's rollout routes: shadow, canary, the rollout status and its end, behind the admin
token, every call audited, every error path with its status and detail.

The admin router alone, with the service's error handlers and audit middleware, over a SQLite
registry: no feature store or model needed to change stages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.admin import AdminAuditMiddleware
from service.admin import router as admin_router
from service.app import install_error_handlers
from skewless.db import upgrade
from skewless.registry import Registry
from skewless.settings import Settings
from tests.support.artifacts import write_artifact

TOKEN = "test-admin-token-0123456789"
ROLLOUT_ROUTES = {"/admin/models/{name}/versions/{version}/shadow": "post",
                  "/admin/models/{name}/versions/{version}/canary": "post",
                  "/admin/models/{name}/rollout": "get",
                  "/admin/models/{name}/rollout/end": "post"}


@pytest.fixture
def admin(tmp_path) -> Iterator[tuple[TestClient, Registry]]:
    """An admin client (as alice) over fraud v1 in production and v2, v3 as candidates."""
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    upgrade(url)
    registry = Registry(url)
    for v in ("v1", "v2", "v3"):
        registry.register(write_artifact(tmp_path / "models" / v, v))
    registry.promote("fraud", "v1", "ops", "first", {}, expected_production=None)
    app = FastAPI()
    app.state.settings = Settings(database_url=url, admin_token=SecretStr(TOKEN),
                                  var_dir=tmp_path / "var")
    app.state.registry = registry
    app.state.promote = None
    app.include_router(admin_router)
    install_error_handlers(app)
    app.add_middleware(AdminAuditMiddleware, registry=registry)
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Skewless-Actor": "alice"}
    with TestClient(app, headers=headers) as client:
        yield client, registry
    registry.close()


def test_shadow_canary_status_and_end(admin):
    http, registry = admin
    shadow = http.post("/admin/models/fraud/versions/v2/shadow", json={"reason": "look first"})
    assert shadow.status_code == 200, shadow.text
    body = shadow.json()
    assert (body["version"], body["stage"]) == ("v2", "shadow")
    assert {k: body["rollout"][k] for k in ("production", "challenger", "stage", "by")} == {
        "production": "v1", "challenger": "v2", "stage": "shadow", "by": "alice (admin token)"}
    canary = http.post("/admin/models/fraud/versions/v2/canary",
                       json={"percent": 12.5, "reason": "widen"})
    assert canary.status_code == 200, canary.text
    status = http.get("/admin/models/fraud/rollout").json()
    assert (status["challenger"], status["stage"], status["traffic_percent"],
            status["reason"], status["started_by"]) == (
        "v2", "canary", 12.5, "widen", "alice (admin token)")
    ended = http.post("/admin/models/fraud/rollout/end", json={"reason": "enough"})
    assert ended.status_code == 200
    assert (ended.json()["version"], ended.json()["stage"]) == ("v2", "candidate")
    assert ended.json()["rollout"]["challenger"] is None
    events = [(e.actor, e.action, e.outcome) for e in reversed(registry.audit_events())
              if e.actor == "alice (admin token)"]
    assert events == [
        ("alice (admin token)", "shadow", "done"),
        ("alice (admin token)", "POST /admin/models/fraud/versions/v2/shadow", "200"),
        ("alice (admin token)", "canary", "done"),
        ("alice (admin token)", "POST /admin/models/fraud/versions/v2/canary", "200"),
        ("alice (admin token)", "GET /admin/models/fraud/rollout", "200"),
        ("alice (admin token)", "end rollout", "done"),
        ("alice (admin token)", "POST /admin/models/fraud/rollout/end", "200")]
    call = registry.audit_events(limit=1)[0]
    assert call.detail == {"reason": "enough"}


def errors_of(response: Any) -> set[tuple[Any, ...]]:
    return {(tuple(e["loc"]), e["type"]) for e in response.json()["detail"]}


@pytest.mark.parametrize(("body", "error"), [
    ({"percent": 0, "reason": "r"}, (("body", "percent"), "greater_than")),
    ({"percent": 50.01, "reason": "r"}, (("body", "percent"), "less_than_equal")),
    ({"percent": -5, "reason": "r"}, (("body", "percent"), "greater_than")),
    ({"percent": "lots", "reason": "r"}, (("body", "percent"), "float_parsing")),
    ({"reason": "r"}, (("body", "percent"), "missing")),
    ({"percent": 5, "reason": ""}, (("body", "reason"), "string_too_short")),
    ({"percent": 5}, (("body", "reason"), "missing")),
], ids=["zero", "above-50", "negative", "not-a-number", "no-percent", "empty-reason",
        "no-reason"])
def test_a_bad_canary_body_is_422_naming_the_field(admin, body, error):
    http, registry = admin
    response = http.post("/admin/models/fraud/versions/v2/canary", json=body)
    assert response.status_code == 422
    assert errors_of(response) == {error}
    assert registry.rollout("fraud").challenger is None


def test_a_non_finite_percent_is_422(admin):
    http, _ = admin
    response = http.post("/admin/models/fraud/versions/v2/canary",
                         content='{"percent": NaN, "reason": "r"}',
                         headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert {loc for loc, _ in errors_of(response)} == {("body", "percent")}


@pytest.mark.parametrize(("method", "path", "body", "status", "detail"), [
    ("post", "/admin/models/fraud/versions/v9/shadow", {"reason": "r"}, 404,
     "model fraud has no version v9"),
    ("post", "/admin/models/nope/versions/v1/canary", {"percent": 5, "reason": "r"}, 404,
     "model nope has no version v1"),
    ("get", "/admin/models/nope/rollout", None, 404, "no model named nope is registered"),
    ("post", "/admin/models/nope/rollout/end", {"reason": "r"}, 404,
     "no model named nope is registered"),
    ("post", "/admin/models/fraud/versions/v1/shadow", {"reason": "r"}, 409,
     "model fraud version v1 is already production: only a candidate can challenge it"),
    ("post", "/admin/models/fraud/versions/v3/canary", {"percent": 5, "reason": "r"}, 409,
     "model fraud already has a challenger: version v2 (shadow); end its rollout first "
     "(`skewless models end-rollout fraud`)"),
    ("post", "/admin/models/fraud/versions/v2/shadow", {"reason": "r"}, 409,
     "model fraud version v2 is already the shadow"),
], ids=["unknown-version", "unknown-model", "unknown-model-status", "unknown-model-end",
        "already-production", "another-challenger", "already-shadow"])
def test_rollout_errors_have_their_status_and_detail(admin, method, path, body, status,
                                                     detail):
    http, registry = admin
    registry.shadow("fraud", "v2", "ops", "in the way")
    response = http.request(method.upper(), path, json=body)
    assert (response.status_code, response.json()["detail"]) == (status, detail)
    assert registry.audit_events(limit=1)[0].outcome == str(status)


def test_ending_no_rollout_is_409(admin):
    http, _ = admin
    response = http.post("/admin/models/fraud/rollout/end", json={"reason": "r"})
    assert (response.status_code, response.json()["detail"]) == (
        409, "model fraud has no challenger (shadow or canary): no rollout to end")


def test_rollout_routes_need_the_token(admin):
    http, registry = admin
    for path, method in ROLLOUT_ROUTES.items():
        url = path.format(name="fraud", version="v2")
        body = {"percent": 5, "reason": "r"} if method == "post" else None
        anonymous = http.request(method.upper(), url, json=body, headers={"Authorization": ""})
        assert anonymous.status_code == 401, url
        wrong = http.request(method.upper(), url, json=body,
                             headers={"Authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.json()["detail"]) == (
            403, "token not accepted (unknown, revoked or expired)")
    assert registry.rollout("fraud").challenger is None


def test_openapi_documents_the_rollout_routes(admin):
    http, _ = admin
    spec = http.get("/openapi.json").json()
    for path, method in ROLLOUT_ROUTES.items():
        assert method in spec["paths"][path], path
        assert "404" in spec["paths"][path][method]["responses"], path
    assert "409" in spec["paths"]["/admin/models/{name}/versions/{version}/canary"]["post"][
        "responses"]
    percent = spec["components"]["schemas"]["CanaryRequest"]["properties"]["percent"]
    assert (percent["exclusiveMinimum"], percent["maximum"]) == (0, 50)
    assert "traffic_percent" in spec["components"]["schemas"]["RolloutResponse"]["properties"]
