"""Checkpoints of function and class trainables, keep-N-best, retries from checkpoints."""

from __future__ import annotations

import json
import os
import pickle

import pytest

try:
    from _schedulers import pause_once_at_two
except ImportError:  # tests imported as a package
    from tests._schedulers import pause_once_at_two

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


def dies_right_after_a_checkpoint(config):
    """200 quick reports (most of them buffered), one with a checkpoint, then a hard exit."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        tune.report({"restored_from": checkpoint.to_dict()["i"]})
        return
    for i in range(1, 201):
        tune.report({"i": i})
    tune.report({"i": 201}, checkpoint=tune.Checkpoint.from_dict({"i": 201}))
    os._exit(1)  # no exception, no flush: the process is simply gone


def test_a_checkpoint_whose_report_returned_survives_the_process_dying_next(tmp_path):
    analysis = run(dies_right_after_a_checkpoint, tmp_path, max_failures=1)
    (trial,) = analysis.trials
    assert trial.status == "TERMINATED"
    assert trial.num_failures == 1
    assert trial.last_result["restored_from"] == 201
    assert trial.last_result["training_iteration"] == 202


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


def fails_with_an_unreported_checkpoint_dir(config, checkpoint_dir=None):
    start = int(open(os.path.join(checkpoint_dir, "step")).read()) if checkpoint_dir else 0
    marker = os.path.join(config["dir"], "failed")
    for step in range(start + 1, 4):
        with tune.checkpoint_dir(step=step) as d:
            open(os.path.join(d, "step"), "w").write(str(step))
        if step == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("planned, with step 2's checkpoint_dir() not reported")
        tune.report(step=step, start=start)


def test_a_retry_removes_what_the_failed_attempt_left_half_written(tmp_path):
    analysis = run(fails_with_an_unreported_checkpoint_dir, tmp_path, config={"dir": str(tmp_path)},
                   max_failures=1)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    assert trial.last_result["start"] == 1  # retried from step 1's checkpoint
    leftovers = [n for n in os.listdir(trial.local_path) if n.startswith(".tmp_checkpoint_")]
    assert leftovers == []


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
                       scheduler=pause_once_at_two(), name="fn")
        starts = [t.last_result["start"] for t in analysis.trials]
        assert starts == [2, 2, 2]
    else:
        analysis = run(Stateful, tmp_path, num_samples=3, scheduler=pause_once_at_two(),
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


# -- a trial process that dies while a checkpoint is being written -----------------------------

BIG = 64 << 20  # large enough that copying it takes a while


def _big_pattern() -> bytes:
    return bytes(range(256)) * (BIG // 256)


def _kill_when_partly_copied(trial_dir, marker):
    """SIGKILL this process as soon as a copy of big.bin in ``trial_dir`` is partly written.

    Records what the trial directory held at that moment in ``marker``. Gives up (and the
    trainable tries again at its next report) if the copy completes first.
    """
    import signal
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for entry in os.scandir(trial_dir):
            if not entry.is_dir():
                continue
            try:
                size = os.stat(os.path.join(entry.path, "big.bin")).st_size
            except OSError:
                continue
            if size == BIG and entry.name.startswith("checkpoint_"):
                return  # the copy completed before this thread saw it: try again
            if 0 < size < BIG:
                listing = {
                    e.name: sorted(os.listdir(e.path)) for e in os.scandir(trial_dir) if e.is_dir()
                }
                with open(marker, "w") as f:
                    json.dump({"partial": entry.name, "size": size, "listing": listing}, f)
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.0002)


def big_checkpoint_then_killed(config):
    """Counts to 8 with a small checkpoint per step. From step 3 on, until it has been
    killed once, each checkpoint also holds a 64 MB file and a thread SIGKILLs this trial
    process while tunekit copies that file into the trial directory."""
    import shutil
    import tempfile
    import threading
    import time

    start = 0
    if tune.get_checkpoint() is not None:
        with tune.get_checkpoint().as_directory() as d:
            start = json.load(open(os.path.join(d, "state.json")))["i"]
    with open(os.path.join(config["dir"], "starts"), "a") as f:
        f.write(f"{start}\n")
    marker = os.path.join(config["dir"], "killed.json")
    for i in range(start + 1, 9):
        time.sleep(0.02)
        d = tempfile.mkdtemp()
        json.dump({"i": i}, open(os.path.join(d, "state.json"), "w"))
        if i >= 3 and not os.path.exists(marker):
            with open(os.path.join(d, "big.bin"), "wb") as f:
                f.write(_big_pattern())
            threading.Thread(
                target=_kill_when_partly_copied, args=(tune.get_trial_dir(), marker), daemon=True
            ).start()
        tune.report({"i": i, "resumed_from": start}, checkpoint=tune.Checkpoint.from_directory(d))
        shutil.rmtree(d)


class LatestCheckpointAtFailure(tune.Callback):
    """Records, at each failure, the latest checkpoint the driver had of the trial and the
    directories in the trial directory then: {name: {file: size}}."""

    def __init__(self):
        self.at_failure = []
        self.dirs_at_failure = []

    def on_trial_error(self, iteration, trials, trial, **info):
        self.at_failure.append(trial.checkpoint.path if trial.checkpoint else None)
        self.dirs_at_failure.append({
            e.name: {f.name: f.stat().st_size for f in os.scandir(e.path)}
            for e in os.scandir(trial.local_path) if e.is_dir()
        })


def _assert_complete_checkpoints(trial_dir, check_files):
    """Every directory with a checkpoint's name has tunekit's metadata and complete data."""
    names = sorted(n for n in os.listdir(trial_dir) if n.startswith("checkpoint_"))
    assert names
    for name in names:
        path = os.path.join(trial_dir, name)
        metadata = Checkpoint(path).get_metadata()
        assert metadata.get("iteration") == int(name.split("_")[1]), (path, metadata)
        check_files(path, metadata["iteration"])


def test_trial_killed_while_a_checkpoint_is_copied_retries_from_the_previous_one(tmp_path):
    recorder = LatestCheckpointAtFailure()
    analysis = run(big_checkpoint_then_killed, tmp_path, name="big", config={"dir": str(tmp_path)},
                   max_failures=1, callbacks=[recorder])
    trial = analysis.trials[0]
    marker = tmp_path / "killed.json"
    assert marker.exists(), "the trial process was never killed while its checkpoint was copied"
    killed = json.loads(marker.read_text())
    # At the kill, the partly written copy had a temporary name, never a checkpoint's.
    assert not killed["partial"].startswith("checkpoint_"), killed
    assert 0 < killed["size"] < BIG

    assert trial.status == "TERMINATED" and trial.num_failures == 1
    assert "SIGKILL" in open(trial.error_file).read()
    # When the driver learnt of the death, nothing with a checkpoint's name held part of one.
    for name, files in recorder.dirs_at_failure[0].items():
        if name.startswith("checkpoint_"):
            assert files.get("big.bin", BIG) == BIG and "state.json" in files, (name, files)
    # The retry continued from the latest checkpoint the driver had when the process died.
    assert len(recorder.at_failure) == 1 and recorder.at_failure[0] is not None
    restored = Checkpoint(recorder.at_failure[0]).get_metadata()["iteration"]
    starts = [int(line) for line in (tmp_path / "starts").read_text().split()]
    assert starts == [0, restored] and restored >= 1
    assert [r["training_iteration"] for r in rows(trial)] == list(range(1, 9))
    assert [r["i"] for r in rows(trial)] == list(range(1, 9))

    pattern = _big_pattern()

    def check_files(path, iteration):
        assert json.load(open(os.path.join(path, "state.json"))) == {"i": iteration}
        big = os.path.join(path, "big.bin")
        if os.path.exists(big):
            with open(big, "rb") as f:
                assert f.read() == pattern, f"{big} is incomplete"

    _assert_complete_checkpoints(trial.local_path, check_files)
    # The analysis (from the directory, as after the run) lists complete checkpoints only.
    later = tune.ExperimentAnalysis(str(tmp_path / "big"))
    listed = [path for path, _ in later.get_trial_checkpoints_paths(later.trials[0])]
    assert listed and all(os.path.basename(p).startswith("checkpoint_") for p in listed)
    for path in listed:
        check_files(path, Checkpoint(path).get_metadata()["iteration"])


class DiesWhileSaving(tune.Trainable):
    """Saves two files per checkpoint; its first save at iteration 3 dies between them."""

    def setup(self, config):
        self.value = 0
        self.restored_from = 0

    def step(self):
        self.value += 1
        return {"value": self.value, "restored_from": self.restored_from}

    def save_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "part1.txt"), "w") as f:
            f.write(str(self.value))
        marker = os.path.join(self.config["dir"], "died-while-saving")
        if self.value == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the trial process dies with half of the checkpoint written
        with open(os.path.join(checkpoint_dir, "part2.txt"), "w") as f:
            f.write(str(self.value))

    def load_checkpoint(self, checkpoint_dir):
        parts = [open(os.path.join(checkpoint_dir, n)).read() for n in ("part1.txt", "part2.txt")]
        assert parts[0] == parts[1], parts
        self.value = self.restored_from = int(parts[0])


def _check_two_parts(path, iteration):
    for name in ("part1.txt", "part2.txt"):
        assert open(os.path.join(path, name)).read() == str(iteration), (path, name)


def _partial_saves(dirs):
    """Of ``{name: files}``, the directories holding only the first half of a checkpoint."""
    return [name for name, files in dirs.items() if "part1.txt" in files and "part2.txt" not in files]


def _dirs(trial_dir):
    return {e.name: os.listdir(e.path) for e in os.scandir(trial_dir) if e.is_dir()}


@pytest.mark.parametrize("recovery", ["retry", "resume"])
def test_save_checkpoint_dying_midway_leaves_no_complete_looking_checkpoint(tmp_path, recovery):
    stop = {"training_iteration": 5}
    recorder = LatestCheckpointAtFailure()
    if recovery == "retry":
        analysis = run(DiesWhileSaving, tmp_path, name="retry", config={"dir": str(tmp_path)},
                       checkpoint_freq=1, max_failures=1, stop=stop, callbacks=[recorder])
        trial = analysis.trials[0]
        assert trial.num_failures == 1
    else:
        # The trial fails for good; a resume continues it from its latest checkpoint.
        config = tune.RunConfig(
            name="resume", storage_path=str(tmp_path), stop=stop, verbose=0, callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=0),
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1),
        )
        tune.Tuner(DiesWhileSaving, param_space={"dir": str(tmp_path)}, run_config=config).fit()
        errored = tune.ExperimentAnalysis(str(tmp_path / "resume")).trials[0]
        assert errored.status == "ERROR"
        assert _partial_saves(_dirs(errored.local_path))  # the half-written save is still there
        listed = [p for p, _ in tune.ExperimentAnalysis(str(tmp_path / "resume"))
                  .get_trial_checkpoints_paths(errored)]
        assert listed and all(os.path.basename(p).startswith("checkpoint_") for p in listed)
        for path in listed:
            _check_two_parts(path, Checkpoint(path).get_metadata()["iteration"])
        assert errored.checkpoint.path == recorder.at_failure[0]
        tuner = tune.Tuner.restore(str(tmp_path / "resume"), DiesWhileSaving, resume_errored=True)
        tuner.fit()
        analysis = tune.ExperimentAnalysis(str(tmp_path / "resume"))
        trial = analysis.trials[0]
        assert _partial_saves(_dirs(trial.local_path)) == []  # a resume removes half-written saves
    # When the driver learnt of the death, the half-written save did not have a checkpoint's
    # name, and everything that had one was complete.
    dirs = recorder.dirs_at_failure[0]
    partial = _partial_saves(dirs)
    assert len(partial) == 1 and not partial[0].startswith("checkpoint_"), dirs
    assert all("part2.txt" in files for name, files in dirs.items() if name.startswith("checkpoint_"))
    restored = Checkpoint(recorder.at_failure[0]).get_metadata()["iteration"]
    assert trial.status == "TERMINATED"
    assert os.path.exists(tmp_path / "died-while-saving")
    assert restored in (1, 2)
    assert trial.last_result["value"] == 5
    assert [r["training_iteration"] for r in rows(trial)] == [1, 2, 3, 4, 5]
    # continued from the checkpoint the driver had when the process died: never from scratch
    assert [r["restored_from"] for r in rows(trial)][restored:] == [restored] * (5 - restored)
    _assert_complete_checkpoints(trial.local_path, _check_two_parts)
    listed = [p for p, _ in tune.ExperimentAnalysis(str(tmp_path / recovery))
              .get_trial_checkpoints_paths(trial.local_path)]
    for path in listed:
        _check_two_parts(path, Checkpoint(path).get_metadata()["iteration"])
