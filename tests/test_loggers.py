"""The json and csv loggers write Ray Tune's trial files for synthetic trials."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from tunekit_loggers import CSVLoggerCallback, JsonLoggerCallback, flatten_dict

from tunekit_core import registry
from tunekit_core.hooks import make_plugin_manager


class FakeTrial:
    """The Trial attributes loggers may rely on (see the contracts)."""

    def __init__(self, root: Path, trial_id: str, config: dict[str, Any]) -> None:
        self.trial_id = trial_id
        self.trainable_name = "train"
        self.config = config
        self.local_path = str(root / f"train_{trial_id}")
        self.status = "RUNNING"
        self.last_result: dict[str, Any] = {}

    @property
    def logdir(self) -> str:
        return self.local_path

    def __str__(self) -> str:
        return f"train_{self.trial_id}"


def make_result(trial: FakeTrial, iteration: int, **metrics: Any) -> dict[str, Any]:
    result = {
        "loss": 1.0 / iteration,
        "training_iteration": iteration,
        "time_this_iter_s": 0.5,
        "time_total_s": 0.5 * iteration,
        "timestamp": 1_700_000_000 + iteration,
        "date": "2024-01-01_00-00-00",
        "done": False,
        "trial_id": trial.trial_id,
        "experiment_tag": f"0_lr={trial.config.get('lr')}",
        "pid": 42,
        "hostname": "host",
        "node_ip": "127.0.0.1",
        "config": trial.config,
    }
    result.update(metrics)
    return result


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture
def trial(tmp_path: Path) -> FakeTrial:
    return FakeTrial(tmp_path, "abc12_00000", {"lr": 0.1, "nested": {"depth": 3}, "act": "relu"})


def test_json_logger_writes_params_and_result_lines(trial: FakeTrial) -> None:
    logger = JsonLoggerCallback()
    logger.log_trial_start(trial)
    results = [make_result(trial, i) for i in range(1, 4)]
    for i, result in enumerate(results):
        logger.log_trial_result(i, trial, result)
    logger.log_trial_end(trial)

    directory = Path(trial.local_path)
    assert (directory / "params.json").read_text() == json.dumps(
        trial.config, indent=2, sort_keys=True
    )
    with open(directory / "params.pkl", "rb") as f:
        assert pickle.load(f) == trial.config
    assert read_json_lines(directory / "result.json") == results


def test_json_logger_makes_values_safe(trial: FakeTrial) -> None:
    np = pytest.importorskip("numpy")

    class Model:
        def __repr__(self) -> str:
            return "Model()"

    trial.config = {
        "lr": np.float32(0.5),
        "sizes": np.array([1, 2]),
        "model": Model,
        "obj": Model(),
        "steps": np.int64(7),
        "tags": {"b", "a"},
    }
    logger = JsonLoggerCallback()
    logger.log_trial_start(trial)
    logger.log_trial_result(
        0,
        trial,
        make_result(
            trial,
            1,
            acc=np.float64(0.25),
            hist=np.zeros((2, 2)),
            flag=np.bool_(True),
            weird={1: "int key"},
        ),
    )
    logger.log_trial_end(trial, failed=True)

    directory = Path(trial.local_path)
    params = json.loads((directory / "params.json").read_text())
    assert params == {
        "lr": 0.5,
        "sizes": [1, 2],
        "model": f"{__name__}.{Model.__qualname__}",
        "obj": "Model()",
        "steps": 7,
        "tags": ["a", "b"],
    }
    (line,) = read_json_lines(directory / "result.json")
    assert line["acc"] == 0.25 and line["hist"] == [[0.0, 0.0], [0.0, 0.0]]
    assert line["flag"] is True and line["weird"] == {"1": "int key"}
    assert line["config"]["steps"] == 7


def test_csv_logger_flattens_excludes_config_and_fixes_header(trial: FakeTrial) -> None:
    logger = CSVLoggerCallback()
    logger.log_trial_start(trial)
    logger.log_trial_result(0, trial, make_result(trial, 1, info={"grad": 0.5, "deep": {"x": 1}}))
    # a key that appears later is ignored, a missing one is left empty
    second = make_result(trial, 2, info={"grad": 0.25, "deep": {"x": 2}}, late=True)
    del second["hostname"]
    logger.log_trial_result(1, trial, second)
    logger.log_trial_end(trial)

    rows = read_csv(Path(trial.local_path) / "progress.csv")
    header = rows[0]
    assert "config" not in header and not any(h.startswith("config/") for h in header)
    assert header[-2:] == ["info/grad", "info/deep/x"]
    assert "late" not in header
    first = dict(zip(header, rows[1]))
    assert first["loss"] == "1.0" and first["info/grad"] == "0.5" and first["info/deep/x"] == "1"
    assert first["done"] == "False"
    second_row = dict(zip(header, rows[2]))
    assert second_row["hostname"] == "" and second_row["info/deep/x"] == "2"
    assert len(rows) == 3


def test_csv_logger_fast_path_without_nested_values(trial: FakeTrial) -> None:
    logger = CSVLoggerCallback()
    logger.log_trial_start(trial)
    for i in range(1, 4):
        logger.log_trial_result(i, trial, make_result(trial, i, acc=i / 10))
    logger.log_trial_end(trial)
    rows = read_csv(Path(trial.local_path) / "progress.csv")
    header = rows[0]
    assert [dict(zip(header, row))["acc"] for row in rows[1:]] == ["0.1", "0.2", "0.3"]
    assert [dict(zip(header, row))["training_iteration"] for row in rows[1:]] == ["1", "2", "3"]


def test_restart_appends_and_keeps_the_csv_header(trial: FakeTrial) -> None:
    json_logger, csv_logger = JsonLoggerCallback(), CSVLoggerCallback()
    for logger in (json_logger, csv_logger):
        logger.log_trial_start(trial)
        logger.log_trial_result(0, trial, make_result(trial, 1, a=1, b=2))
        logger.log_trial_end(trial, failed=True)  # the trial failed...
    trial.config = {**trial.config, "lr": 0.05}
    for logger in (json_logger, csv_logger):
        logger.log_trial_start(trial)  # ...and is retried
        # keys in another order after the restart: rows still follow the file's header
        restarted = make_result(trial, 2, b=20, a=10)
        logger.log_trial_result(1, trial, restarted)
        logger.log_trial_end(trial)

    directory = Path(trial.local_path)
    assert [r["training_iteration"] for r in read_json_lines(directory / "result.json")] == [1, 2]
    assert json.loads((directory / "params.json").read_text())["lr"] == 0.05
    rows = read_csv(directory / "progress.csv")
    assert len(rows) == 3 and rows[0][-2:] == ["a", "b"]
    assert dict(zip(rows[0], rows[2]))["a"] == "10"


def test_same_logger_object_restarted_without_end(trial: FakeTrial) -> None:
    logger = CSVLoggerCallback()
    logger.log_trial_start(trial)
    logger.log_trial_result(0, trial, make_result(trial, 1))
    logger.log_trial_start(trial)  # restart while the file is open (e.g. unpause)
    logger.log_trial_result(1, trial, make_result(trial, 2))
    logger.on_experiment_end([trial])
    rows = read_csv(Path(trial.local_path) / "progress.csv")
    assert len(rows) == 3 and rows[0][0] == "loss"


def test_result_before_start_starts_the_trial(trial: FakeTrial) -> None:
    logger = JsonLoggerCallback()
    logger.log_trial_result(0, trial, make_result(trial, 1))
    logger.flush()
    directory = Path(trial.local_path)
    assert (directory / "params.json").exists()
    assert len(read_json_lines(directory / "result.json")) == 1
    logger.on_experiment_end([trial])


def test_buffered_output_is_flushed_by_flush_and_step_end(trial: FakeTrial) -> None:
    logger = JsonLoggerCallback()
    logger.log_trial_start(trial)
    logger.log_trial_result(0, trial, make_result(trial, 1))
    result_file = Path(trial.local_path) / "result.json"
    logger.flush()
    assert len(read_json_lines(result_file)) == 1
    logger.log_trial_result(1, trial, make_result(trial, 2))
    logger.flush_interval_s = 0.0  # the next step end is past the flush interval
    logger.on_step_end(1, [trial])
    assert len(read_json_lines(result_file)) == 2
    logger.log_trial_end(trial)


def test_open_file_limit_closes_and_reopens(tmp_path: Path) -> None:
    trials = [FakeTrial(tmp_path, f"t_{i}", {"i": i}) for i in range(5)]
    json_logger, csv_logger = JsonLoggerCallback(), CSVLoggerCallback()
    for logger in (json_logger, csv_logger):
        logger.max_open_files = 2
        for t in trials:
            logger.log_trial_start(t)
        for iteration in range(1, 4):
            for t in trials:
                logger.log_trial_result(iteration, t, make_result(t, iteration))
        assert len(logger._files) <= 2
        for t in trials:
            logger.log_trial_end(t)
    for t in trials:
        directory = Path(t.local_path)
        assert [r["training_iteration"] for r in read_json_lines(directory / "result.json")] == [
            1,
            2,
            3,
        ]
        rows = read_csv(directory / "progress.csv")
        assert len(rows) == 4 and rows[0][0] == "loss"


def test_loggers_pickle_without_their_files(trial: FakeTrial) -> None:
    logger = JsonLoggerCallback()
    logger.log_trial_start(trial)
    logger.log_trial_result(0, trial, make_result(trial, 1))
    copy = pickle.loads(pickle.dumps(logger))
    copy.log_trial_result(1, trial, make_result(trial, 2))  # reopens in append mode
    copy.log_trial_end(trial)
    logger.log_trial_end(trial)
    lines = read_json_lines(Path(trial.local_path) / "result.json")
    assert sorted(r["training_iteration"] for r in lines) == [1, 2]


def test_loggers_through_the_plugin_manager(tmp_path: Path) -> None:
    trials = [FakeTrial(tmp_path, f"x_{i}", {"lr": i}) for i in range(3)]
    loggers = [registry.create("logger", "json"), registry.create("logger", "csv")]
    pm = make_plugin_manager(loggers, load_plugins=False)
    for t in trials:
        pm.hook.tunekit_on_trial_start(trial=t, iteration=0, trials=trials)
    for iteration in range(1, 6):
        for t in trials:
            pm.hook.tunekit_on_trial_result(
                trial=t, result=make_result(t, iteration), iteration=iteration, trials=trials
            )
        pm.hook.tunekit_on_step_end(iteration=iteration, trials=trials)
    pm.hook.tunekit_on_trial_complete(trial=trials[0], iteration=6, trials=trials)
    pm.hook.tunekit_on_trial_error(
        trial=trials[1], error=RuntimeError("x"), iteration=6, trials=trials
    )
    pm.hook.tunekit_flush()
    # trial 2 is still running: flush made its rows visible
    assert len(read_csv(Path(trials[2].local_path) / "progress.csv")) == 6
    pm.hook.tunekit_on_experiment_end(trials=trials)
    for t in trials:
        directory = Path(t.local_path)
        assert len(read_json_lines(directory / "result.json")) == 5
        assert json.loads((directory / "params.json").read_text()) == t.config
        assert len(read_csv(directory / "progress.csv")) == 6
    assert not loggers[0]._files and not loggers[1]._files


def test_flatten_dict() -> None:
    assert flatten_dict({"a": 1, "b": {"c": 2, "d": {"e": 3}}, "f": {}, "g": [1]}) == {
        "a": 1,
        "b/c": 2,
        "b/d/e": 3,
        "g": [1],
    }
    assert flatten_dict({"a": 1, "config": {"x": 1}}, exclude="config") == {"a": 1}
