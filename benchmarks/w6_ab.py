"""W6 A/B: two checkouts of tunekit against raw Optuna (or Hyperopt), interleaved.

This machine's speed drifts by +-30% within seconds, so a change worth a few percent of W6
cannot be seen by running ``w6_searchers.py`` once before and once after it. This script runs,
``--pairs`` times (seeds 0-4 in turn), in fresh processes: the raw library, then the run of
each checkout (their order alternating), and reports

- per checkout, the median of raw/checkout rate ratios of runs made seconds apart;
- for two checkouts, the median of their paired wall-time differences and how often the
  second was faster (a sign test's count).

A checkout is a directory holding tunekit's sources (``tunekit_core``, ``tunekit``,
``plugins/*``), e.g. a ``git worktree`` of an older commit; ``.`` is this repository. Each
run is ``w6_searchers.py``'s (``measure``: a fresh process of this interpreter, with its
installed libraries), the checkout's sources put first on ``PYTHONPATH``. Experiment
directories go to ``--storage`` (default: the home directory, as for ``w6_searchers.py``) and
are removed.

Usage (from the repository root)::

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/w6_ab.py --pairs 30 /tmp/before .
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import w6_searchers as w6  # noqa: E402 - the runs themselves, as in W6


def _pythonpath(checkout: str) -> dict:
    """The environment that makes a run import ``checkout``'s tunekit (none for this one)."""
    root = Path(checkout).resolve()
    if root == REPO:
        return {}
    paths = [str(root), *sorted(glob.glob(str(root / "plugins" / "*")))]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def _one(framework: str, checkout: str, library: str, seed: int, storage: str) -> float:
    result = w6.measure(library, framework, seed, 200, ray_python="", storage=storage,
                        extra_env=_pythonpath(checkout))
    return result["wall_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="+", help="directories of tunekit checkouts ('.' = this one)")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--library", choices=("optuna", "hyperopt"), default="optuna")
    parser.add_argument("--storage", default=os.path.expanduser("~"))
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="tunekit-w6ab-", dir=args.storage)
    walls: dict[str, list[float]] = {c: [] for c in args.checkouts}
    raws: list[float] = []
    try:
        for i in range(args.pairs):
            seed = i % 5
            raws.append(_one("raw", ".", args.library, seed, scratch))
            order = args.checkouts if i % 2 == 0 else args.checkouts[::-1]
            for checkout in order:
                walls[checkout].append(_one("tunekit", checkout, args.library, seed, scratch))
            print(f"pair {i + 1}/{args.pairs}: raw {raws[-1] * 1000:.0f} ms, "
                  + ", ".join(f"{c} {walls[c][-1] * 1000:.0f} ms" for c in args.checkouts),
                  flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary: dict = {"pairs": args.pairs, "library": args.library, "checkouts": {}}
    for checkout in args.checkouts:
        ratios = [r / t for r, t in zip(raws, walls[checkout])]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        median = statistics.median(ratios)
        summary["checkouts"][checkout] = {"ratio_median": median, "ratio_quartiles": [q1, q3]}
        print(f"{checkout}: tunekit/raw trials/s, median of {len(ratios)} pairs {median:.3f} "
              f"(quartiles {q1:.3f}-{q3:.3f}); wall median {statistics.median(walls[checkout]) * 1000:.0f} "
              f"ms, raw {statistics.median(raws) * 1000:.0f} ms")
    if len(args.checkouts) == 2:
        a, b = args.checkouts
        diffs = [(y - x) * 1000 for x, y in zip(walls[a], walls[b])]
        faster = sum(d < 0 for d in diffs)
        summary["paired_ms_median"] = statistics.median(diffs)
        print(f"{b} - {a}: paired wall difference, median {statistics.median(diffs):+.0f} ms; "
              f"{b} faster in {faster} of {len(diffs)} pairs")
    print("AB_SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
