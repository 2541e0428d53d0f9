"""Feast's registry is code: what the service loads from it, and when.

Each test serves a copy of the demo's Feast repo and registry (the demo's model pinned) and
changes the copy's ``registry.db`` as someone with write access to it could, or as `feast
apply` does. The predictor runs the on-demand transformation it resolved at start-up, from
the source text its model's fingerprint covers; it refuses a registry whose pickled body is
other code; and the catalog shows a changed registry's source text without running any of it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import time
from pathlib import Path

import dill
import httpx
import pytest
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

from skewless.contract import resolve_service
from skewless.feast_cli import open_store, run_feast
from skewless.settings import Settings
from skewless.transformations import TransformationError
from tests.support.demo import REPO_FILES
from tests.support.service_harness import ROW, ServeProcess, app_in_thread, serve_env

pytestmark = pytest.mark.redis

VIEW = "transaction_features"
FEATURE_PAGE = f"/catalog/features/{VIEW}/log_amount"
FEATURE_API = f"/api/catalog/features/{VIEW}/log_amount"


def serve_a_copy(demo, root: Path) -> Settings:
    """The demo's repo files and registry in ``root``, its model pinned, a var dir of its own."""
    repo = root / "feature_repo"
    (repo / "data").mkdir(parents=True)
    for name in REPO_FILES:
        shutil.copy(demo.settings.repo_path / name, repo / name)
    shutil.copy(demo.settings.repo_path / "data" / "registry.db", repo / "data" / "registry.db")
    return demo.settings.model_copy(update={
        "repo_path": repo, "var_dir": root / "var", "model_path": demo.model.directory,
        "database_url": demo.settings.resolved_database_url, "feature_log_dir": root / "served",
    })


def registry_path(settings: Settings) -> Path:
    return settings.repo_path / "data" / "registry.db"


def rewrite_view(settings: Settings, **udf: object) -> None:
    """Replace fields of the on-demand view's stored function, as an editor of the file could
    (written beside it and renamed over it, as Feast writes it)."""
    path = registry_path(settings)
    proto = RegistryProto.FromString(path.read_bytes())
    (view,) = [v for v in proto.on_demand_feature_views if v.spec.name == VIEW]
    stored = view.spec.feature_transformation.user_defined_function
    for name, value in udf.items():
        setattr(stored, name, value)
    staged = path.with_name(".registry.db.new")
    staged.write_bytes(proto.SerializeToString())
    os.replace(staged, path)


def stored_text(settings: Settings) -> str:
    proto = RegistryProto.FromString(registry_path(settings).read_bytes())
    (view,) = [v for v in proto.on_demand_feature_views if v.spec.name == VIEW]
    return view.spec.feature_transformation.user_defined_function.body_text


def other_function_body(marker: Path) -> bytes:
    """dill's pickle of another function under the view's name: calling it writes ``marker``."""
    namespace: dict[str, object] = {}
    exec(compile(  # noqa: S102 - the test builds the tampered code it then shows is never run
        f"def {VIEW}(inputs):\n"
        f"    open({str(marker)!r}, 'w').write('ran')\n"
        "    return {k: [999.0 for _ in inputs['amount']] for k in\n"
        "            ('log_amount', 'amount_to_mean_28d', 'amount_to_max_28d', 'is_online',\n"
        "             'is_night')}\n", "tampered.py", "exec"), namespace)
    function = namespace[VIEW]
    function.__module__ = "__main__"  # as Feast's decorator does before pickling
    return dill.dumps(function, recurse=True)


