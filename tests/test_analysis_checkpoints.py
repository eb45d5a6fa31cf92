"""ExperimentAnalysis checkpoint API: best_checkpoint, get_best_checkpoint,
get_last_checkpoint, get_trial_checkpoints_paths, on live trials and on
experiment directories (moved, database only, JSON snapshot only)."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest

import tunekit as tune
from tunekit import Checkpoint
from tunekit.analysis import ExperimentAnalysis

# Losses chosen so that keep_checkpoints_num=3 with checkpoint_score_attr="min-loss"
# keeps these iterations (the two lowest losses, plus the latest):
#   A: 5 1 4 2 3 6      -> kept 2 (1.0), 4 (2.0), 6 (6.0)
#   B: 4 3 .5 2 7 8 9   -> kept 3 (0.5), 4 (2.0), 7 (9.0)
#   C: 7 7              -> no checkpoints at all
A = [5.0, 1.0, 4.0, 2.0, 3.0, 6.0]
B = [4.0, 3.0, 0.5, 2.0, 7.0, 8.0, 9.0]
C = [7.0, 7.0]
KEPT = {"A": {2: 1.0, 4: 2.0, 6: 6.0}, "B": {3: 0.5, 4: 2.0, 7: 9.0}, "C": {}}


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch):
    monkeypatch.setenv("TUNEKIT_STOP_GRACE_S", "2")


def train(config):
    for i, loss in enumerate(config["spec"]["losses"], start=1):
        checkpoint = Checkpoint.from_dict({"i": i}) if config["spec"]["ckpt"] else None
        tune.report({"loss": loss, "nested": {"acc": -loss}}, checkpoint=checkpoint)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt-analysis")
    analysis = tune.run(
        train,
        name="exp",
        local_dir=str(root),
        config={
            "spec": tune.grid_search(
                [
                    {"name": "A", "losses": A, "ckpt": True},
                    {"name": "B", "losses": B, "ckpt": True},
                    {"name": "C", "losses": C, "ckpt": False},
                ]
            )
        },
        metric="loss",
        mode="min",
        keep_checkpoints_num=3,
        checkpoint_score_attr="min-loss",
        verbose=0,
    )
    return root, analysis


def by_name(analysis):
    return {t.config["spec"]["name"]: t for t in analysis.trials}


def iteration_of(path):
    return int(os.path.basename(os.fspath(path)).split("_")[1])


def check_checkpoint_api(analysis, exp_dir):
    """The same answers whether the analysis holds live trials or records read from disk."""
    trials = by_name(analysis)
    for name, kept in KEPT.items():
        pairs = analysis.get_trial_checkpoints_paths(trials[name])
        assert [(iteration_of(p), v) for p, v in pairs] == list(kept.items())
        for path, _ in pairs:
            assert isinstance(path, str)
            assert path.startswith(os.path.join(exp_dir, "")), path
            assert os.path.isdir(path)
    a, b, c = trials["A"], trials["B"], trials["C"]

    # nested metric, and metric given explicitly
    acc = analysis.get_trial_checkpoints_paths(b, metric="nested/acc")
    assert [v for _, v in acc] == [-0.5, -2.0, -9.0]
    its = analysis.get_trial_checkpoints_paths(a, metric="training_iteration")
    assert [v for _, v in its] == [2, 4, 6]

    # best checkpoint of a trial (default metric/mode: loss, min)
    best_a = analysis.get_best_checkpoint(a)
    assert isinstance(best_a, Checkpoint)
    assert iteration_of(best_a) == 2 and best_a.to_dict() == {"i": 2}
    assert iteration_of(analysis.get_best_checkpoint(a, mode="max")) == 6
    assert iteration_of(analysis.get_best_checkpoint(b, "nested/acc", "max")) == 3
    assert iteration_of(analysis.get_best_checkpoint(b, "training_iteration", "max")) == 7

    # best trial by last loss is A (6 < 9; C has no checkpoint but last loss 7)
    assert analysis.best_trial is a or analysis.best_trial.trial_id == a.trial_id
    assert analysis.best_checkpoint == best_a
    # Ray 1.x code treats the checkpoint as a path
    assert os.path.join(analysis.best_checkpoint, "x") == os.path.join(best_a.path, "x")

    # last checkpoint: of the given trial, else of the trial with the most iterations (B)
    assert iteration_of(analysis.get_last_checkpoint(a)) == 6
    assert analysis.get_last_checkpoint(a).to_dict() == {"i": 6}
    last = analysis.get_last_checkpoint()
    assert iteration_of(last) == 7 and last.to_dict() == {"i": 7}
    assert os.path.dirname(last.path) == os.path.normpath(b.local_path)
    assert iteration_of(analysis.get_last_checkpoint(metric="loss", mode="min")) == 6

    # a trial without checkpoints
    assert analysis.get_trial_checkpoints_paths(c) == []
    assert analysis.get_best_checkpoint(c) is None
    assert analysis.get_last_checkpoint(c) is None
    assert c.checkpoint is None

    # a trial directory instead of a trial
    assert analysis.get_best_checkpoint(a.local_path) == best_a
    assert analysis.get_trial_checkpoints_paths(
        b.local_path
    ) == analysis.get_trial_checkpoints_paths(b)

    # the trial's own latest checkpoint agrees
    assert a.checkpoint == analysis.get_last_checkpoint(a)


def test_checkpoint_api_on_live_trials(experiment):
    root, analysis = experiment
    check_checkpoint_api(analysis, str(root / "exp"))


def test_checkpoint_api_from_directory(experiment):
    root, _ = experiment
    exp_dir = str(root / "exp")
    analysis = ExperimentAnalysis(exp_dir, default_metric="loss", default_mode="min")
    assert analysis.experiment_state_path.endswith(".db")
    for trial in analysis.trials:
        assert isinstance(trial.checkpoints, list)  # listed by the state database
    check_checkpoint_api(analysis, exp_dir)


def test_checkpoint_api_on_a_moved_directory(experiment, tmp_path):
    root, _ = experiment
    moved = str(tmp_path / "elsewhere" / "exp")
    shutil.copytree(root / "exp", moved)
    analysis = ExperimentAnalysis(moved, default_metric="loss", default_mode="min")
    check_checkpoint_api(analysis, moved)


def test_json_snapshot_without_database_finds_checkpoints_on_disk(experiment, tmp_path):
    root, _ = experiment
    copy = str(tmp_path / "exp")
    shutil.copytree(root / "exp", copy)
    snapshot = next(n for n in os.listdir(copy) if n.endswith(".json"))
    # given the snapshot file itself
    by_file = ExperimentAnalysis(
        os.path.join(copy, snapshot), default_metric="loss", default_mode="min"
    )
    check_checkpoint_api(by_file, copy)
    # and a directory whose database is gone
    for name in os.listdir(copy):
        if ".db" in name:
            os.remove(os.path.join(copy, name))
    by_dir = ExperimentAnalysis(copy, default_metric="loss", default_mode="min")
    assert by_dir.experiment_state_path.endswith(".json")
    check_checkpoint_api(by_dir, copy)


def test_database_only_as_after_a_killed_driver(experiment, tmp_path):
    root, _ = experiment
    copy = str(tmp_path / "exp")
    shutil.copytree(root / "exp", copy)
    for name in os.listdir(copy):
        if name.endswith(".json"):
            os.remove(os.path.join(copy, name))
    analysis = ExperimentAnalysis(copy, default_metric="loss", default_mode="min")
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    assert analysis.runner_data()["trial_counter"] == 3
    check_checkpoint_api(analysis, copy)


def test_analysis_reads_a_corrupt_database_backup_without_touching_files(experiment, tmp_path):
    root, _ = experiment
    copy = tmp_path / "exp"
    shutil.copytree(root / "exp", copy)
    db = next(p for p in copy.iterdir() if p.name.endswith(".db"))
    garbage = b"not a database" * 100
    db.write_bytes(garbage)
    before = sorted(p.name for p in copy.iterdir())
    analysis = ExperimentAnalysis(str(copy), default_metric="loss", default_mode="min")
    assert analysis.experiment_state_path.endswith(".db.bak")
    check_checkpoint_api(analysis, str(copy))
    # an analysis may look at a live experiment: it renames and repairs nothing
    assert sorted(p.name for p in copy.iterdir()) == before
    assert db.read_bytes() == garbage


def test_errors(experiment):
    root, analysis = experiment
    a = by_name(analysis)["A"]
    with pytest.raises(ValueError, match="did not report the metric 'nope'"):
        analysis.get_best_checkpoint(a, metric="nope")
    with pytest.raises(ValueError, match="must be a trial"):
        analysis.get_best_checkpoint(None)
    with pytest.raises(ValueError, match="not a trial directory"):
        analysis.get_trial_checkpoints_paths(str(root / "missing"))
    with pytest.raises(ValueError, match="'min' or 'max'"):
        analysis.get_best_checkpoint(a, mode="best")
    plain = ExperimentAnalysis(str(root / "exp"))
    with pytest.raises(ValueError, match="best_checkpoint"):
        _ = plain.best_checkpoint
    with pytest.raises(ValueError, match="mode"):
        plain.get_best_checkpoint(plain.trials[0])
    # without defaults, the metric falls back to training_iteration
    trial = next(t for t in plain.trials if t.config["spec"]["name"] == "A")
    assert iteration_of(plain.get_best_checkpoint(trial, mode="max")) == 6
    assert [v for _, v in plain.get_trial_checkpoints_paths(trial)] == [2, 4, 6]


# -- other ways to checkpoint ----------------------------------------------------------------


def legacy(config, checkpoint_dir=None):
    start = 0
    if checkpoint_dir:
        start = json.load(open(os.path.join(checkpoint_dir, "state.json")))["step"]
    marker = os.path.join(config["dir"], "failed")
    for step in range(start + 1, 6):
        if step == 4 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("planned failure")
        with tune.checkpoint_dir(step=step) as d:
            json.dump({"step": step}, open(os.path.join(d, "state.json"), "w"))
        tune.report(score=step * 10, start=start)


def test_ray_1x_style_checkpoint_dir_with_a_retry(tmp_path):
    analysis = tune.run(
        legacy,
        config={"dir": str(tmp_path)},
        local_dir=str(tmp_path),
        max_failures=1,
        keep_checkpoints_num=2,
        metric="score",
        mode="max",
        verbose=0,
    )
    trial = analysis.trials[0]
    assert trial.num_failures == 1 and trial.last_result["start"] == 3
    # after the retry every iteration has one row, so each checkpoint one value
    pairs = analysis.get_trial_checkpoints_paths(trial)
    assert [(iteration_of(p), v) for p, v in pairs] == [(4, 40), (5, 50)]
    best = analysis.best_checkpoint
    with open(os.path.join(best, "state.json")) as f:  # Ray 1.x: the checkpoint is a path
        assert json.load(f) == {"step": 5}


class Counter(tune.Trainable):
    def setup(self, config):
        self.value = 0

    def step(self):
        self.value += 1
        return {"value": self.value, "penalty": (self.value - 3) ** 2}

    def save_checkpoint(self, checkpoint_dir):
        path = os.path.join(checkpoint_dir, "state.pkl")
        with open(path, "wb") as f:
            pickle.dump(self.value, f)
        return path

    def load_checkpoint(self, checkpoint):
        with open(checkpoint, "rb") as f:
            self.value = pickle.load(f)


def test_class_trainable_checkpoints(tmp_path):
    analysis = tune.run(
        Counter,
        local_dir=str(tmp_path),
        name="counter",
        checkpoint_freq=1,
        stop={"training_iteration": 5},
        verbose=0,
    )
    trial = analysis.trials[0]
    pairs = analysis.get_trial_checkpoints_paths(trial, metric="penalty")
    assert [(iteration_of(p), v) for p, v in pairs] == [(1, 4), (2, 1), (3, 0), (4, 1), (5, 4)]
    best = analysis.get_best_checkpoint(trial, metric="penalty", mode="min")
    with open(os.path.join(best, "state.pkl"), "rb") as f:
        assert pickle.load(f) == 3
    assert iteration_of(analysis.get_last_checkpoint(trial)) == 5
    # the same from the directory
    again = ExperimentAnalysis(os.path.join(str(tmp_path), "counter"))
    record = again.trials[0]
    assert again.get_best_checkpoint(record, metric="penalty", mode="min") == best
    assert record.checkpoint == trial.checkpoint
