"""The MLflow logger (tunekit-mlflow) on real runs, read back with MlflowClient from a file store."""

from __future__ import annotations

import os
import pickle

import pytest
from mlflow.tracking import MlflowClient

import tunekit as tune

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture(autouse=True)
def _environment(monkeypatch):
    monkeypatch.setenv("TUNEKIT_STOP_GRACE_S", "2")
    # MLflow 3 refuses the file store unless asked for it; the tests read runs from files.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)


def run(trainable, tmp_path, **kwargs):
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("storage_path", str(tmp_path / "results"))
    return tune.run(trainable, **kwargs)


# -- trainables (module level: workers import this module) ---------------------------------

LOSSES = {1: 3.0, 2: 1.0, 3: 2.0}  # the best checkpoint by loss is not the latest


def train(config):
    for step in range(1, 4):
        if config["fail"] and step == 3:
            raise RuntimeError("fails at the third iteration")
        tune.report(
            {"loss": LOSSES[step] * config["scale"], "nested": {"acc": step / 4}, "tag": "x"},
            checkpoint=tune.Checkpoint.from_dict({"step": step}),
        )


# -- helpers ----------------------------------------------------------------------------------


def runs_by_trial(client: MlflowClient, experiment_name: str) -> dict[str, object]:
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, f"no MLflow experiment {experiment_name!r}"
    runs = client.search_runs([experiment.experiment_id])
    by_trial = {run.data.tags["trial_id"]: run for run in runs}
    assert len(by_trial) == len(runs), "one run per trial"
    return by_trial


