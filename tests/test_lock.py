"""The locks agree with pyproject.toml, so a dependency changed without `make lock` fails.

pyproject.toml keeps ranges (for whoever installs Skewless as a library); `make install` and CI
install the exact, hashed versions of requirements.lock (with the dev extra), the image those
of requirements-runtime.lock (no extra, the same versions). These tests read the files: every
direct dependency is pinned within its range, nothing is pinned as direct that pyproject no
longer asks for, the lock holds exactly the closure of pyproject's requirements with their
extras, and the heavy engines stay out of both.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from skewless.settings import PROJECT_ROOT

# Each lock and the extras of pyproject.toml it holds (the Makefile's `lock` target).
LOCKS = {"requirements.lock": ("dev",), "requirements-runtime.lock": ()}
PROJECT = "skewless (pyproject.toml)"  # how uv names pyproject.toml as a package's reason
# Engines that must never ride along in a default install (an extra with a lock of its own).
HEAVY = ("pyspark", "mlflow", "ray", "torch", "tensorflow")
# The platform `make lock` resolves for (--python-version 3.11 means 3.11.0 to uv).
TARGET = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}


@dataclass
class Lock:
    path: Path
    extras: tuple[str, ...]
    pins: dict[str, Pin]

    def requirements(self) -> list[Requirement]:
        """The direct requirements pyproject.toml asks this lock to satisfy."""
        project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
        asked = list(project["dependencies"])
        for extra in self.extras:
            asked += project["optional-dependencies"][extra]
        return [Requirement(r) for r in asked]


@dataclass
class Pin:
    version: str
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def read_lock(path: Path) -> dict[str, Pin]:
    """uv's requirements format: `name==version \\`, `--hash=…` lines, then `# via …` lines."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in path.read_text().splitlines():
        if pin := re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", line):
            current = pins[canonicalize_name(pin[1])] = Pin(pin[2])
        elif current is None:
            continue
        elif digest := re.match(r"^\s+--hash=(sha256:[0-9a-f]{64})", line):
            current.hashes.append(digest[1])
        elif reason := re.match(r"^\s+#\s+(?:via\s+)?(\S.*)$", line):
            current.via.append(reason[1].strip())
    return pins


@pytest.fixture(scope="module", params=sorted(LOCKS), ids=str)
def lock(request) -> Lock:
    path = PROJECT_ROOT / request.param
    assert path.is_file(), f"{request.param} is missing: run `make lock`"
    return Lock(path, LOCKS[request.param], read_lock(path))


def test_every_direct_dependency_is_locked_within_its_range(lock):
    stale = []
    for requirement in lock.requirements():
        pinned = lock.pins.get(canonicalize_name(requirement.name))
        if pinned is None or not requirement.specifier.contains(pinned.version, prereleases=True):
            stale.append(f"{requirement} (locked: {pinned.version if pinned else 'nothing'})")
    assert stale == [], "pyproject.toml changed without `make lock`: " + ", ".join(stale)


def test_the_lock_pins_nothing_as_direct_that_pyproject_does_not_ask_for(lock):
    asked = {canonicalize_name(r.name) for r in lock.requirements()}
    direct = {name for name, pinned in lock.pins.items() if PROJECT in pinned.via}
    assert sorted(direct ^ asked) == [], "run `make lock`"


def test_the_lock_holds_exactly_what_pyproject_needs_within_every_range(lock):
    """The closure of pyproject's requirements (with their extras, and the extras those ask
    for: feast[grpcio], psycopg[binary], …) walked through the metadata of the installed
    distributions, which `make install` made the locked versions: nothing missing, nothing
    stale (say, an extra dropped from pyproject), every locked version within every range."""
    environment = {**default_environment(), **TARGET}
    reached: set[str] = set()
    walked: set[tuple[str, str]] = set()  # (distribution, extra or "") whose needs are queued
    problems: list[str] = []
    wanted = [(r, "pyproject.toml") for r in lock.requirements()]
    while wanted:
        requirement, wanted_by = wanted.pop()
        name = canonicalize_name(requirement.name)
        pinned = lock.pins.get(name)
        if pinned is None or not requirement.specifier.contains(pinned.version, prereleases=True):
            problems.append(f"{wanted_by} needs {requirement} (locked: "
                            f"{pinned.version if pinned else 'nothing'})")
            continue
        reached.add(name)
        extras = ({""} | requirement.extras) - {extra for n, extra in walked if n == name}
        if not extras:
            continue
        try:
            installed = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is locked but not installed: run `make install`")
        if installed.version != pinned.version:
            pytest.fail(f"{name} {installed.version} is installed, {pinned.version} locked: "
                        "run `make install`")
        offered = set(installed.metadata.get_all("Provides-Extra") or [])
        problems += [f"{name} has no extra {extra!r}" for extra in sorted(extras - offered - {""})]
        for extra in extras:
            walked.add((name, extra))
            for dependency in map(Requirement, installed.requires or []):
                if dependency.marker is None and extra == "" or dependency.marker is not None \
                        and dependency.marker.evaluate({**environment, "extra": extra}):
                    wanted.append((dependency, f"{name}[{extra}]" if extra else name))
    assert problems == [], "run `make lock`: " + "; ".join(problems)
    stale = sorted(set(lock.pins) - reached)
    assert stale == [], "run `make lock`: locked, needed by nothing: " + ", ".join(stale)


def test_every_locked_package_is_pinned_with_hashes(lock):
    assert len(lock.pins) > 50
    assert [name for name, pinned in lock.pins.items() if not pinned.hashes] == []
    assert lock.path.read_text().splitlines()[1].strip() == "#    make lock"


def test_the_image_installs_the_versions_make_install_does():
    development = read_lock(PROJECT_ROOT / "requirements.lock")
    runtime = read_lock(PROJECT_ROOT / "requirements-runtime.lock")
    assert set(runtime) < set(development)
    assert {n: p.version for n, p in runtime.items() if p.version != development[n].version} == {}
    assert {"pytest", "mypy", "ruff", "selenium", "schemathesis", "uv"}.isdisjoint(
        n for n, p in runtime.items() if PROJECT in p.via)


def test_every_direct_dependency_has_a_floor_and_a_cap():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    declared = [*project["project"]["dependencies"],
                *(r for extra in project["project"]["optional-dependencies"].values() for r in extra),
                *project["build-system"]["requires"]]
    unbounded = [r for r in declared
                 if not any(s.operator in ("<", "<=", "==", "~=") for s in Requirement(r).specifier)
                 or not any(s.operator in (">", ">=", "==", "~=") for s in Requirement(r).specifier)]
    assert unbounded == []


def test_heavy_engines_stay_out_of_the_default_installs(lock):
    assert [name for name in HEAVY if name in lock.pins] == []
    assert [str(r) for r in lock.requirements()
            if r.extras & {"spark", "mlflow", "ray"} or canonicalize_name(r.name) in HEAVY] == []


def test_optional_clients_stay_out_of_the_runtime_install():
    """MLflow's client is the `mlflow` extra: the dev lock carries it for its test, the image
    (requirements-runtime.lock) does not."""
    runtime = read_lock(PROJECT_ROOT / "requirements-runtime.lock")
    assert "mlflow-skinny" in read_lock(PROJECT_ROOT / "requirements.lock")
    assert [name for name in ("mlflow-skinny", "databricks-sdk") if name in runtime] == []
