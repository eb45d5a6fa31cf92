"""The README's quickstart: examples/quickstart.py runs a real tuning run and prints its results."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import tunekit as tune

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_example_prints_the_best_config_and_a_results_table(tmp_path):
    # As the README's first command runs it (`uv run --all-extras python
    # examples/quickstart.py`), from the repository root, with results under tmp_path.
    proc = subprocess.run(
        [sys.executable, "examples/quickstart.py"],
        cwd=ROOT,
        env=dict(os.environ, TUNEKIT_RESULTS_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout

    best = re.search(r"^Best config: (\{.*\})$", out, re.MULTILINE)
    assert best, out
    best_config = ast.literal_eval(best.group(1))
    assert set(best_config) == {"lr", "momentum"}
    assert 1e-3 <= best_config["lr"] <= 3e-1 and best_config["momentum"] in (0.0, 0.5, 0.9)
    best_mse = float(re.search(r"^Best mse: (\S+)$", out, re.MULTILINE).group(1))

    # the results table: a header and one row per trial (3 grid points x 4 samples), by mse
    lines = out.splitlines()
    headers = [
        i for i, line in enumerate(lines)
        if line.split() == ["config/momentum", "config/lr", "mse", "training_iteration"]
    ]
    assert len(headers) == 1, f"no results table in the output:\n{out}"
    header_at = headers[0]
    body = lines[header_at + 1:]
    if body and body[0].split() == ["trial_id"]:  # the index's name, on a line of its own
        body = body[1:]
    rows = [line.split() for line in body[:12]]
    assert len(rows) == 12 and all(len(row) == 5 for row in rows), rows
    mses = [float(row[3]) for row in rows]
    assert mses == sorted(mses) and round(mses[0], 5) == best_mse
    assert [int(row[4]) for row in rows] == [25] * 12  # stop={"training_iteration": 25}
    assert sorted(float(row[1]) for row in rows).count(0.9) == 4

    # the experiment went where TUNEKIT_RESULTS_DIR points, and reads back the same
    assert f"Results in {tmp_path / 'quickstart'}" in out
    analysis = tune.ExperimentAnalysis(str(tmp_path / "quickstart"), default_metric="mse",
                                       default_mode="min")
    assert len(analysis.trials) == 12
    assert analysis.best_config["lr"] == best_config["lr"]
