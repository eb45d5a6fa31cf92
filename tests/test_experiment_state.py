"""The experiment-state file: content, JSON-safety, atomic replacement, loading."""

import json
import math
import os

import numpy as np
import pytest

from tunekit_core import experiment_state
from tunekit_core.experiment_state import (
    EXPERIMENT_STATE_FORMAT,
    ExperimentStateWriter,
    find_latest_experiment_state,
    load_experiment_state,
    save_experiment_state,
    to_json_safe,
)


class FakeTrial:
    """The Trial contract attributes the state file reads."""

    def __init__(self, exp_dir, index, status="TERMINATED", name=None, **overrides):
        self.trial_id = f"abcde_{index:05d}"
        self.trainable_name = "train"
        self.experiment_tag = f"{index}_lr={0.1 * index:.4f}"
        self.config = {"lr": 0.1 * index, "layers": {"n": 2}}
        self.evaluated_params = {"lr": 0.1 * index}
        self.status = status
        self.local_path = os.path.join(str(exp_dir), f"train_{self.trial_id}")
        self.last_result = {
            "loss": 1.0 / (index + 1),
            "training_iteration": 3,
            "config": self.config,
        }
        self.error_file = None
        self.error_msg = None
        self.num_failures = 0
        self._name = name
        for key, value in overrides.items():
            setattr(self, key, value)

    def __str__(self):
        return self._name or f"{self.trainable_name}_{self.trial_id}"


def test_save_writes_named_file_with_documented_fields(tmp_path):
    exp = tmp_path / "exp"
    errored = FakeTrial(exp, 1, status="ERROR", num_failures=2, error_msg="boom")
    errored.error_file = os.path.join(errored.local_path, "error.txt")
    trials = [FakeTrial(exp, 0), errored, FakeTrial(exp, 2, status="PENDING", name="custom")]
    path = save_experiment_state(exp, trials, {"iteration": 7}, "2024-05-06_07-08-09")

    assert path == str(exp / "experiment_state-2024-05-06_07-08-09.json")
    with open(path) as f:
        state = json.load(f)
    assert state["format"] == EXPERIMENT_STATE_FORMAT
    assert isinstance(state["timestamp"], float)
    assert state["runner_data"] == {"iteration": 7}
    first, second, third = state["trials"]
    assert set(first) == {
        "trial_id",
        "trainable_name",
        "experiment_tag",
        "config",
        "evaluated_params",
        "status",
        "relative_logdir",
        "local_path",
        "last_result",
        "error_file",
        "error_msg",
        "num_failures",
        "custom_trial_name",
        "status_history",
    }
    assert first["trial_id"] == "abcde_00000"
    assert first["relative_logdir"] == "train_abcde_00000"
    assert first["local_path"] == str(exp / "train_abcde_00000")
    assert first["config"] == {"lr": 0.0, "layers": {"n": 2}}
    assert first["last_result"]["training_iteration"] == 3
    assert first["custom_trial_name"] is None
    assert second["status"] == "ERROR"
    assert second["error_file"] == os.path.join("train_abcde_00001", "error.txt")
    assert second["error_msg"] == "boom" and second["num_failures"] == 2
    assert third["custom_trial_name"] == "custom"
    # nothing but the state file is left in the directory
    assert os.listdir(exp) == ["experiment_state-2024-05-06_07-08-09.json"]


def test_trial_outside_experiment_dir_gets_relative_path(tmp_path):
    exp = tmp_path / "exp"
    trial = FakeTrial(tmp_path / "elsewhere", 0)
    path = save_experiment_state(exp, [trial], {}, "t")
    entry = load_experiment_state(path)["trials"][0]
    assert entry["relative_logdir"] == os.path.join("..", "elsewhere", "train_abcde_00000")


def test_values_json_cannot_encode_are_converted(tmp_path):
    trial = FakeTrial(tmp_path, 0)
    trial.config = {
        "arr": np.arange(3),
        "f32": np.float32(0.5),
        "i64": np.int64(7),
        "tags": {"b", "a"},
        "fn": len,
        (1, 2): "tuple key",
    }
    trial.last_result = {"loss": np.float64(0.25), "nan": float("nan"), "inf": float("inf")}
    path = save_experiment_state(tmp_path, [trial], {"searcher": {1, 2}}, "t")
    state = load_experiment_state(path)
    config = state["trials"][0]["config"]
    assert config["arr"] == [0, 1, 2]
    assert config["f32"] == 0.5
    assert config["i64"] == 7
    assert config["tags"] == ["a", "b"]
    assert "len" in config["fn"]
    assert config["(1, 2)"] == "tuple key"
    result = state["trials"][0]["last_result"]
    assert result["loss"] == 0.25
    assert math.isnan(result["nan"]) and result["inf"] == math.inf
    assert state["runner_data"] == {"searcher": [1, 2]}


def test_to_json_safe_deep_converts():
    assert to_json_safe({1: (np.int32(2), {"x": {3}})}) == {"1": [2, {"x": [3]}]}


