"""Feast's own UI on the repo: `feast ui` starts, and its registry API (what the UI's pages
read, Feast's registry server behind REST at /api/v1) lists what the registry file holds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from skewless.embedded_redis import free_port
from skewless.settings import feast_process_env

STARTUP_SECONDS = 120


def registry_proto(path: Path):
    from feast.protos.feast.core.Registry_pb2 import Registry

    registry = Registry()
    registry.ParseFromString(path.read_bytes())
    return registry


def wait_until_up(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"feast ui exited {process.returncode}:\n{log.read_text()}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"feast ui not up in {STARTUP_SECONDS} s:\n{log.read_text()}")


def test_feast_ui_serves_the_repos_registry(demo, tmp_path):
    settings = demo.settings
    registry = registry_proto(settings.data_dir / "registry.db")
    project = settings.repo_path.joinpath("feature_store.yaml").read_text() \
        .split("project:", 1)[1].split()[0]
    expected_views = sorted(
        [("featureView", v.spec.name) for v in registry.feature_views if v.spec.project == project]
        + [("onDemandFeatureView", v.spec.name) for v in registry.on_demand_feature_views
           if v.spec.project == project]
        + [("streamFeatureView", v.spec.name) for v in registry.stream_feature_views
           if v.spec.project == project])
    expected_services = sorted(s.spec.name for s in registry.feature_services
                               if s.spec.project == project)
    assert len(expected_views) >= 4 and settings.feature_service in expected_services

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    feast = Path(sys.executable).with_name("feast")
    log = tmp_path / "feast-ui.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(feast), "-c", str(settings.repo_path), "ui", "--host", "127.0.0.1",
             "--port", str(port)],
            stdout=output, stderr=subprocess.STDOUT, env=feast_process_env(settings.redis))
    try:
        wait_until_up(process, f"{base}/health", log)
        views = httpx.get(f"{base}/api/v1/feature_views", params={"project": project},
                          timeout=30)
        assert views.status_code == 200, views.text
        assert sorted((v["type"], v["spec"]["name"]) for v in views.json()["featureViews"]) \
            == expected_views
        services = httpx.get(f"{base}/api/v1/feature_services", params={"project": project},
                             timeout=30)
        assert services.status_code == 200, services.text
        assert sorted(s["spec"]["name"] for s in services.json()["featureServices"]) \
            == expected_services
        projects = httpx.get(f"{base}/projects-list.json", timeout=30).json()["projects"]
        assert [p["id"] for p in projects] == [project]
        page = httpx.get(f"{base}/", timeout=30)  # the UI itself, which reads the above
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