def history(client: MlflowClient, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def checkpoint_step(client: MlflowClient, run, tmp_path) -> int:
    local = client.download_artifacts(run.info.run_id, "best_checkpoint", str(tmp_path))
    with open(os.path.join(local, "dict_checkpoint.pkl"), "rb") as f:
        return pickle.load(f)["step"]


# -- tests ------------------------------------------------------------------------------------


def test_runs_params_metrics_status_and_best_checkpoint(tmp_path):
    from tunekit.logger import MLflowLoggerCallback

    uri = f"file:{tmp_path / 'mlruns'}"
    callback = MLflowLoggerCallback(
        uri,
        experiment_name="tk-exp",
        tags={"owner": "tests"},
        save_artifact=True,
    )
    analysis = run(
        train,
        tmp_path,
        config={
            "scale": tune.grid_search([1.0, 10.0]),
            "fail": tune.grid_search([False, True]),
            "opt": {"name": "sgd", "momentum": 0.9},
        },
        callbacks=[callback],
        checkpoint_score_attr="min-loss",
        raise_on_failed_trial=False,
    )
    client = MlflowClient(tracking_uri=uri)
    runs = runs_by_trial(client, "tk-exp")
    assert set(runs) == {trial.trial_id for trial in analysis.trials}
    for trial in analysis.trials:
        mlflow_run = runs[trial.trial_id]
        scale, fails = trial.config["scale"], trial.config["fail"]
        assert mlflow_run.info.run_name == str(trial)
        assert mlflow_run.data.tags["trial_name"] == str(trial)
        assert mlflow_run.data.tags["owner"] == "tests"
        assert mlflow_run.data.params == {
            "scale": str(scale),
            "fail": str(fails),
            "opt/name": "sgd",
            "opt/momentum": "0.9",
        }
        steps = [1, 2] if fails else [1, 2, 3]
        assert history(client, mlflow_run, "loss") == [(s, LOSSES[s] * scale) for s in steps]
        assert history(client, mlflow_run, "nested/acc") == [(s, s / 4) for s in steps]
        metrics = set(mlflow_run.data.metrics)
        assert {"loss", "nested/acc", "training_iteration", "time_this_iter_s"} <= metrics
        assert "tag" not in metrics and not any(m.startswith("config/") for m in metrics)
        assert mlflow_run.info.status == ("FAILED" if fails else "FINISHED")

        # best by min-loss: iteration 2 (loss 1.0), not the latest
        assert checkpoint_step(client, mlflow_run, tmp_path / trial.trial_id) == 2
        assert mlflow_run.data.tags["best_checkpoint_iteration"] == "2"
        assert float(mlflow_run.data.tags["best_checkpoint_score"]) == 1.0 * scale

        # save_artifact=True: the whole trial directory as well
        artifacts = {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
        assert {"params.json", "result.json", "progress.csv", "best_checkpoint"} <= artifacts
        assert "checkpoint_000002" in artifacts


def test_callbacks_by_name_use_mlflow_defaults(tmp_path, monkeypatch):
    uri = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    analysis = run(
        train,
        tmp_path,
        name="byname",
        config={"scale": 1.0, "fail": False},
        callbacks=["mlflow"],
    )
    (trial,) = analysis.trials
    client = MlflowClient(tracking_uri=uri)
    # no experiment_name: the tunekit experiment's name
    mlflow_run = runs_by_trial(client, "byname")[trial.trial_id]
    assert mlflow_run.info.status == "FINISHED"
    assert history(client, mlflow_run, "loss") == [(1, 3.0), (2, 1.0), (3, 2.0)]
    # no checkpoint_score_attr: the latest checkpoint is the best
    assert checkpoint_step(client, mlflow_run, tmp_path / "dl") == 3
    # save_artifact defaults to False: only the best checkpoint
    artifacts = {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
    assert artifacts == {"best_checkpoint"}


def test_public_import_paths_and_pickling():
    from tunekit_mlflow import MLflowLoggerCallback

    import tunekit.integration.mlflow
    import tunekit.logger

    assert tunekit.logger.MLflowLoggerCallback is MLflowLoggerCallback
    assert tunekit.integration.mlflow.MLflowLoggerCallback is MLflowLoggerCallback
    callback = MLflowLoggerCallback("file:/nowhere", experiment_name="e", tags={"a": 1})
    copy = pickle.loads(pickle.dumps(callback))
    assert (copy.tracking_uri, copy.experiment_name, copy.tags) == ("file:/nowhere", "e", {"a": 1})


def fails_first_attempt(config):
    marker = os.path.join(config["marker_dir"], "attempted")
    first = not os.path.exists(marker)
    open(marker, "w").close()
    for step in range(1, 3):
        tune.report(loss=float(step))
        if first:
            raise RuntimeError("first attempt fails")


def test_retried_trial_keeps_one_run(tmp_path):
    from tunekit.logger import MLflowLoggerCallback

    uri = f"file:{tmp_path / 'mlruns'}"
    analysis = run(
        fails_first_attempt,
        tmp_path,
        config={"marker_dir": str(tmp_path)},
        max_failures=1,
        callbacks=[MLflowLoggerCallback(uri, experiment_name="retry")],
    )
    (trial,) = analysis.trials
    assert trial.num_failures == 1
    client = MlflowClient(tracking_uri=uri)
    (mlflow_run,) = runs_by_trial(client, "retry").values()
    assert mlflow_run.info.status == "FINISHED"
    # MLflow keeps every point: the first attempt's iteration 1, then the retry's 1 and 2
    assert history(client, mlflow_run, "loss") == [(1, 1.0), (1, 1.0), (2, 2.0)]


class ResumedTrial:
    """What a logger sees of a trial that a new driver process resumed."""

    def __init__(self, trial_id: str, local_path: str) -> None:
        self.trial_id = trial_id
        self.config = {"lr": 0.1}
        self.experiment_name = "resumed"
        self.local_path = local_path
        self.last_result = {"loss": 1.0, "training_iteration": 1}

    def __str__(self) -> str:
        return f"train_{self.trial_id}"


def test_resumed_trial_continues_its_run(tmp_path):
    from tunekit.logger import MLflowLoggerCallback

    uri = f"file:{tmp_path / 'mlruns'}"
    trial = ResumedTrial("abc_00000", str(tmp_path))
    trial.last_result = {}
    first = MLflowLoggerCallback(uri)  # experiment: the trial's experiment name
    first.setup()
    first.log_trial_start(trial)
    first.log_trial_result(1, trial, {"loss": 1.0, "training_iteration": 1})
    first.on_experiment_end(trials=[trial])  # the driver stops before the trial ends
    client = MlflowClient(tracking_uri=uri)
    (killed,) = runs_by_trial(client, "resumed").values()
    assert killed.info.status == "KILLED"

    trial.last_result = {"loss": 1.0, "training_iteration": 1}
    second = MLflowLoggerCallback(uri)  # a new driver process resumes the experiment
    second.setup()
    second.log_trial_start(trial)
    second.log_trial_result(2, trial, {"loss": 0.5, "training_iteration": 2})
    second.log_trial_end(trial)
    (resumed,) = runs_by_trial(client, "resumed").values()
    assert resumed.info.run_id == killed.info.run_id
    assert resumed.info.status == "FINISHED"
    assert resumed.data.params == {"lr": "0.1"}
    assert history(client, resumed, "loss") == [(1, 1.0), (2, 0.5)]
