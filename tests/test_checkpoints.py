"""Checkpoints of function and class trainables, keep-N-best, retries from checkpoints."""

from __future__ import annotations

import json
import os
import pickle

import pytest

import tunekit as tune
from tunekit_core.checkpoint import Checkpoint, TrialCheckpoints


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch):
    monkeypatch.setenv("TUNEKIT_STOP_GRACE_S", "2")


def run(trainable, tmp_path, **kwargs):
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("local_dir", str(tmp_path))
    return tune.run(trainable, **kwargs)


def rows(trial):
    with open(os.path.join(trial.local_path, "result.json")) as f:
        return [json.loads(line) for line in f]


# -- function trainables ----------------------------------------------------------------------


def counting(config):
    """Counts to config["n"], checkpointing every step; fails once at config["fail_at"]."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = json.load(open(os.path.join(d, "state.json")))["i"]
    marker = os.path.join(config["dir"], f"failed-{tune.get_trial_id()}")
    for i in range(start + 1, config["n"] + 1):
        if i == config.get("fail_at") and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError(f"planned failure at {i}")
        d = os.path.join(config["dir"], f"ckpt-{tune.get_trial_id()}-{i}")
        os.makedirs(d)
        json.dump({"i": i}, open(os.path.join(d, "state.json"), "w"))
        tune.report({"i": i, "resumed_from": start}, checkpoint=tune.Checkpoint.from_directory(d))


def test_report_with_checkpoint_and_retry_continues_from_it(tmp_path):
    analysis = run(counting, tmp_path, config={"dir": str(tmp_path), "n": 6, "fail_at": 4},
                   max_failures=2)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED"
    assert trial.num_failures == 1
    assert trial.last_result["i"] == 6
    assert trial.last_result["resumed_from"] == 3  # continued from the checkpoint of i=3
    assert trial.last_result["training_iteration"] == 6  # iteration count continued too
    # each iteration appears once in the result files
    assert [r["training_iteration"] for r in rows(trial)] == [1, 2, 3, 4, 5, 6]
    names = sorted(n for n in os.listdir(trial.local_path) if n.startswith("checkpoint_"))
    assert names == [f"checkpoint_{i:06d}" for i in range(1, 7)]
    assert not [n for n in os.listdir(trial.local_path) if n.startswith(".tmp")]
    # the copy in the trial dir is independent of the reported directory
    assert json.load(open(os.path.join(trial.local_path, "checkpoint_000006", "state.json"))) == {"i": 6}
    assert trial.checkpoint.path == os.path.join(trial.local_path, "checkpoint_000006")


def legacy_style(config, checkpoint_dir=None):
    start = 0
    if checkpoint_dir:
        start = int(open(os.path.join(checkpoint_dir, "step")).read())
    marker = os.path.join(config["dir"], "failed")
    for step in range(start + 1, 5):
        if step == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("planned")
        with tune.checkpoint_dir(step=step) as d:
            open(os.path.join(d, "step"), "w").write(str(step))
        tune.report(step=step, start=start)


def test_checkpoint_dir_context_manager_style(tmp_path):
    analysis = run(legacy_style, tmp_path, config={"dir": str(tmp_path)}, max_failures=1)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED"
    assert trial.last_result["step"] == 4 and trial.last_result["start"] == 2
    assert [r["step"] for r in rows(trial)] == [1, 2, 3, 4]


def dict_checkpoints(config):
    for i in range(1, 4):
        tune.report(loss=10 - i, checkpoint=tune.Checkpoint.from_dict({"i": i}))


def test_checkpoint_from_dict_round_trip(tmp_path):
    analysis = run(dict_checkpoints, tmp_path)
    assert analysis.trials[0].checkpoint.to_dict() == {"i": 3}


# -- keep N best ----------------------------------------------------------------------------------


def noisy_losses(config):
    for i, loss in enumerate([5.0, 1.0, 4.0, 2.0, 3.0, 6.0], start=1):
        tune.report(loss=loss, acc=-loss, checkpoint=tune.Checkpoint.from_dict({"i": i}))


@pytest.mark.parametrize(
    "score_attr,expected",
    [
        ("min-loss", {2, 4, 6}),  # the two lowest losses, plus the latest
        ("acc", {2, 4, 6}),  # acc = -loss: same ranking, descending
        (None, {5, 6}),  # no score: the most recent (keep=2)
    ],
)
def test_keep_checkpoints_num_by_score(tmp_path, score_attr, expected):
    keep = 3 if score_attr else 2
    analysis = run(noisy_losses, tmp_path, keep_checkpoints_num=keep,
                   checkpoint_score_attr=score_attr, name=f"keep-{score_attr}")
    trial = analysis.trials[0]
    kept = {int(n.split("_")[1]) for n in os.listdir(trial.local_path) if n.startswith("checkpoint_")}
    assert kept == expected
    assert trial.checkpoint.to_dict() == {"i": 6}  # the latest survives pruning


def test_trial_checkpoints_ranking_unit():
    manager = TrialCheckpoints(keep=2, score_attr="min-loss")
    assert manager.add("a", 1, {"loss": 3.0}) == []
    assert manager.add("b", 2, {"loss": 1.0}) == []
    assert manager.add("c", 3, {"loss": 2.0}) == ["a"]
    assert manager.add("d", 4, {"loss": 9.0}) == ["c"]  # the latest always stays
    assert [e["path"] for e in manager.entries] == ["b", "d"]
    assert manager.best()["path"] == "b"
    with pytest.raises(ValueError):
        TrialCheckpoints(keep=0)


# -- class trainables ----------------------------------------------------------------------------


class Stateful(tune.Trainable):
    def setup(self, config):
        self.value = 0
        self.mode = config.get("mode", "files")
        self.restored_from = None

    def step(self):
        self.value += 1
        fail_file = self.config.get("fail_file")
        if fail_file and self.value == self.config.get("fail_at") and not os.path.exists(fail_file):
            open(fail_file, "w").close()
            raise RuntimeError("planned")
        result = {"value": self.value, "restored_from": self.restored_from}
        if self.config.get("ask_at") == self.iteration + 1:
            result["should_checkpoint"] = True
        return result

    def save_checkpoint(self, checkpoint_dir):
        if self.mode == "dict":
            return {"value": self.value}
        path = os.path.join(checkpoint_dir, "state.pkl")
        pickle.dump(self.value, open(path, "wb"))
        return path if self.mode == "file" else None

    def load_checkpoint(self, checkpoint):
        if self.mode == "dict":
            self.value = checkpoint["value"]
        elif self.mode == "file":
            self.value = pickle.load(open(checkpoint, "rb"))
        else:
            self.value = pickle.load(open(os.path.join(checkpoint, "state.pkl"), "rb"))
        self.restored_from = self.value

    def _export_model(self, export_formats, export_dir):
        path = os.path.join(export_dir, "model.txt")
        open(path, "w").write(str(self.value))
        return {export_formats[0]: path}


@pytest.mark.parametrize("mode", ["files", "file", "dict"])
def test_class_checkpoint_freq_and_retry(tmp_path, mode):
    analysis = run(
        Stateful,
        tmp_path,
        name=mode,
        config={"mode": mode, "fail_at": 5, "fail_file": str(tmp_path / f"fail-{mode}")},
        checkpoint_freq=2,
        max_failures=1,
        stop={"training_iteration": 7},
    )
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED"
    assert trial.last_result["value"] == 7
    assert trial.last_result["restored_from"] == 4  # retried from the iteration-4 checkpoint
    assert [r["training_iteration"] for r in rows(trial)] == list(range(1, 8))
    kept = sorted(n for n in os.listdir(trial.local_path) if n.startswith("checkpoint_"))
    assert kept == ["checkpoint_000002", "checkpoint_000004", "checkpoint_000006"]


def test_checkpoint_at_end_should_checkpoint_and_export(tmp_path):
    analysis = run(Stateful, tmp_path, config={"ask_at": 2}, checkpoint_at_end=True,
                   stop={"training_iteration": 3}, export_formats=["txt"])
    trial = analysis.trials[0]
    kept = sorted(n for n in os.listdir(trial.local_path) if n.startswith("checkpoint_"))
    assert kept == ["checkpoint_000002", "checkpoint_000003"]
    assert open(os.path.join(trial.local_path, "model.txt")).read() == "3"


def test_checkpoint_at_end_when_the_driver_stops_the_trial(tmp_path):
    analysis = run(Stateful, tmp_path, checkpoint_at_end=True,
                   stop=lambda trial_id, result: result["value"] >= 3)
    trial = analysis.trials[0]
    assert trial.checkpoint is not None
    assert trial.checkpoint.get_metadata()["iteration"] >= 3


def test_restore_parameter_starts_from_a_checkpoint(tmp_path):
    first = run(Stateful, tmp_path, name="first", checkpoint_at_end=True,
                stop={"training_iteration": 3})
    path = first.trials[0].checkpoint.path
    second = run(Stateful, tmp_path, name="second", restore=path, stop={"training_iteration": 5})
    trial = second.trials[0]
    assert trial.last_result["restored_from"] == 3
    assert trial.last_result["value"] == 5
    with pytest.raises(ValueError, match="restore"):
        run(Stateful, tmp_path, name="third", restore=str(tmp_path / "missing"))


# -- the Checkpoint class --------------------------------------------------------------------


def test_checkpoint_api(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    ckpt = Checkpoint.from_directory(src)
    assert ckpt.path == str(src)
    out = ckpt.to_directory(str(tmp_path / "out"))
    assert open(os.path.join(out, "a.txt")).read() == "hello"
    with ckpt.as_directory() as d:
        assert os.listdir(d) == ["a.txt"]
    assert os.path.join(ckpt, "a.txt") == str(src / "a.txt")  # os.PathLike
    with pytest.raises(ValueError, match="holds files"):
        ckpt.to_dict()
    with pytest.raises(ValueError, match="no such directory"):
        Checkpoint.from_directory(tmp_path / "nope")
    assert Checkpoint.from_dict({"k": [1, 2]}).to_dict() == {"k": [1, 2]}


# -- pausing (schedulers that return PAUSE) ---------------------------------------------------


def _pause_once_scheduler():
    from tunekit.schedulers import FIFOScheduler

    class PauseOnce(FIFOScheduler):
        supports_buffered_results = False

        def __init__(self):
            super().__init__()
            self.paused = set()

        def on_trial_result(self, runner, trial, result):
            if result["training_iteration"] == 2 and trial.trial_id not in self.paused:
                self.paused.add(trial.trial_id)
                return self.PAUSE
            return self.CONTINUE

    return PauseOnce()


def counting_with_checkpoints(config):
    start = 0
    if tune.get_checkpoint() is not None:
        start = tune.get_checkpoint().to_dict()["i"]
    for i in range(start + 1, 5):
        tune.report(i=i, start=start, checkpoint=tune.Checkpoint.from_dict({"i": i}))


@pytest.mark.parametrize("trainable", ["function", "class"])
def test_paused_trials_continue_from_their_checkpoint(tmp_path, trainable):
    if trainable == "function":
        analysis = run(counting_with_checkpoints, tmp_path, num_samples=3,
                       scheduler=_pause_once_scheduler(), name="fn")
        starts = [t.last_result["start"] for t in analysis.trials]
        assert starts == [2, 2, 2]
    else:
        analysis = run(Stateful, tmp_path, num_samples=3, scheduler=_pause_once_scheduler(),
                       stop={"training_iteration": 4}, name="cls")
        assert [t.last_result["restored_from"] for t in analysis.trials] == [2, 2, 2]
    for trial in analysis.trials:
        assert trial.status == "TERMINATED"
        assert [r["training_iteration"] for r in rows(trial)] == [1, 2, 3, 4]
        history = [s for s, _ in trial.status_history]
        assert history == ["PENDING", "RUNNING", "PAUSED", "RUNNING", "TERMINATED"]


def test_reported_dict_checkpoints_leave_no_temporary_directories(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # where the worker's from_dict dirs are made
    run(dict_checkpoints, tmp_path, name="leak")
    assert list(scratch.iterdir()) == []


def test_truncate_results_keeps_rows_up_to_the_restart_point(tmp_path):
    from tunekit_core.result_files import truncate_results

    def write(iterations, partial=False):
        with open(tmp_path / "result.json", "w") as f:
            for i in iterations:
                f.write(json.dumps({"training_iteration": i}) + "\n")
            if partial:
                f.write('{"training_iteration": 9')
        with open(tmp_path / "progress.csv", "w") as f:
            f.write("loss,training_iteration\n")
            for i in iterations:
                f.write(f"0.5,{i}\n")

    def kept():
        rows = [json.loads(line)["training_iteration"] for line in open(tmp_path / "result.json")]
        csv_rows = open(tmp_path / "progress.csv").read().splitlines()
        assert csv_rows[0] == "loss,training_iteration"
        assert [int(r.split(",")[1]) for r in csv_rows[1:]] == rows
        return rows

    write(range(1, 11), partial=True)
    truncate_results(str(tmp_path), 7)
    assert kept() == [1, 2, 3, 4, 5, 6, 7]
    # after an exploit the trial counted again from the donor's checkpoint (3):
    write([1, 2, 3, 4, 5, 6, 3, 4, 5, 6, 7, 8])
    truncate_results(str(tmp_path), 5)
    assert kept() == [1, 2, 3, 4, 5, 6, 3, 4, 5]
    truncate_results(str(tmp_path), 0)
    assert kept() == []