class WritesAMarker:
    """Unpickling it writes a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "unpickled"))


def transformed(http: httpx.Client) -> dict[str, object]:
    response = http.post("/predict", params={"include_features": "true"}, json=ROW)
    assert response.status_code == 200, response.text
    return {k: v["value"] for k, v in response.json()["features"].items()
            if k.startswith(VIEW + "__")}


def wait_for_catalog_code(http: httpx.Client, needle: str) -> str:
    deadline = time.monotonic() + 15
    while True:
        code = http.get(FEATURE_API).json()["view"]["transformation"]["code"]
        if needle in code:
            return code
        assert time.monotonic() < deadline, "the catalog never showed the changed registry"
        time.sleep(0.2)


def test_a_registry_whose_pickled_body_is_other_code_is_refused_at_start(demo, tmp_path):
    settings = serve_a_copy(demo, tmp_path)
    marker = tmp_path / "tampered-code-ran"
    text = stored_text(settings)
    rewrite_view(settings, body=other_function_body(marker))  # its text kept as it was
    assert stored_text(settings) == text

    with pytest.raises(TransformationError, match=f"on-demand view {VIEW}: its pickled body is "
                       r"not its source text compiled \(transaction_features: its \w+ differs"):
        resolve_service(open_store(settings), settings.feature_service)

    process = ServeProcess(serve_env(settings, model_path=demo.model.directory,
                                     database_url=settings.resolved_database_url),
                           log_path=tmp_path / "serve.log")
    with pytest.raises(RuntimeError, match="skewless serve exited"):
        process.start()
    assert process.wait() == 1
    log = process.log_path.read_text()
    assert f"error: on-demand view {VIEW}: its pickled body is not its source text compiled" in log
    assert "Re-run `feast apply` here" in log and "Traceback" not in log
    assert not marker.exists()

    # `feast apply` writes a registry whose body is its text compiled: served again.
    run_feast(settings, "apply")
    assert resolve_service(open_store(settings), settings.feature_service).fingerprint == \
        demo.model.contract.fingerprint


def test_the_served_transformation_stays_while_the_registry_changes(demo, tmp_path):
    settings = serve_a_copy(demo, tmp_path)
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        before = transformed(http)
        assert before[f"{VIEW}__log_amount"] == pytest.approx(2.6026896854443837)  # log1p(12.5)
        # A new transformation, applied the way a team applies one, while the app serves.
        on_demand = settings.repo_path / "on_demand.py"
        on_demand.write_text(on_demand.read_text().replace(
            "math.log1p(max(a, 0.0))", "1000.0 * a"))
        run_feast(settings, "apply")
        assert "1000.0 * a" in stored_text(settings)
        # The catalog shows what the registry now holds ...
        wait_for_catalog_code(http, "1000.0 * a")
        # ... the predictor keeps running what its model was trained with.
        assert transformed(http) == before
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["model_version"] == \
            demo.model.contract.version

    # Started again on the changed registry, the model is refused: its fingerprint covers
    # the old text.
    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert f"definitions fingerprint differs (changed views: {VIEW})" in ready.text
        assert http.post("/predict", json=ROW).status_code == 503


def test_the_catalog_shows_a_changed_registry_without_running_its_code(demo, tmp_path):
    settings = serve_a_copy(demo, tmp_path)
    defined, unpickled = tmp_path / "text-ran", tmp_path / "body-unpickled"
    text = stored_text(settings)
    signature = "def transaction_features(inputs: dict[str, Any])"
    assert signature in text
    # A text whose definition writes a file: Feast runs an on-demand view's text first.
    runs_when_defined = text.replace(
        signature, f"def transaction_features(inputs: dict[str, Any], _=open({str(defined)!r}, 'w'))")
    # A text that cannot be defined on its own, so Feast unpickles the body instead: a payload.
    falls_back = text.replace(signature, "def transaction_features(inputs, _=no_such_name)")
    payload = pickle.dumps(WritesAMarker(unpickled))

    with app_in_thread(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        served = transformed(http)
        for changed, needle, body in ((runs_when_defined, "_=open(", None),
                                      (falls_back, "no_such_name", payload)):
            rewrite_view(settings, body_text=changed, **({"body": body} if body else {}))
            assert wait_for_catalog_code(http, needle) == changed
            index = http.get("/catalog")
            page = http.get(FEATURE_PAGE)
            view = http.get(f"/api/catalog/feature-views/{VIEW}")
            assert index.status_code == page.status_code == view.status_code == 200
            assert needle in page.text
            assert view.json()["view"]["transformation"]["code"] == changed
            assert transformed(http) == served
        assert not defined.exists() and not unpickled.exists()

    # The registry is live: Feast's own registry API, which the catalog used, runs both.
    store = open_store(settings)
    with contextlib.suppress(Exception):  # what the payload returns is no function
        store.list_on_demand_feature_views()  # the text cannot be defined: the body is loaded
    assert unpickled.read_text() == "unpickled"
    rewrite_view(settings, body_text=runs_when_defined)
    store.list_on_demand_feature_views()  # the text is defined: its default runs
    assert defined.exists()
