"""The image and docker-compose.yml, read as files (no Docker engine here): what they deploy.

The image runs as an unprivileged user in production, installs the locked versions and owns
only what it writes; compose publishes neither Redis nor PostgreSQL, keeps Prometheus on the
loopback interface, sets no shared admin token (production takes named ones) and gives the api
the Feast registry read-only.
"""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from skewless.settings import PROJECT_ROOT

ROOT_USERS = {"root", "0"}
REGISTRY = "/app/feature_repo/data"  # where the image's Feast repo keeps registry.db
OUR_IMAGE = "."  # the build context of the services built from the Dockerfile


def built_here(service: dict) -> bool:
    build = service.get("build")
    return build == OUR_IMAGE or (isinstance(build, dict) and build.get("context") == OUR_IMAGE)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = (PROJECT_ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def image_environment() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return env


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each volume, short or long syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            found.append((source, target, "ro" in (mode[0].split(",") if mode else [])))
        else:
            found.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
    return found


def published(service: dict) -> list[tuple[str, str]]:
    """(host address, host port) of each published port; "" is every interface."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((port.get("host_ip", ""), str(port.get("published", ""))))
        else:
            parts = str(port).split(":")
            found.append((parts[0] if len(parts) == 3 else "", parts[-2] if len(parts) > 1 else ""))
    return found


def test_the_image_runs_as_an_unprivileged_user():
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert keywords.count("CMD") == 1 and "ENTRYPOINT" not in keywords
    users = [rest for keyword, rest in instructions[:keywords.index("CMD")] if keyword == "USER"]
    assert users, "no USER before CMD: the image would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in ROOT_USERS and group not in ROOT_USERS


def test_the_image_is_production_and_owns_only_what_it_writes():
    assert image_environment().get("SKEWLESS_ENVIRONMENT") == "production"
    runs = [rest for keyword, rest in dockerfile_instructions() if keyword == "RUN"]
    user = [rest for keyword, rest in dockerfile_instructions() if keyword == "USER"][-1]
    owned = [run for run in runs if f"chown -R {user}" in run]
    assert owned and all(path in owned[0] for path in ("var", "feature_repo/data"))
    assert not any(re.search(r"chown\b.*\s(\.|/app)(\s|$)", run) for run in runs)


def test_the_image_installs_the_locked_runtime_versions():
    runs = [rest for keyword, rest in dockerfile_instructions() if keyword == "RUN"]
    assert any("--require-hashes -r requirements-runtime.lock" in run for run in runs)
    editable = [run for run in runs if "-e ." in run]
    assert editable and "--no-deps" in editable[0]  # nothing unlocked on top
    copied = [rest for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    assert any(c.startswith("requirements-runtime.lock ") and c.endswith(" ./") for c in copied)


def test_redis_and_postgres_are_not_published(compose):
    services = compose["services"]
    assert "ports" not in services["redis"] and "ports" not in services["postgres"]
    assert {name for name, service in services.items() if service.get("ports")} \
        <= {"api", "prometheus"}


def test_prometheus_is_published_on_the_loopback_interface_only(compose):
    assert published(compose["services"]["prometheus"]) == [("127.0.0.1", "9090")]


def test_our_services_are_production_and_set_no_shared_admin_token(compose):
    """The api, the demo and the migration: production, where /admin takes named tokens only,
    so a shared token in the file would be a secret to leak for nothing."""
    ours = {name: service for name, service in compose["services"].items()
            if built_here(service)}
    assert {"api", "demo", "migrate"} <= set(ours)
    for name, service in ours.items():
        assert "SKEWLESS_ADMIN_TOKEN" not in environment(service), name
        assert environment(service).get("SKEWLESS_ENVIRONMENT", "production") == "production"


def test_the_api_is_production(compose):
    api = environment(compose["services"]["api"])
    assert api.get("SKEWLESS_ENVIRONMENT", image_environment().get("SKEWLESS_ENVIRONMENT")) \
        == "production"


def test_the_api_sees_the_feast_registry_read_only_and_logs_where_it_may_write(compose):
    services = compose["services"]
    api = mounts(services["api"])
    registry = [(source, ro) for source, target, ro in api
                if target in (REGISTRY, f"{REGISTRY}/registry.db")]
    assert registry and all(ro for _, ro in registry), api
    # … the registry the demo wrote, in the same place.
    written = {source for source, target, ro in mounts(services["demo"])
               if target == REGISTRY and not ro}
    assert {source for source, _ in registry} <= written
    log_dir = environment(services["api"])["SKEWLESS_FEATURE_LOG_DIR"]
    writable = [target for _, target, ro in api if not ro]
    assert any(log_dir.startswith(target + "/") for target in writable)
    assert not log_dir.startswith(REGISTRY)


def test_named_volumes_hold_the_state_the_image_user_owns(compose):
    """Bind mounts would keep the host's ownership; named volumes start with the image's."""
    for name in ("demo", "api"):
        for source, target, _ in mounts(compose["services"][name]):
            if target.startswith("/app/"):
                assert source in compose["volumes"], (name, source)


def test_the_cluster_profile_joins_its_nodes_and_our_services_wait_for_it(compose):
    services = compose["services"]
    nodes = sorted(name for name, service in services.items()
                   if "--cluster-enabled" in (service.get("command") or []))
    assert len(nodes) == 3
    for name in [*nodes, "redis-cluster"]:
        assert services[name]["profiles"] == ["cluster"], name  # not started by default
        assert not services[name].get("ports"), name
    for name in nodes:  # each announces its own name, its data in a volume of its own
        command = services[name]["command"]
        assert command[command.index("--cluster-announce-hostname") + 1] == name
        assert mounts(services[name]) == [(name, "/data", False)]
    join = " ".join(services["redis-cluster"]["command"])
    assert all(f"getent hosts {name} " in join for name in nodes) and "--cluster create" in join
    for name in ("api", "demo"):
        waits = services[name]["depends_on"]["redis-cluster"]
        assert waits == {"condition": "service_completed_successfully", "required": False}
        env = environment(services[name])
        assert env["SKEWLESS_PROFILE"] == "${SKEWLESS_PROFILE:-local}"
        assert env["SKEWLESS_REDIS"] == "${SKEWLESS_REDIS:-redis:6379}"


def test_the_cluster_profile_runs_spark_on_the_image_built_with_it(compose):
    services = compose["services"]
    for name in ("spark-master", "spark-worker"):
        assert services[name]["profiles"] == ["cluster"], name
        assert built_here(services[name]) and services[name]["build"]["args"]["SPARK"] == "true"
        assert not services[name].get("ports"), name
    assert "org.apache.spark.deploy.master.Master" in services["spark-master"]["command"]
    worker = services["spark-worker"]["command"]
    assert "org.apache.spark.deploy.worker.Worker" in worker
    assert "spark://spark-master:7077" in worker
    # The workers read the feature tables where the demo wrote them.
    written = {(source, target) for source, target, ro in mounts(services["demo"])
               if target == REGISTRY and not ro}
    read = {(source, target) for source, target, _ in mounts(services["spark-worker"])}
    assert written and written <= read
    for name in ("api", "demo"):
        env = environment(services[name])
        assert env["SKEWLESS_SPARK_MASTER"] == "${SKEWLESS_SPARK_MASTER:-local[2]}"
        assert services[name]["build"]["args"]["SPARK"] == "${SKEWLESS_IMAGE_SPARK:-false}"
    # The image installs Java and the Spark lock only when built with SPARK=true.
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "ARG SPARK=false" in dockerfile and "requirements-spark.lock" in dockerfile


def test_the_worker_runs_the_jobs_beside_the_api_and_is_scraped(compose):
    """`skewless worker` from the same image and environment, writing what its jobs write
    (the online store, reports, Feast's registry), stopped with time to record the stop."""
    services = compose["services"]
    worker = services["worker"]
    assert worker["command"] == ["skewless", "worker"]
    assert built_here(worker) and worker["build"] == services["api"]["build"]
    env = environment(worker)
    for key, value in environment(services["api"]).items():
        if key.startswith("SKEWLESS_") and key not in ("SKEWLESS_API_HOST", "SKEWLESS_API_PORT",
                                                       "SKEWLESS_ENVIRONMENT"):
            assert env[key] == value, key
    assert {(source, target, ro) for source, target, ro in mounts(worker)} == {
        ("skewless-var", "/app/var", False), ("feast-data", REGISTRY, False)}
    grace = float(env["SKEWLESS_WORKER_STOP_GRACE_SECONDS"])
    assert float(worker["stop_grace_period"].rstrip("s")) > grace
    assert not worker.get("ports")  # scraped inside the network only
    scrape = yaml.safe_load((PROJECT_ROOT / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in scrape["scrape_configs"]}
    assert targets["skewless-worker"] == [f"worker:{env['SKEWLESS_WORKER_METRICS_PORT']}"]
