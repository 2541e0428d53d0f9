"""``python -m skewless.artifact_check``: the child process that parses a new artefact first.

LightGBM's text parser is C++ with open out-of-bounds reports on untrusted input, and a
malformed tree can make it abort the whole process (a ``Log::Fatal`` inside an OpenMP loop
ends in ``std::terminate``). So before any serving process parses an artefact, this child
does exactly what loading does (:func:`skewless.artifact.load_artifact`: the model file read
once under ``SKEWLESS_MODEL_MAX_BYTES``, the sha256 of those bytes checked, those bytes
parsed) and scores two rows, with its data memory limited to
``SKEWLESS_MODEL_CHECK_MEMORY_BYTES`` beyond its imports (RLIMIT_DATA). The parent side,
with the time limit and the reasons, is :func:`skewless.artifact.check_artifact`.

Only the standard library is imported at module level: LightGBM's optional integrations must
be kept out before LightGBM is imported.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

RESULT = "skewless-artifact-check: "  # the child's line on stdout when the check passed
REFUSED = "skewless-artifact-refused: "  # its line on stderr when it refused the artefact
# LightGBM's optional integrations, none needed to parse a model and score a matrix: kept out
# of the child, which then starts in half a second instead of two (scikit-learn alone is 1.4 s).
OPTIONAL_LIBRARIES = ("sklearn", "pandas", "pyarrow", "dask", "matplotlib", "graphviz",
                      "cffi", "datatable")


def _status(field: str) -> int | None:
    """A memory figure of this process in bytes (``/proc/self/status``; Linux only)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) * 1024 for line in status.splitlines()
                 if line.startswith(f"{field}:")), None)


def limit_memory(budget: int) -> str:
    """Allow ``budget`` more bytes of data memory than now (imports done); Linux only."""
    import resource

    used = _status("VmData")
    if used is None:
        return "not limited (no /proc/self/status)"
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = used + budget if hard == resource.RLIM_INFINITY else min(used + budget, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return f"{limit:,} bytes of data (RLIMIT_DATA)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skewless.artifact_check",
                                     description="Read, hash, parse and score a model artefact.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--version")
    args = parser.parse_args(argv)

    for name in OPTIONAL_LIBRARIES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # its import fails: skipped
    import lightgbm as lgb
    import numpy as np

    from skewless.artifact import ArtifactError, load_artifact

    memory = limit_memory(args.memory_bytes)
    started = time.perf_counter()
    try:
        artifact = load_artifact(args.directory, args.max_bytes, args.sha256)
        if args.version is not None and artifact.version != args.version:
            raise ArtifactError(f"{args.directory} holds version {artifact.version}, not "
                                f"{args.version}")
        parsed = time.perf_counter()
        booster = artifact.booster
        rows = np.zeros((2, booster.num_feature()))
        rows[0] = np.nan  # the all-missing row, and all zeros
        scores = np.asarray(booster.predict(rows, num_threads=1), dtype=float).ravel()
    except (ArtifactError, lgb.basic.LightGBMError) as exc:
        sys.stderr.write(REFUSED + " ".join(str(exc).split()) + "\n")
        return 2
    except MemoryError:
        sys.stderr.write(f"{REFUSED}the check ran out of memory: the model in {args.directory} "
                         f"needs more than the {args.memory_bytes:,} bytes of data "
                         "SKEWLESS_MODEL_CHECK_MEMORY_BYTES allows\n")
        return 3
    sys.stdout.write(RESULT + json.dumps({
        "sha256": args.sha256, "version": artifact.version, "lightgbm": lgb.__version__,
        "trees": booster.num_trees(), "features": booster.num_feature(),
        "parse_seconds": round(parsed - started, 3),
        # A score may be NaN (the predictor refuses such a model itself): kept as text.
        "smoke_scores": [float(s) if math.isfinite(s) else str(s) for s in scores],
        # VmHWM, not ru_maxrss: the latter counts the parent's memory at the fork.
        "peak_rss_bytes": _status("VmHWM"),
        "memory_limit": memory,
    }) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
