"""``tunekit ls`` and ``tunekit best`` on real experiment directories."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

import tunekit as tune
from tunekit_core import cli


def train(config):
    if config["x"] == 5:
        raise RuntimeError("x=5 fails")
    for step in range(1, 4):
        loss = (config["x"] - 2) ** 2 + config["x"] / 10 + 1.0 / step
        tune.report({"loss": loss, "acc": 1.0 / (1 + loss)},
                    checkpoint=tune.Checkpoint.from_dict({"step": step}))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    analysis = tune.run(
        train, config={"x": tune.grid_search([0, 1, 2, 3, 5]), "fixed": "a"}, verbose=0,
        local_dir=str(root), name="exp", raise_on_failed_trial=False, metric="loss", mode="min",
    )
    return analysis


def _main(args, capsys):
    status = cli.main(args)
    out = capsys.readouterr().out
    return status, out


def test_ls_table_lists_every_trial(experiment, capsys):
    status, out = _main(["ls", experiment.experiment_path], capsys)
    assert status == 0
    lines = out.splitlines()
    header = [c.strip() for c in lines[1].strip("|").split("|")]
    assert header[:4] == ["trial_id", "name", "status", "config/x"]
    assert "loss" in header and "acc" in header and "training_iteration" in header
    assert "config/fixed" not in header  # only searched parameters
    assert lines[-1] == "5 trial(s)"
    statuses = sorted(line.split("|")[3].strip() for line in lines if line.startswith("| ") and
                      "trial_id" not in line)
    assert statuses == ["ERROR", "TERMINATED", "TERMINATED", "TERMINATED", "TERMINATED"]


def test_ls_sort_filter_and_csv(experiment, capsys):
    status, out = _main(
        ["ls", experiment.experiment_path, "--sort=-loss", "--filter", "status == TERMINATED",
         "--filter", "x >= 1", "--output", "csv", "--columns", "trial_id,x,loss,logdir"], capsys
    )
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["config/x"]) for r in rows] == [3, 1, 2]  # loss 1.63, 1.43, 0.53: descending
    assert all(os.path.isdir(r["logdir"]) for r in rows)
    _, out = _main(["ls", experiment.experiment_path, "--sort", "loss", "--limit", "2",
                    "--output", "json"], capsys)
    records = json.loads(out)
    assert [r["config/x"] for r in records] == [2, 1]
    assert records[0]["loss"] == pytest.approx(0.2 + 1 / 3)
    _, out = _main(["ls", experiment.experiment_path, "--sort", "loss", "--desc",
                    "--output", "json"], capsys)
    # the failed trial reported nothing: missing values come last either way
    assert [r["config/x"] for r in json.loads(out)] == [0, 3, 1, 2, 5]


def test_ls_errors_name_the_problem(experiment, tmp_path):
    with pytest.raises(SystemExit, match="cannot filter on 'nope'.*the columns are: trial_id"):
        cli.main(["ls", experiment.experiment_path, "--filter", "nope > 1"])
    with pytest.raises(SystemExit, match="Cannot parse the filter 'loss'"):
        cli.main(["ls", experiment.experiment_path, "--filter", "loss"])
    with pytest.raises(SystemExit, match="is not a directory"):
        cli.main(["ls", str(tmp_path / "missing")])


def test_best_prints_config_and_best_checkpoint(experiment, capsys):
    status, out = _main(["best", experiment.experiment_path, "--metric", "loss", "--mode", "min",
                         "--json"], capsys)
    assert status == 0
    record = json.loads(out)
    best = experiment.get_best_trial("loss", "min")
    assert record["trial_id"] == best.trial_id and record["config"]["x"] == 2
    assert record["value"] == pytest.approx(0.2 + 1 / 3)
    expected = experiment.get_best_checkpoint(best, "loss", "min")
    assert record["checkpoint"] == os.fspath(expected)
    assert tune.Checkpoint(record["checkpoint"]).to_dict()["step"] == 3
    _, text = _main(["best", experiment.experiment_path, "--metric", "acc", "--mode", "max",
                     "--scope", "avg"], capsys)
    assert text.splitlines()[0].startswith(f"Best trial: {best}")
    accs = [1 / (1 + 0.2 + 1 / step) for step in (1, 2, 3)]
    label, value = text.splitlines()[1].split(": ")
    assert label == "acc (avg)" and float(value) == pytest.approx(sum(accs) / 3)
    with pytest.raises(SystemExit, match="No trial reported the metric 'nope'"):
        cli.main(["best", experiment.experiment_path, "--metric", "nope", "--mode", "min"])


def test_the_installed_command(experiment):
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "tunekit"), "ls",
         experiment.experiment_path, "--output", "json"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 5
