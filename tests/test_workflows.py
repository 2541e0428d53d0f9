"""What a team adopts as its CI/CD and scheduling: the GitHub Actions workflow passes
actionlint, and every make target and `skewless` command it (and the example Airflow DAG)
calls exists, with the options it passes."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from typer.main import get_command

from skewless.cli import app
from skewless.jobs import JOBS

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
DAG = ROOT / "examples" / "airflow" / "skewless_loop.py"
ACTIONLINT = Path(sys.executable).with_name("actionlint")


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z][\w-]*):", text, re.MULTILINE))


def run_scripts() -> list[str]:
    scripts = []
    for path in WORKFLOWS:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            scripts += [step["run"] for step in job.get("steps", []) if "run" in step]
    return scripts


def commands(script: str) -> list[list[str]]:
    """Each simple command of a shell script, as words: split at operators, pipes and
    command substitutions, continuations joined."""
    lexer = shlex.shlex(script.replace("\\\n", " ").replace("$(", "; "), posix=True,
                        punctuation_chars=";&|()\n")
    lexer.whitespace = " \t"
    lexer.commenters = "#"
    found, words = [], []
    for token in lexer:
        if token and set(token) <= set(";&|()\n"):
            if words:
                found.append(words)
            words = []
        else:
            words.append(token)
    if words:
        found.append(words)
    return found


def unprivileged(words: list[str]) -> list[str]:
    """The command ``sudo [options] [env VAR=value ...]`` runs."""
    if words[0] != "sudo":
        return words
    rest = [w for w in words[1:] if not w.startswith("-") and w != ","]
    while rest and (rest[0] == "env" or "=" in rest[0] or rest[0].isupper()):
        rest.pop(0)
    return rest


def check_skewless(words: list[str]) -> None:
    """``words`` after ``skewless`` name a command of the CLI, with options it has."""
    group: Any = get_command(app)
    args = list(words)
    while hasattr(group, "commands") and args and args[0] in group.commands:
        group = group.commands[args.pop(0)]
    assert not hasattr(group, "commands"), f"`skewless {' '.join(words)}` is a group"
    options = {opt for param in group.params for opt in param.opts + param.secondary_opts}
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=")[0] in options, f"`skewless {' '.join(words)}`: no {arg}"


def test_the_workflows_pass_actionlint():
    assert WORKFLOWS, "no workflow"
    linted = subprocess.run([str(ACTIONLINT), *map(str, WORKFLOWS)], cwd=ROOT,
                            capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_actionlint_refuses_a_broken_workflow(tmp_path):
    """The check can fail: an unknown job in `needs` and an undefined expression."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text("on: push\njobs:\n  a:\n    needs: [nope]\n    runs-on: ubuntu-24.04\n"
                      "    steps:\n      - run: echo ${{ matrix.nothing }}\n")
    linted = subprocess.run([str(ACTIONLINT), str(broken)], cwd=tmp_path, capture_output=True,
                            text=True)
    assert linted.returncode == 1
    assert "nope" in linted.stdout and "matrix" in linted.stdout


def test_every_make_target_and_command_the_workflow_calls_exists():
    targets = make_targets()
    called_make = called_skewless = called_bash = 0
    for script in run_scripts():
        for words in map(unprivileged, commands(script)):
            if words[0] == "make":
                for target in (w for w in words[1:] if "=" not in w and not w.startswith("-")):
                    assert target in targets, f"make {target}: no such target"
                    called_make += 1
            elif words[0].endswith("skewless"):
                check_skewless(words[1:])
                called_skewless += 1
            elif words[0] == "bash":
                assert (ROOT / words[1]).is_file(), words
                called_bash += 1
    assert called_make and called_bash and called_skewless >= 6
    # The data job restores what the model files and the database are, where they are.
    data = yaml.safe_load(WORKFLOWS[0].read_text())["jobs"]["data"]
    kept = [step["with"]["path"].split() for step in data["steps"]
            if str(step.get("uses", "")).startswith("actions/cache/")]
    assert kept and all(paths == ["var/skewless.db", "var/models"] for paths in kept)


def test_the_airflow_dag_runs_each_job_through_skewless(monkeypatch):
    tree = ast.parse(DAG.read_text())
    template = next(node.value for node in ast.walk(tree) if isinstance(node, ast.keyword)
                    and node.arg == "bash_command")
    assert isinstance(template, ast.JoinedStr)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", None) == "job"]
    names = [call.args[1].value for call in calls]
    assert sorted(names) == sorted(JOBS)
    for name in names:  # the command each task runs, with its slot
        check_skewless(["jobs", "run", name, "--slot", "2026-12-04T06:00:00+00:00"])
    source = ast.get_source_segment(DAG.read_text(), template)
    assert "jobs run {name} --slot" in source and "data_interval_end" in DAG.read_text()

