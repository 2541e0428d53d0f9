"""The wheel carries what a non-editable install needs: migrations and templates.

The wheel is built from a copy of the sources and installed without its dependencies into a
fresh venv, which borrows them from this one through a .pth file naming this venv's
site-packages (a directory named in a .pth file is not scanned for .pth files of its own, so
the editable finder installed there for Skewless never loads). From a directory outside the
checkout, with every setting pointing into a temporary directory, the installed
`skewless` applies a copy of the feature repo, migrates the database and serves the catalog.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import httpx
import pytest

from skewless.db import alembic_config
from skewless.embedded_redis import free_port
from skewless.settings import PROJECT_ROOT
from tests.support.demo import copy_feature_repo

pytestmark = pytest.mark.slow

SOURCES = ("pyproject.toml", "README.md", "skewless", "service", "training")
FEATURE = "amount_mean_28d"


def build_wheel(target: Path) -> Path:
    """The wheel, built from a copy of the sources (no build/ or egg-info in the checkout)."""
    source = target / "source"
    for name in SOURCES:
        path = PROJECT_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, source / name)
    # Without a wheel-building setuptools here, pip builds in an isolated environment with the
    # backend pyproject.toml asks for.
    can_build_here = (importlib.util.find_spec("setuptools.command.bdist_wheel") is not None
                      or importlib.util.find_spec("wheel") is not None)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir",
         str(target / "dist"), *(["--no-build-isolation"] if can_build_here else []), str(source)],
        capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (target / "dist").glob("skewless-*.whl")
    return wheel


def fresh_venv(root: Path, wheel: Path) -> Path:
    """A venv holding only the wheel, its dependencies read from this venv; its bin/."""
    venv.create(root, with_pip=False, symlinks=True)
    python = root / "bin" / "python"
    # pip runs from this venv against the fresh one, which sees nothing else yet.
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--quiet", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.stdout.strip()) / "skewless-dependencies.pth").write_text(
        "\n".join(sorted(shared)) + "\n")
    return root / "bin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("wheel")
    bin_dir = fresh_venv(root / "venv", build_wheel(root / "build"))
    work = root / "work"  # the cwd: outside the checkout
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith("SKEWLESS_")}
    env.update({
        # Dependencies' own commands (`feast`) live beside this interpreter, not in the fresh venv.
        "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                                 env.get("PATH", "/usr/bin:/bin")]),
        "FEAST_USAGE": "False",
        "SKEWLESS_DATABASE_URL": f"sqlite:///{root / 'var' / 'skewless.db'}",
        "SKEWLESS_VAR_DIR": str(root / "var"),
        "SKEWLESS_REPO_PATH": str(copy_feature_repo(root / "feature_repo")),
    })
    return {"bin": bin_dir, "env": env, "cwd": work, "root": root}


def run(installed: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(installed["bin"] / args[0]), *args[1:]], env=installed["env"],
                          cwd=installed["cwd"], capture_output=True, text=True, timeout=300)


def test_the_packages_come_from_the_fresh_venv(installed):
    found = run(installed, "python", "-c",
                "import service, skewless, training; "
                "print(skewless.__file__, service.__file__, training.__file__)")
    assert found.returncode == 0, found.stderr
    for path in found.stdout.split():
        assert Path(path).is_relative_to(installed["root"] / "venv"), found.stdout
        assert not Path(path).is_relative_to(PROJECT_ROOT)


def test_the_installed_cli_migrates_and_serves_the_catalog(installed):
    applied = run(installed, "skewless", "apply")  # an embedded redis-server for the command
    assert applied.returncode == 0, applied.stdout + applied.stderr

    upgraded = run(installed, "skewless", "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert f"metadata database at revision {head}" in upgraded.stdout

    port = free_port()
    log = installed["root"] / "catalog.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(installed["bin"] / "skewless"), "catalog", "serve", "--host", "127.0.0.1",
             "--port", str(port)], env=installed["env"], cwd=installed["cwd"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/catalog", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert page.status_code == 200, page.text[-2000:]
        assert page.headers["content-type"].startswith("text/html")
        assert FEATURE in page.text
    finally:
        server.terminate()
        server.wait(timeout=60)
