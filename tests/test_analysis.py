"""ExperimentAnalysis on experiment directories written here and on in-memory trials."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from tunekit.analysis import ExperimentAnalysis
from tunekit_core.analysis import TrialRecord
from tunekit_core.experiment_state import save_experiment_state

# Loss histories chosen so that every scope has a different winner for mode="min":
#   trial  last  last-5-avg  last-10-avg  avg                 min (scope "all")
#   t0     1     1           5            68/12 = 5.667       1
#   t1     2.2   2.2         2.2          2.2                 2.2
#   t2     0.9   2.58        2.79         33.9/12 = 2.825     0.9
#   t3     2.5   2.5         2.5          25.2/12 = 2.1       0.1
#   t4     50    50          50           550.01/12 = 45.83   0.01
LOSSES = {
    "t0": [9.0] * 7 + [1.0] * 5,
    "t1": [2.2] * 12,
    "t2": [3.0] * 11 + [0.9],
    "t3": [0.1, 0.1] + [2.5] * 10,
    "t4": [0.01] + [50.0] * 11,
}
LR = {"t0": 0.1, "t1": 0.2, "t2": 0.3, "t3": 0.4, "t4": 0.5}


class FakeTrial:
    """An in-memory trial with the contract attributes."""

    def __init__(self, trial_id, local_path, config, last_result, status="TERMINATED"):
        self.trial_id = trial_id
        self.trainable_name = "train"
        self.experiment_tag = f"{trial_id}_lr={config.get('lr')}"
        self.config = config
        self.evaluated_params = {"lr": config.get("lr")}
        self.status = status
        self.local_path = local_path
        self.last_result = last_result
        self.error_file = None
        self.error_msg = None
        self.num_failures = 0

    @property
    def logdir(self):
        return self.local_path

    def __str__(self):
        return f"train_{self.trial_id}"


def results_for(trial_id, losses, config):
    rows = []
    for i, loss in enumerate(losses, start=1):
        rows.append(
            {
                "loss": loss,
                "acc": 1.0 - loss / 100,
                "training_iteration": i,
                "trial_id": trial_id,
                "done": i == len(losses),
                "info": {"step": i * 10},
                "config": config,
            }
        )
    return rows


def write_trial_dir(trial_dir, config, rows, result_json=True, progress_csv=True):
    os.makedirs(trial_dir, exist_ok=True)
    with open(os.path.join(trial_dir, "params.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    if result_json:
        with open(os.path.join(trial_dir, "result.json"), "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    if progress_csv:
        flat_rows = [
            {k: v for k, v in row.items() if k not in ("config", "info")}
            | {"info/step": row["info"]["step"]}
            for row in rows
        ]
        with open(os.path.join(trial_dir, "progress.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(flat_rows[0]))
            writer.writeheader()
            writer.writerows(flat_rows)


def make_experiment(root, with_state=True, csv_only=("t4",)):
    """An experiment directory with five trials; returns (exp_dir, in-memory trials)."""
    exp_dir = os.path.join(str(root), "my_exp")
    trials = []
    for trial_id, losses in LOSSES.items():
        config = {"lr": LR[trial_id], "net": {"width": 8}}
        rows = results_for(trial_id, losses, config)
        trial_dir = os.path.join(exp_dir, f"train_{trial_id}")
        write_trial_dir(trial_dir, config, rows, result_json=trial_id not in csv_only)
        trials.append(FakeTrial(trial_id, trial_dir, config, rows[-1]))
    if with_state:
        save_experiment_state(exp_dir, trials, {"iteration": 60}, "2024-01-01_00-00-00")
    return exp_dir, trials


@pytest.fixture
def experiment(tmp_path):
    return make_experiment(tmp_path)


# --------------------------------------------------------------------- best trial and scopes


@pytest.mark.parametrize(
    "scope, expected",
    [("last", "t2"), ("last-5-avg", "t0"), ("last-10-avg", "t1"), ("avg", "t3"), ("all", "t4")],
)
def test_every_scope_min_from_state_file(experiment, scope, expected):
    exp_dir, _ = experiment
    analysis = ExperimentAnalysis(exp_dir)
    assert analysis.get_best_trial("loss", "min", scope=scope).trial_id == expected


@pytest.mark.parametrize(
    "scope, expected",
    [("last", "t2"), ("last-5-avg", "t0"), ("last-10-avg", "t1"), ("avg", "t3"), ("all", "t4")],
)
def test_every_scope_min_from_in_memory_trials(experiment, scope, expected):
    exp_dir, trials = experiment
    analysis = ExperimentAnalysis(os.path.join(exp_dir, "experiment_state-x.json"), trials=trials)
    best = analysis.get_best_trial("loss", "min", scope=scope)
    assert best is next(t for t in trials if t.trial_id == expected)


@pytest.mark.parametrize(
    "scope, expected",
    # max: last 50 (t4); all: max ever 50 (t4); avg: t4 45.83; with metric acc = 1 - loss/100
    [("last", "t4"), ("all", "t4"), ("avg", "t4")],
)
def test_scopes_max(experiment, scope, expected):
    analysis = ExperimentAnalysis(experiment[0])
    assert analysis.get_best_trial("loss", "max", scope=scope).trial_id == expected
    # acc = 1 - loss/100 reverses the order: max acc == min loss
    assert analysis.get_best_trial("acc", "max", scope="avg").trial_id == "t3"


def test_nested_metric_lookup(experiment):
    analysis = ExperimentAnalysis(experiment[0])
    assert (
        analysis.get_best_trial("info/step", "max").trial_id == "t0"
    )  # 12 results each: tie -> first


def test_defaults_and_best_properties(experiment):
    exp_dir, _ = experiment
    analysis = ExperimentAnalysis(exp_dir, default_metric="loss", default_mode="min")
    assert analysis.best_trial.trial_id == "t2"
    assert analysis.best_config == {"lr": 0.3, "net": {"width": 8}}
    assert analysis.best_logdir == os.path.join(exp_dir, "train_t2")
    assert analysis.best_result["loss"] == 0.9
    assert analysis.get_best_trial(scope="avg").trial_id == "t3"
    assert analysis.get_best_config(scope="all") == {"lr": 0.5, "net": {"width": 8}}
    assert analysis.get_best_logdir(mode="max") == os.path.join(exp_dir, "train_t4")
    best_df = analysis.best_dataframe
    assert list(best_df["loss"]) == LOSSES["t2"]
    assert "info/step" in best_df.columns
    result_df = analysis.best_result_df
    assert list(result_df.index) == ["t2"] and result_df.loc["t2", "loss"] == 0.9


def test_only_mode_given_uses_anonymous_metric(tmp_path):
    analysis = ExperimentAnalysis(make_experiment(tmp_path)[0], default_mode="max")
    assert analysis.default_metric == "_metric"


def test_nan_and_inf_are_filtered(tmp_path):
    exp_dir = os.path.join(str(tmp_path), "exp")
    trials = []
    for trial_id, losses in {
        "a": [1.0, float("nan")],
        "b": [4.0, 5.0],
        "c": [0.0, float("inf")],
    }.items():
        trial_dir = os.path.join(exp_dir, trial_id)
        rows = results_for(trial_id, losses, {"lr": 1})
        write_trial_dir(trial_dir, {"lr": 1}, rows)
        trials.append(FakeTrial(trial_id, trial_dir, {"lr": 1}, rows[-1]))
    save_experiment_state(exp_dir, trials, {}, "s")
    analysis = ExperimentAnalysis(exp_dir)
    assert analysis.get_best_trial("loss", "min").trial_id == "b"
    assert analysis.get_best_trial("loss", "max").trial_id == "b"
    assert analysis.get_best_trial("loss", "max", filter_nan_and_inf=False).trial_id == "c"
    # scope "all" ignores NaN values inside a history: a's best ever is 1.0
    assert analysis.get_best_trial("loss", "min", scope="all").trial_id == "c"  # 0.0
    assert analysis.get_best_trial("loss", "max", scope="all").trial_id == "b"  # inf filtered
    # avg of a contains NaN -> filtered; c's avg is inf -> filtered
    assert analysis.get_best_trial("loss", "min", scope="avg").trial_id == "b"


def test_all_scores_nan_returns_none(tmp_path):
    exp_dir = os.path.join(str(tmp_path), "exp")
    trial_dir = os.path.join(exp_dir, "a")
    rows = results_for("a", [float("nan")], {})
    write_trial_dir(trial_dir, {}, rows)
    analysis = ExperimentAnalysis(exp_dir, trials=[FakeTrial("a", trial_dir, {}, rows[-1])])
    assert analysis.get_best_trial("loss", "min") is None
    assert analysis.get_best_config("loss", "min") is None


# --------------------------------------------------------------------- errors


def test_errors_for_missing_or_bad_metric_and_mode(experiment):
    analysis = ExperimentAnalysis(experiment[0])
    with pytest.raises(ValueError, match="metric"):
        analysis.get_best_trial(mode="min")
    with pytest.raises(ValueError, match="mode"):
        analysis.get_best_trial("loss")
    with pytest.raises(ValueError, match="'min' or 'max'"):
        analysis.get_best_trial("loss", "maximize")
    with pytest.raises(ValueError, match="scope"):
        analysis.get_best_trial("loss", "min", scope="best")
    with pytest.raises(ValueError) as info:
        analysis.get_best_trial("accuracy", "max")
    assert "'accuracy'" in str(info.value) and "'loss'" in str(info.value)
    with pytest.raises(ValueError, match="best_trial"):
        _ = analysis.best_trial
    with pytest.raises(ValueError, match="best_config"):
        _ = analysis.best_config
    with pytest.raises(ValueError, match="best_result"):
        _ = analysis.best_result
    with pytest.raises(ValueError, match="default_mode"):
        ExperimentAnalysis(experiment[0], default_mode="maximum")
    with pytest.raises(ValueError, match="metric"):
        analysis.dataframe(mode="min")
    with pytest.raises(ValueError, match="'min' or 'max'"):
        analysis.dataframe("loss", "lowest")
    with pytest.raises(ValueError, match="'nope'"):
        analysis.dataframe("nope", "min")


def test_errors_for_missing_experiments(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ExperimentAnalysis(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No trials found"):
        ExperimentAnalysis(tmp_path / "empty")


# --------------------------------------------------------------------- results and dataframes


def test_results_and_results_df(experiment):
    analysis = ExperimentAnalysis(experiment[0])
    assert set(analysis.results) == set(LOSSES)
    assert analysis.results["t1"]["loss"] == 2.2
    df = analysis.results_df
    assert df.index.name == "trial_id"
    assert sorted(df.index) == sorted(LOSSES)
    assert df.loc["t3", "loss"] == 2.5
    assert df.loc["t3", "config/net/width"] == 8
    assert df.loc["t0", "info/step"] == 120


def test_dataframe_last_and_best_rows(experiment):
    exp_dir, _ = experiment
    analysis = ExperimentAnalysis(exp_dir)
    last = analysis.dataframe().set_index("trial_id")
    assert len(last) == 5
    assert last.loc["t0", "loss"] == 1.0
    assert last.loc["t0", "config/lr"] == 0.1
    assert last.loc["t0", "logdir"] == os.path.join(exp_dir, "train_t0")
    best = analysis.dataframe(metric="loss", mode="min").set_index("trial_id")
    # the lowest loss each trial ever reported (t4 is read from progress.csv)
    assert best["loss"].to_dict() == {"t0": 1.0, "t1": 2.2, "t2": 0.9, "t3": 0.1, "t4": 0.01}
    assert best.loc["t3", "training_iteration"] == 1
    worst = analysis.dataframe(metric="loss", mode="max").set_index("trial_id")
    assert worst.loc["t0", "loss"] == 9.0 and worst.loc["t0", "training_iteration"] == 1
    # default metric/mode are not used by dataframe(): the last rows come back
    with_defaults = ExperimentAnalysis(exp_dir, default_metric="loss", default_mode="min")
    assert with_defaults.dataframe().set_index("trial_id").loc["t3", "loss"] == 2.5


def test_trial_dataframes_json_and_csv_fallback(experiment):
    exp_dir, _ = experiment
    analysis = ExperimentAnalysis(exp_dir)
    frames = analysis.trial_dataframes
    assert set(frames) == {os.path.join(exp_dir, f"train_{t}") for t in LOSSES}
    from_json = frames[os.path.join(exp_dir, "train_t0")]
    assert list(from_json["loss"]) == LOSSES["t0"]
    assert from_json["config/lr"].iloc[0] == 0.1
    from_csv = frames[os.path.join(exp_dir, "train_t4")]
    assert list(from_csv["loss"]) == LOSSES["t4"]
    assert from_csv["trial_id"].iloc[0] == "t4"
    assert analysis.get_trial_dataframes() is frames
    assert analysis.fetch_trial_dataframes().keys() == frames.keys()


def test_get_all_configs(experiment):
    exp_dir, _ = experiment
    analysis = ExperimentAnalysis(exp_dir)
    configs = analysis.get_all_configs()
    assert configs[os.path.join(exp_dir, "train_t1")] == {"lr": 0.2, "net": {"width": 8}}
    prefixed = analysis.get_all_configs(prefix=True)
    assert prefixed[os.path.join(exp_dir, "train_t1")] == {"config/lr": 0.2, "config/net/width": 8}


def test_runner_data_and_paths(experiment):
    exp_dir, _ = experiment
    analysis = ExperimentAnalysis(exp_dir)
    assert analysis.runner_data() == {"iteration": 60}
    assert analysis.experiment_path == exp_dir
    assert analysis.experiment_state_path.endswith("experiment_state-2024-01-01_00-00-00.json")
    by_state_file = ExperimentAnalysis(analysis.experiment_state_path)
    assert [t.trial_id for t in by_state_file.trials] == list(LOSSES)
    assert isinstance(by_state_file.trials[0], TrialRecord)
    assert str(by_state_file.trials[0]) == "train_t0"
    assert by_state_file.trials[0].status == "TERMINATED"


# --------------------------------------------------------------------- loading variants


def test_moved_directory_still_loads(tmp_path):
    exp_dir, _ = make_experiment(tmp_path / "original")
    moved = str(tmp_path / "somewhere" / "else")
    shutil.move(exp_dir, moved)
    analysis = ExperimentAnalysis(moved)
    t0 = next(t for t in analysis.trials if t.trial_id == "t0")
    assert t0.logdir == os.path.join(moved, "train_t0")
    assert analysis.get_best_trial("loss", "min", scope="last-10-avg").trial_id == "t1"
    assert list(analysis.trial_dataframes[t0.logdir]["loss"]) == LOSSES["t0"]


def test_directory_without_state_is_scanned(tmp_path):
    exp_dir, _ = make_experiment(tmp_path, with_state=False)
    # an errored trial, and a trial whose result.json ends with a torn line
    errored = os.path.join(exp_dir, "train_t5")
    write_trial_dir(errored, {"lr": 0.6}, results_for("t5", [7.0, 6.0], {"lr": 0.6})[:1])
    with open(os.path.join(errored, "error.txt"), "w") as f:
        f.write("Traceback ...")
    with open(os.path.join(exp_dir, "train_t1", "result.json"), "a") as f:
        f.write('{"loss": 0.0, "trai')
    analysis = ExperimentAnalysis(exp_dir)
    by_id = {t.trial_id: t for t in analysis.trials}
    assert set(by_id) == set(LOSSES) | {"t5"}
    assert by_id["t0"].status == "TERMINATED"
    assert by_id["t0"].config == {"lr": 0.1, "net": {"width": 8}}
    assert by_id["t1"].last_result["loss"] == 2.2  # torn line ignored
    assert by_id["t4"].last_result["loss"] == 50.0  # from progress.csv
    assert by_id["t5"].status == "ERROR"
    assert by_id["t5"].error_file == os.path.join(errored, "error.txt")
    assert by_id["t0"].logdir == os.path.join(exp_dir, "train_t0")
    assert analysis.get_best_trial("loss", "min", scope="avg").trial_id == "t3"
    assert analysis.runner_data() == {}


def test_scan_reads_last_result_of_large_files(tmp_path):
    exp_dir = os.path.join(str(tmp_path), "exp")
    rows = results_for("big", [float(i) for i in range(3000)], {"pad": "x" * 50})
    write_trial_dir(os.path.join(exp_dir, "big"), {"pad": "x" * 50}, rows, progress_csv=False)
    assert os.path.getsize(os.path.join(exp_dir, "big", "result.json")) > 4 * 65536
    analysis = ExperimentAnalysis(exp_dir)
    assert analysis.trials[0].last_result["loss"] == 2999.0


def test_in_memory_trials_do_not_read_state_file(tmp_path):
    exp_dir, trials = make_experiment(tmp_path, with_state=False)
    state_path = os.path.join(exp_dir, "experiment_state-2024.json")
    with open(state_path, "w") as f:
        f.write("this is not json")
    analysis = ExperimentAnalysis(
        state_path, trials=trials, default_metric="loss", default_mode="min"
    )
    assert analysis.trials == trials
    assert analysis.best_trial is trials[2]
    assert analysis.results["t0"] is trials[0].last_result


def test_in_memory_trial_without_files_uses_last_result(tmp_path):
    trial = FakeTrial("x", str(tmp_path / "nowhere"), {"lr": 1}, {"loss": 3.0, "trial_id": "x"})
    other = FakeTrial("y", None, {"lr": 2}, {}, status="PENDING")
    analysis = ExperimentAnalysis(str(tmp_path), trials=[trial, other])
    assert analysis.get_best_trial("loss", "min", scope="avg") is trial
    assert analysis.trial_dataframes[str(tmp_path / "nowhere")].empty
    assert list(analysis.get_all_configs()) == [str(tmp_path / "nowhere")]
    df = analysis.results_df
    assert sorted(df.index) == ["x", "y"]
    assert math.isnan(df.loc["y", "loss"])


def test_importing_analysis_does_not_import_pandas():
    code = (
        "import sys, tunekit_core.analysis, tunekit_core.progress, tunekit_core.stopper, "
        "tunekit_core.experiment_state, tunekit.analysis, tunekit.stopper, tunekit.progress_reporter; "
        "print('pandas' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
