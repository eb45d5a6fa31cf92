"""The scheduler examples under examples/ run, in their small ``--smoke`` form.

Each one is a separate process, as a user runs it; its results go to a temporary
directory (``TUNEKIT_RESULTS_DIR``). Bytecode caching is switched on for them (some
environments switch it off): every worker process imports sklearn, which otherwise
costs seconds per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# example -> lines its output must contain
SCHEDULER_EXAMPLES = {
    "asha_digits.py": ["Best validation accuracy: ", "Total epochs trained: "],
    "hyperband_digits.py": ["Using HyperBand", "Best validation accuracy: ", "Total epochs trained: "],
    "median_stopping_digits.py": ["Best validation accuracy: ", "Total epochs trained: "],
    "hb_bohb_digits.py": ["Using HyperBand", "budgets reached [1", "Searcher calls: on_pause"],
    "resource_changing_forest.py": ["CPUs of each trial", "Best validation accuracy: "],
    "pbt_toy.py": ["Best p with PBT: ", "Replaying that schedule gives p = "],
    "pb2_toy.py": ["Best p with PB2: ", "exploits:"],
}


def test_every_scheduler_example_is_listed():
    docs = Path(__file__).resolve().parents[1] / "docs" / "schedulers"
    linked = {name for page in docs.glob("*.md") for name in SCHEDULER_EXAMPLES
              if f"examples/{name}" in page.read_text()}
    assert linked == set(SCHEDULER_EXAMPLES)  # each one is shown on its scheduler's page


@pytest.mark.parametrize("example", sorted(SCHEDULER_EXAMPLES))
def test_scheduler_example_runs(example, tmp_path):
    env = dict(os.environ, TUNEKIT_RESULTS_DIR=str(tmp_path))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run([sys.executable, str(EXAMPLES / example), "--smoke"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for expected in SCHEDULER_EXAMPLES[example]:
        assert expected in proc.stdout, (expected, proc.stdout)
    assert list(tmp_path.iterdir())  # its results went to TUNEKIT_RESULTS_DIR
