"""Named tokens and their roles on the running service: every protected route admits exactly
the roles that reach the one it declares (the matrix is derived from the app's routes, so a new
admin route without a role fails it); no token is 401; a revoked or expired token is refused
within seconds; the audit names the token, not a header the caller chose; /predict and the
catalog take tokens when SKEWLESS_PREDICT_AUTH and SKEWLESS_CATALOG_AUTH are on.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from fastapi.routing import RouteContext, iter_route_contexts

from service.app import create_app
from skewless.db import utcnow
from skewless.registry import Registry
from skewless.tokens import ApiToken, Role, TokenStore
from tests.support.service_harness import ROW, app_in_thread

PROTECTED = ("/admin", "/catalog", "/api/catalog", "/predict")
# A value for each path parameter: the routes answer 404 or 409 for these, never a change.
PATH_VALUES = {"name": "no-such-model", "version": "v0", "view": "card_activity",
               "feature": "txn_count_7d"}
BODY = {"reason": "role matrix", "percent": 5, **ROW}


@pytest.fixture(scope="module")
def served(demo):
    settings = demo.settings.model_copy(update={
        "catalog_auth": True, "predict_auth": True, "token_refresh_seconds": 0.3})
    suffix = uuid.uuid4().hex[:8]
    tokens = {}
    with TokenStore(settings.resolved_database_url) as store:
        for role in Role:
            _, tokens[role] = store.create(f"{role}-{suffix}", role, 1, "test")
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http, settings, tokens, suffix


def role_of(route: RouteContext) -> list[Role]:
    """The roles the route's dependencies require (router-level ones included)."""
    found = []
    stack = list(route.dependant.dependencies)
    while stack:
        dependency = stack.pop()
        if hasattr(dependency.call, "role"):
            found.append(dependency.call.role)
        stack.extend(dependency.dependencies)
    return found


def protected_routes(settings) -> list[tuple[str, str, Role]]:
    routes = []
    for route in iter_route_contexts(create_app(settings).routes):
        if route.methods is None or not route.path.startswith(PROTECTED):
            continue
        roles = role_of(route)
        assert len(roles) == 1, f"{route.path} declares {roles or 'no role'}"
        for method in route.methods:
            routes.append((method, route.path, roles[0]))
    return routes


def call(http, method: str, path: str, token: str | None):
    url = re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: PATH_VALUES.get(m.group(1), "x"), path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method == "GET":
        return http.get(url, headers=headers)
    return http.request(method, url, json=BODY, headers=headers)


def test_each_route_admits_exactly_the_roles_that_reach_its_own(served):
    http, settings, tokens, _ = served
    routes = protected_routes(settings)
    admin = [r for r in routes if r[1].startswith("/admin")]
    assert len(admin) == 11 and {r[2] for r in admin} == {Role.VIEWER, Role.OPERATOR,
                                                          Role.APPROVER}
    assert {r[2] for r in routes if r[1].startswith("/predict")} == {Role.CLIENT}
    for method, path, needed in routes:
        assert call(http, method, path, None).status_code == 401, (method, path)
        for held, token in tokens.items():
            status = call(http, method, path, token).status_code
            if held.allows(needed):
                assert status not in (401, 403), (method, path, held, status)
            else:
                assert status == 403, (method, path, held, status)


def test_the_audit_names_the_token_not_a_header(served):
    http, settings, tokens, suffix = served
    answer = http.post("/admin/reload", headers={"Authorization": f"Bearer {tokens[Role.OPERATOR]}",
                                                 "X-Skewless-Actor": "someone-else"})
    assert answer.status_code == 200, answer.text
    with Registry(settings.resolved_database_url) as registry:
        events = [e for e in registry.audit_events(limit=50) if e.action == "POST /admin/reload"]
    assert events[0].actor == f"operator-{suffix} (operator token)"


def test_a_revoked_or_expired_token_is_refused_within_seconds(served):
    http, settings, _, suffix = served
    with TokenStore(settings.resolved_database_url) as store:
        _, revoked = store.create(f"leaving-{suffix}", "viewer", 1, "test")
        _, expiring = store.create(f"expiring-{suffix}", "client", 1, "test")

        def status(token, path="/admin/models"):
            if path == "/predict":
                return http.post(path, json=ROW,
                                 headers={"Authorization": f"Bearer {token}"}).status_code
            return http.get(path, headers={"Authorization": f"Bearer {token}"}).status_code

        deadline = time.monotonic() + 10
        while status(revoked) != 200 or status(expiring, "/predict") != 200:  # a new token
            assert time.monotonic() < deadline
            time.sleep(0.1)
        store.revoke(f"leaving-{suffix}", "test")
        with store.session() as session:
            session.execute(sa.update(ApiToken).where(ApiToken.name == f"expiring-{suffix}")
                            .values(expires_at=utcnow() - timedelta(seconds=1)))
        revoked_at = time.monotonic()
        while status(revoked) != 403 or status(expiring, "/predict") != 403:
            assert time.monotonic() - revoked_at < 3, "still accepted 3 s after revocation"
            time.sleep(0.05)


def test_the_shared_admin_token_is_no_client(served):
    http, settings, _, _ = served
    shared = settings.admin_token.get_secret_value()
    assert http.post("/predict", json=ROW,
                     headers={"Authorization": f"Bearer {shared}"}).status_code == 403
    assert http.get("/admin/models",
                    headers={"Authorization": f"Bearer {shared}"}).status_code == 200


def test_outside_development_only_named_tokens_open_the_admin_api(demo, served):
    _, settings, tokens, _ = served
    production = settings.model_copy(update={"environment": "production"})
    shared = settings.admin_token.get_secret_value()
    with app_in_thread(production) as url, httpx.Client(base_url=url, timeout=30) as http:
        refused = http.get("/admin/models", headers={"Authorization": f"Bearer {shared}"})
        assert refused.status_code == 403
        assert "works in development only" in refused.json()["detail"]
        named = http.get("/admin/models",
                         headers={"Authorization": f"Bearer {tokens[Role.APPROVER]}"})
        assert named.status_code == 200, named.text
