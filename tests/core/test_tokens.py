"""Named API tokens in the metadata database (SQLite and a private PostgreSQL): created with
a role and an expiry, stored only as a hash, revoked, refused once expired; each change audited
under the caller's name; the roles' order; the `skewless tokens` commands."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from skewless.cli import app as cli
from skewless.db import make_engine, upgrade, utcnow
from skewless.errors import InvalidInput
from skewless.registry import Conflict, NotFound, Registry
from skewless.tokens import ApiToken, Role, TokenStore, digest


@pytest.fixture
def store(database):
    upgrade(database)
    with TokenStore(database) as tokens:
        yield tokens


def test_a_token_is_stored_as_its_hash_and_found_by_it(store, database):
    row, secret = store.create("ci-deployer", "operator", 30, "alice")
    assert secret.startswith("skw_") and len(secret) > 40
    assert row.prefix == secret[:12] and row.role == "operator" and row.created_by == "alice"
    assert timedelta(days=29, hours=23) < row.expires_at - utcnow() <= timedelta(days=30)
    engine = make_engine(database)
    with engine.connect() as connection:
        dumped = " ".join(str(v) for r in connection.execute(sa.text("SELECT * FROM api_tokens"))
                          for v in r)
    engine.dispose()
    assert secret not in dumped and digest(secret) in dumped
    assert store.active()[digest(secret)][:2] == ("ci-deployer", Role.OPERATOR)


def test_revoked_and_expired_tokens_are_not_active(store):
    _, kept = store.create("kept", "viewer", 1, "alice")
    _, revoked = store.create("gone", "approver", 90, "alice")
    _, expired = store.create("old", "client", 90, "alice")
    with store.session() as session:
        session.execute(sa.update(ApiToken).where(ApiToken.name == "old")
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    row = store.revoke("gone", "bob")
    assert (row.revoked_by, row.state()) == ("bob", "revoked")
    assert set(store.active()) == {digest(kept)}
    assert {t.name: t.state() for t in store.tokens()} == {
        "gone": "revoked", "kept": "active", "old": "expired"}
    again = store.revoke("gone", "carol")  # revoking twice changes nothing
    assert again.revoked_by == "bob"
    with Registry(store.url) as registry:
        events = [(e.actor, e.action, e.target) for e in registry.audit_events()]
    assert events.count(("bob", "revoke token", "gone")) == 1
    assert ("carol", "revoke token", "gone") not in events
    assert ("alice", "create token", "kept") in events


def test_names_roles_and_expiry_are_checked(store):
    store.create("a", "viewer", 1, "alice")
    with pytest.raises(Conflict, match="exists already"):
        store.create("a", "client", 1, "alice")
    for name, role, days, message in [("", "viewer", 1, "token name"),
                                       ("x y", "viewer", 1, "token name"),
                                       ("b", "admin", 1, "not one of viewer"),
                                       ("b", "viewer", 0, "from 1 to 3650"),
                                       ("b", "viewer", 3651, "from 1 to 3650")]:
        with pytest.raises(InvalidInput, match=message):
            store.create(name, role, days, "alice")
    with pytest.raises(NotFound):
        store.revoke("nobody", "alice")


def test_admin_roles_are_cumulative_and_a_client_is_apart():
    allowed = {(held, needed) for held in Role for needed in Role if held.allows(needed)}
    assert allowed == {
        (Role.VIEWER, Role.VIEWER),
        (Role.OPERATOR, Role.VIEWER), (Role.OPERATOR, Role.OPERATOR),
        (Role.APPROVER, Role.VIEWER), (Role.APPROVER, Role.OPERATOR),
        (Role.APPROVER, Role.APPROVER),
        (Role.CLIENT, Role.CLIENT),
    }


def test_the_commands_create_list_and_revoke(tmp_path, monkeypatch):
    monkeypatch.setenv("SKEWLESS_VAR_DIR", str(tmp_path))
    upgrade(f"sqlite:///{tmp_path / 'skewless.db'}")
    runner = CliRunner()
    created = runner.invoke(cli, ["tokens", "create", "scorer", "--role", "client", "--json"])
    assert created.exit_code == 0, created.output
    secret = json.loads(created.output)["token"]
    listed = runner.invoke(cli, ["tokens", "list", "--json"])
    assert [(t["name"], t["role"], t["state"]) for t in json.loads(listed.output)] == [
        ("scorer", "client", "active")]
    assert secret not in listed.output
    assert runner.invoke(cli, ["tokens", "revoke", "scorer"]).exit_code == 0
    listed = runner.invoke(cli, ["tokens", "list", "--json"])
    assert json.loads(listed.output)[0]["state"] == "revoked"
    refused = runner.invoke(cli, ["tokens", "create", "x", "--role", "root"])
    assert isinstance(refused.exception, InvalidInput) and "not one of" in str(refused.exception)