def test_saving_again_replaces_atomically_and_failure_keeps_old_file(tmp_path, monkeypatch):
    trials = [FakeTrial(tmp_path, 0)]
    path = save_experiment_state(tmp_path, trials, {"n": 1}, "t")
    save_experiment_state(tmp_path, trials, {"n": 2}, "t")
    assert load_experiment_state(path)["runner_data"] == {"n": 2}

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(experiment_state.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_experiment_state(tmp_path, trials, {"n": 3}, "t")
    monkeypatch.undo()
    assert load_experiment_state(path)["runner_data"] == {"n": 2}
    assert sorted(os.listdir(tmp_path)) == ["experiment_state-t.json"]  # temp file removed


def test_load_from_directory_picks_newest(tmp_path):
    trials = [FakeTrial(tmp_path, 0)]
    save_experiment_state(tmp_path, trials, {"run": "old"}, "2024-01-01_00-00-00")
    save_experiment_state(tmp_path, trials, {"run": "new"}, "2024-03-01_00-00-00")
    save_experiment_state(tmp_path, trials, {"run": "mid"}, "2024-02-01_00-00-00")
    assert find_latest_experiment_state(tmp_path).endswith("2024-03-01_00-00-00.json")
    assert load_experiment_state(tmp_path)["runner_data"] == {"run": "new"}
    assert load_experiment_state(str(tmp_path))["trials"][0]["trial_id"] == "abcde_00000"


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="No experiment state file"):
        load_experiment_state(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_experiment_state(tmp_path / "missing")
    assert find_latest_experiment_state(tmp_path / "missing") is None

    bad = tmp_path / "experiment_state-x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_experiment_state(bad)
    bad.write_text(json.dumps({"checkpoints": []}))
    with pytest.raises(ValueError, match="not a tunekit experiment state"):
        load_experiment_state(bad)
    bad.write_text(json.dumps({"format": "tunekit-experiment-state/99", "trials": []}))
    with pytest.raises(ValueError, match="format"):
        load_experiment_state(bad)


def test_writer_output_matches_save_and_tracks_changes(tmp_path):
    trials = [FakeTrial(tmp_path, i) for i in range(5)]
    trials[4].status = "RUNNING"
    writer = ExperimentStateWriter(tmp_path, "w")
    path = writer.save(trials, {"step": 1})
    assert path == writer.path
    reference = save_experiment_state(tmp_path, trials, {"step": 1}, "ref")
    written, expected = load_experiment_state(path), load_experiment_state(reference)
    written.pop("timestamp"), expected.pop("timestamp")
    assert written == expected

    # a finished trial that gets a new result object / status is re-encoded
    trials[0].last_result = {"loss": 123.0}
    trials[1].status = "ERROR"
    trials[1].error_file = os.path.join(trials[1].local_path, "error.txt")
    trials[4].last_result = {"loss": 7.0}
    state = load_experiment_state(writer.save(trials, {"step": 2}))
    by_id = {t["trial_id"]: t for t in state["trials"]}
    assert by_id["abcde_00000"]["last_result"] == {"loss": 123.0}
    assert by_id["abcde_00001"]["status"] == "ERROR"
    assert by_id["abcde_00001"]["error_file"] == os.path.join("train_abcde_00001", "error.txt")
    assert by_id["abcde_00004"]["last_result"] == {"loss": 7.0}
    assert state["runner_data"] == {"step": 2}


def test_writer_primes_finished_trials_up_to_its_bound(tmp_path):
    trials = [FakeTrial(tmp_path, i) for i in range(4)]
    trials[3].status = "RUNNING"
    writer = ExperimentStateWriter(tmp_path, "w", max_cached=2)
    for trial in trials:
        writer.prime(trial)
    assert sorted(writer._cache) == ["abcde_00000", "abcde_00001"]  # bounded; not RUNNING
    trials[0].last_result = {"loss": 5.0}  # a primed entry that went stale is re-encoded
    written = load_experiment_state(writer.save(trials, {}))
    reference = load_experiment_state(save_experiment_state(tmp_path, trials, {}, "ref"))
    written.pop("timestamp"), reference.pop("timestamp")
    assert written == reference
    assert written["trials"][0]["last_result"] == {"loss": 5.0}
    assert len(writer._cache) == 2


def test_writer_handles_unencodable_values(tmp_path):
    trial = FakeTrial(tmp_path, 0)
    trial.config = {(1, 2): np.float32(1.5)}
    state = load_experiment_state(ExperimentStateWriter(tmp_path, "w").save([trial], {}))
    assert state["trials"][0]["config"] == {"(1, 2)": 1.5}


def test_state_records_encode_plain_and_unusual_values_as_to_json_safe_does():
    """The state store skips to_json_safe for plain values; the JSON must not change."""
    import json
    from collections import OrderedDict

    import numpy as np

    from tunekit_core.experiment_state import to_json_safe
    from tunekit_core.state_store import _json_safe

    values = [
        {"x": 1.5, "n": 3, "s": "a", "b": True, "none": None, "nested": {"l": [1, (2, 3)]}},
        {"nan": float("nan"), "inf": float("inf")},
        {2: "int key", True: "bool key", None: "none key"},
        {("a", 1): "tuple key"},
        {"np": np.float32(0.5), "arr": np.arange(3), "set": {3, 1}},
        OrderedDict(a=1),
        [{"deep": [{"deeper": np.int64(7)}]}],
    ]
    for value in values:
        assert json.dumps(_json_safe(value)) == json.dumps(to_json_safe(value)), value
