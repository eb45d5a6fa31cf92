"""Ray Tune 2.x's Tuner API on tunekit's engine: Tuner, TuneConfig, RunConfig,
CheckpointConfig, FailureConfig, ResultGrid, Result, with_resources, get_context,
Tuner.restore after a killed driver, and the errors for Ray-only features.

Written the way a Ray Tune 2.x user writes it (``import tunekit as tune``).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

import tunekit as tune

# --------------------------------------------------------------------------- trainables


def objective(config):
    """Counts to 4; the score grows with x. Resumes from its checkpoint."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint.to_dict()["step"]
    for step in range(start + 1, config.get("steps", 4) + 1):
        score = config["x"] * step + config.get("lr", 0.0)
        tune.report({"score": score, "neg": -score}, checkpoint=tune.Checkpoint.from_dict({"step": step}))


class Counter(tune.Trainable):
    """Reports the scores of config['scores'] in turn; saves and loads its step."""

    def setup(self, config):
        self.step_no = 0
        self.scores = config["scores"]

    def step(self):
        self.step_no += 1
        return {"score": self.scores[self.step_no - 1], "step_no": self.step_no}

    def save_checkpoint(self, checkpoint_dir):
        return {"step_no": self.step_no}

    def load_checkpoint(self, state):
        self.step_no = state["step_no"]


class NoSave(tune.Trainable):
    """A class trainable without save_checkpoint."""

    def step(self):
        return {"score": 1.0}


def _context_reporter():
    def report_context(config):
        ctx = tune.get_context()
        tune.report(
            {
                "cpu": ctx.get_trial_resources().required_resources.get("CPU"),
                "ctx_id": ctx.get_trial_id(),
                "ctx_name": ctx.get_trial_name(),
                "ctx_dir": ctx.get_trial_dir(),
                "ctx_exp": ctx.get_experiment_name(),
            }
        )

    return report_context


class ContextClass(tune.Trainable):
    def step(self):
        return {
            "cpu": tune.get_context().get_trial_resources().required_resources["CPU"],
            "done": True,
        }


def _run_config(tmp_path, name, **kwargs):
    return tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0, **kwargs)


# --------------------------------------------------------------------------- configs


def test_config_defaults_are_ray_tune_2x_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEKIT_RESULTS_DIR", str(tmp_path / "results"))
    tc = tune.TuneConfig()
    assert (tc.mode, tc.metric, tc.search_alg, tc.scheduler) == (None, None, None, None)
    assert (tc.num_samples, tc.max_concurrent_trials, tc.time_budget_s, tc.reuse_actors) == (1, None, None, False)
    assert (tc.trial_name_creator, tc.trial_dirname_creator) == (None, None)
    cc = tune.CheckpointConfig()
    assert (cc.num_to_keep, cc.checkpoint_score_attribute, cc.checkpoint_score_order) == (None, None, "max")
    assert (cc.checkpoint_frequency, cc.checkpoint_at_end) == (0, None)
    fc = tune.FailureConfig()
    assert (fc.max_failures, fc.fail_fast) == (0, False)
    rc = tune.RunConfig()
    assert rc.name is None
    assert rc.storage_path == str(tmp_path / "results")
    assert rc.checkpoint_config == tune.CheckpointConfig()
    assert rc.failure_config == tune.FailureConfig()
    assert (rc.stop, rc.callbacks, rc.progress_reporter, rc.sync_config) == (None, None, None, None)
    assert rc.log_to_file is False and rc.verbose == 3

    # the default experiment name: the trainable's name and the time
    tuner = tune.Tuner(objective, param_space={"x": 1.0})
    assert re.fullmatch(r"objective_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", tuner._run_config.name)
    assert tune.Tuner.can_restore(os.path.join(str(tmp_path / "results"), tuner._run_config.name))
    monkeypatch.setenv("TUNEKIT_DISABLE_DATED_SUBDIR", "1")
    assert tune.Tuner(objective)._run_config.name == "objective"


def test_config_validation_errors():
    with pytest.raises(ValueError, match="num_to_keep"):
        tune.CheckpointConfig(num_to_keep=0)
    with pytest.raises(ValueError, match="checkpoint_score_order"):
        tune.CheckpointConfig(checkpoint_score_order="best")
    with pytest.raises(ValueError, match="checkpoint_frequency"):
        tune.CheckpointConfig(checkpoint_frequency=-1)
    with pytest.raises(ValueError, match="max_failures must be 0"):
        tune.FailureConfig(max_failures=2, fail_fast=True)
    with pytest.raises(ValueError, match="fail_fast"):
        tune.FailureConfig(fail_fast="sometimes")
    with pytest.raises(ValueError, match="mode"):
        tune.TuneConfig(mode="best")
    with pytest.raises(ValueError, match="verbose"):
        tune.RunConfig(verbose=7)
    with pytest.raises(ValueError, match="must be a dict"):
        tune.Tuner(objective, param_space=[1, 2])
    with pytest.raises(tune.TuneError, match="provide a trainable"):
        tune.Tuner()


# --------------------------------------------------------------------------- fit and ResultGrid


def test_function_trainable_fit_and_result_grid(tmp_path):
    tuner = tune.Tuner(
        objective,
        param_space={"x": tune.grid_search([1.0, 3.0, 2.0]), "lr": 0.5},
        tune_config=tune.TuneConfig(metric="score", mode="max"),
        run_config=_run_config(tmp_path, "fn", stop={"training_iteration": 3}),
    )
    grid = tuner.fit()
    assert grid.experiment_path == str(tmp_path / "fn")
    assert len(grid) == 3 and grid.num_terminated == 3 and grid.num_errors == 0 and grid.errors == []
    assert [r.config["x"] for r in grid] == [1.0, 3.0, 2.0]
    assert grid[-1].config == {"x": 2.0, "lr": 0.5}
    with pytest.raises(IndexError):
        grid[3]
    best = grid.get_best_result()
    assert best.config["x"] == 3.0 and best.metrics["score"] == 3.0 * 3 + 0.5
    assert best.error is None
    assert best.path.startswith(grid.experiment_path) and os.path.isdir(best.path)
    assert best.checkpoint.to_dict() == {"step": 3}
    assert grid.get_best_result(metric="neg", mode="max").config["x"] == 1.0
    assert grid.get_best_result(metric="score", mode="min", scope="all").metrics["training_iteration"] == 3
    frame = best.metrics_dataframe
    assert list(frame["training_iteration"]) == [1, 2, 3]
    assert list(frame["score"]) == [3.5, 6.5, 9.5]
    df = grid.get_dataframe()
    assert sorted(df["config/x"]) == [1.0, 2.0, 3.0] and set(df["training_iteration"]) == {3}
    best_rows = grid.get_dataframe(filter_metric="score", filter_mode="min")
    assert set(best_rows["training_iteration"]) == {1}
    assert [c.to_dict()["step"] for c, _ in best.best_checkpoints] == [1, 2, 3]
    assert [m["score"] for _, m in best.best_checkpoints] == [3.5, 6.5, 9.5]
    assert "ResultGrid<[" in repr(grid) and "Result(" in repr(best)
    assert tuner.get_results()[1].config["x"] == 3.0

    # the experiment directory is an ordinary one: ExperimentAnalysis reads it
    analysis = tune.ExperimentAnalysis(grid.experiment_path)
    assert analysis.get_best_config("score", "max") == {"x": 3.0, "lr": 0.5}
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    # and a ResultGrid reads it back from disk with the same results
    again = tune.ResultGrid(grid.experiment_path)
    assert again.get_best_result("score", "max").config == best.config
    assert again.get_best_result("score", "max").checkpoint.to_dict() == {"step": 3}


def test_result_grid_from_a_run_experiment(tmp_path):
    analysis = tune.run(
        objective,
        config={"x": tune.grid_search([2.0, 1.0])},
        metric="score",
        mode="max",
        name="via_run",
        storage_path=str(tmp_path),
        verbose=0,
    )
    grid = tune.ResultGrid(analysis)
    assert grid.get_best_result().config == {"x": 2.0}
    assert grid.get_best_result().checkpoint.to_dict() == {"step": 4}
    from_disk = tune.ResultGrid(tune.ExperimentAnalysis(str(tmp_path / "via_run")))
    assert len(from_disk) == 2 and from_disk.num_terminated == 2
    assert from_disk.get_best_result(metric="score", mode="min").config == {"x": 1.0}
    with pytest.raises(ValueError, match="No metric"):
        from_disk.get_best_result()
    # a run() experiment has no Tuner state: restore says how to continue it instead
    assert not tune.Tuner.can_restore(str(tmp_path / "via_run"))
    with pytest.raises(ValueError, match="resume=True"):
        tune.Tuner.restore(str(tmp_path / "via_run"), objective)


def test_get_context_and_with_resources(tmp_path):
    # a function of the config, on a function trainable
    trainable = tune.with_resources(_context_reporter(), lambda config: {"cpu": config["c"]})
    grid = tune.Tuner(
        trainable,
        param_space={"c": tune.grid_search([0.5, 1.0])},
        tune_config=tune.TuneConfig(trial_name_creator=lambda t: f"trial_{t.trial_id}"),
        run_config=_run_config(tmp_path, "ctx"),
    ).fit()
    for result in grid:
        metrics = result.metrics
        assert metrics["cpu"] == result.config["c"]
        assert metrics["ctx_id"] == metrics["trial_id"]
        assert metrics["ctx_name"] == f"trial_{metrics['trial_id']}"
        assert metrics["ctx_dir"] == result.path
        assert metrics["ctx_exp"] == "ctx"
    # a dict on a function trainable
    grid = tune.Tuner(
        tune.with_resources(_context_reporter(), {"cpu": 2}), run_config=_run_config(tmp_path, "dict")
    ).fit()
    assert grid[0].metrics["cpu"] == 2.0
    # a PlacementGroupFactory on a class trainable
    grid = tune.Tuner(
        tune.with_resources(ContextClass, tune.PlacementGroupFactory([{"CPU": 1}, {"CPU": 0.5}])),
        run_config=_run_config(tmp_path, "pgf"),
    ).fit()
    assert grid[0].metrics["cpu"] == 1.5
    # outside a trial
    with pytest.raises(RuntimeError, match="outside a trial"):
        tune.get_context().get_trial_id()
    with pytest.raises(ValueError, match="resources must be"):
        tune.with_resources(objective, 3)


# --------------------------------------------------------------------------- checkpoints


def test_class_trainable_checkpoint_config(tmp_path):
    scores = [5.0, 1.0, 4.0, 2.0, 6.0, 3.0, 7.0, 8.0]
    grid = tune.Tuner(
        Counter,
        param_space={"scores": scores},
        run_config=_run_config(
            tmp_path,
            "cls",
            stop={"training_iteration": 8},
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=2,
                checkpoint_score_attribute="score",
                checkpoint_score_order="min",
                checkpoint_frequency=2,
            ),
        ),
    ).fit()
    result = grid[0]
    assert result.metrics["training_iteration"] == 8
    # checkpoints at 2, 4, 6, 8; kept: the lowest score (iteration 2) and the latest
    kept = sorted(os.path.basename(c.path) for c, _ in result.best_checkpoints)
    assert kept == ["checkpoint_000002", "checkpoint_000008"]
    assert sorted(n for n in os.listdir(result.path) if n.startswith("checkpoint_")) == kept
    # worst first by the score attribute
    assert [m["score"] for _, m in result.best_checkpoints] == [8.0, 1.0]
    assert result.get_best_checkpoint("score", "min").to_dict() == {"step_no": 2}
    assert result.checkpoint.to_dict() == {"step_no": 8}


def test_checkpoint_at_end_defaults(tmp_path):
    # class trainables that can save: a checkpoint at the end, as in Ray Tune
    grid = tune.Tuner(
        Counter, param_space={"scores": [1.0] * 5}, run_config=_run_config(tmp_path, "end", stop={"training_iteration": 3})
    ).fit()
    assert grid[0].checkpoint.to_dict() == {"step_no": 3}
    grid = tune.Tuner(
        Counter,
        param_space={"scores": [1.0] * 5},
        run_config=_run_config(
            tmp_path, "no_end", stop={"training_iteration": 3},
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
        ),
    ).fit()
    assert grid[0].checkpoint is None
    # a class without save_checkpoint is not checkpointed (instead of failing)
    grid = tune.Tuner(NoSave, run_config=_run_config(tmp_path, "nosave", stop={"training_iteration": 2})).fit()
    assert grid.num_terminated == 1 and grid[0].checkpoint is None
    # function trainables report their own checkpoints (Ray Tune's errors)
    for bad in (tune.CheckpointConfig(checkpoint_at_end=True), tune.CheckpointConfig(checkpoint_frequency=2)):
        tuner = tune.Tuner(objective, param_space={"x": 1.0}, run_config=_run_config(tmp_path, "bad", checkpoint_config=bad))
        with pytest.raises(ValueError, match="function trainable"):
            tuner.fit()


def test_function_checkpoints_keep_the_best_by_score(tmp_path):
    grid = tune.Tuner(
        objective,
        param_space={"x": 1.0, "steps": 5},
        run_config=_run_config(
            tmp_path,
            "keep",
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="score"),
        ),
    ).fit()
    # max order: the two highest scores are the two latest
    assert [c.to_dict()["step"] for c, _ in grid[0].best_checkpoints] == [4, 5]


# --------------------------------------------------------------------------- failures


def flaky(config):
    """Fails once at step 3 (a marker in the trial directory remembers it)."""
    trial_dir = tune.get_context().get_trial_dir()
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint.to_dict()["step"]
    for step in range(start + 1, 6):
        with open(os.path.join(trial_dir, "executed.log"), "a") as f:
            f.write(f"{step}\n")
        marker = os.path.join(trial_dir, "failed_once")
        if step == 3 and (config.get("always") or not os.path.exists(marker)):
            open(marker, "w").close()
            raise ValueError(f"boom at step {step}")
        tune.report({"step": step}, checkpoint=tune.Checkpoint.from_dict({"step": step}))


def _executed(result):
    with open(os.path.join(result.path, "executed.log")) as f:
        return [int(line) for line in f.read().split()]


def test_failure_config_max_failures_retries_from_the_checkpoint(tmp_path):
    grid = tune.Tuner(
        flaky,
        run_config=_run_config(tmp_path, "retry", failure_config=tune.FailureConfig(max_failures=1)),
    ).fit()
    result = grid[0]
    assert grid.num_terminated == 1 and result.error is None
    assert _executed(result) == [1, 2, 3, 3, 4, 5]  # continued from the checkpoint of step 2
    assert list(result.metrics_dataframe["step"]) == [1, 2, 3, 4, 5]

    grid = tune.Tuner(flaky, param_space={"always": True}, run_config=_run_config(tmp_path, "no_retry")).fit()
    result = grid[0]
    assert grid.num_errors == 1 and grid.num_terminated == 0
    assert isinstance(result.error, ValueError) and "boom at step 3" in str(result.error)
    assert grid.errors == [result.error]
    assert result.checkpoint.to_dict() == {"step": 2}
    assert result.metrics["step"] == 2
    # read back from disk, the error is the same exception
    again = tune.ResultGrid(grid.experiment_path)
    assert isinstance(again[0].error, ValueError)


def test_failure_config_fail_fast(tmp_path):
    def fail_second(config):
        if config["i"] == 1:
            raise RuntimeError("second trial fails")
        tune.report({"i": config["i"]})

    grid = tune.Tuner(
        fail_second,
        param_space={"i": tune.grid_search([0, 1, 2, 3])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=_run_config(tmp_path, "ff", failure_config=tune.FailureConfig(fail_fast=True)),
    ).fit()
    assert grid.num_errors == 1
    assert isinstance(grid[1].error, RuntimeError)
    assert grid[0].metrics["i"] == 0
    assert all(not r.metrics for r in grid[2:])  # never ran: the first failure ended the run

    tuner = tune.Tuner(
        fail_second,
        param_space={"i": tune.grid_search([0, 1, 2])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=_run_config(tmp_path, "raise", failure_config=tune.FailureConfig(fail_fast="raise")),
    )
    with pytest.raises(RuntimeError, match="second trial fails"):
        tuner.fit()


# --------------------------------------------------------------------------- plugins


DESCENDING = {"x": tune.grid_search([0.6, 0.5, 0.4, 0.3, 0.2, 0.1]), "steps": 9}


def _fit(tmp_path, name, **tune_config):
    return tune.Tuner(
        objective,
        param_space=dict(DESCENDING),
        tune_config=tune.TuneConfig(metric="score", mode="max", **tune_config),
        run_config=_run_config(tmp_path, name),
    ).fit()


def _iterations(grid):
    return [r.metrics["training_iteration"] for r in grid]


# Plugin classes are imported inside the tests: importing them at collection time would
# cache them in the lazy facades that tests/test_registry.py checks.
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("ASHAScheduler", {"max_t": 9, "grace_period": 1, "reduction_factor": 2}),
        ("HyperBandScheduler", {"max_t": 9, "reduction_factor": 3}),
        (
            "MedianStoppingRule",
            {"time_attr": "training_iteration", "grace_period": 2, "min_samples_required": 2},
        ),
    ],
    ids=["asha", "hyperband", "median_stopping_rule"],
)
def test_early_stopping_schedulers_by_object(tmp_path, name, kwargs):
    import tunekit.schedulers

    scheduler = getattr(tunekit.schedulers, name)(**kwargs)
    grid = _fit(tmp_path, "sched", scheduler=scheduler)
    iterations = _iterations(grid)
    assert grid.num_terminated == 6
    assert iterations[0] == 9  # the best trial runs to the end
    assert min(iterations) < 9  # worse ones were stopped early


@pytest.mark.parametrize(
    "name", ["asha", "async_hyperband", "hyperband", "median_stopping_rule", "fifo"]
)
def test_schedulers_by_name(tmp_path, name):
    # One trial at a time, best first: with two at a time, whichever of the first two
    # reaches ASHA's first rung alone is promoted, so the outcome would depend on timing.
    grid = _fit(tmp_path, name, scheduler=name, max_concurrent_trials=1)
    assert grid.num_terminated == 6
    assert _iterations(grid)[0] == 9
    if name in ("asha", "async_hyperband"):  # defaults: grace period 1, reduction factor 4
        assert _iterations(grid)[1:] == [1] * 5
    else:  # HyperBand's first bracket (5 trials) runs to max_t=81; the others never stop
        assert _iterations(grid) == [9] * 6


def test_fifo_and_async_hyperband_by_object(tmp_path):
    import tunekit.schedulers

    grid = _fit(tmp_path, "fifo_obj", scheduler=tunekit.schedulers.FIFOScheduler())
    assert grid.num_terminated == 6 and _iterations(grid) == [9] * 6
    scheduler = tunekit.schedulers.AsyncHyperBandScheduler(max_t=9, grace_period=3,
                                                           reduction_factor=3)
    grid = _fit(tmp_path, "async_hb_obj", scheduler=scheduler, max_concurrent_trials=1)
    # rung at 3 (and 9 = max_t): x=.6 goes on; each later (worse) trial is below the
    # 2/3 quantile of the earlier ones there and stops
    assert _iterations(grid) == [9, 3, 3, 3, 3, 3]


def test_hb_bohb_by_name_and_by_object(tmp_path):
    import tunekit.schedulers

    # By object: max_t=9, eta=3; HyperBand for BOHB fills its largest bracket first (9
    # trials, milestones 1 and 3). Only 6 trials come, so the bracket halves once none
    # runs: the best ceil(9/3)=3 go on to 3, then the best one to 9.
    scheduler = tunekit.schedulers.HyperBandForBOHB(max_t=9, reduction_factor=3)
    grid = _fit(tmp_path, "hb_bohb_obj", scheduler=scheduler)
    assert grid.num_terminated == 6
    assert _iterations(grid) == [9, 3, 3, 1, 1, 1]
    # results carry the budget a BOHB searcher reads
    assert [r.metrics["hyperband_info"] for r in grid] == [
        {"budget": 9}, {"budget": 3}, {"budget": 3}, {"budget": 1}, {"budget": 1}, {"budget": 1}]
    # By name (max_t=81): the largest bracket takes 81 trials and keeps 27, then 9, then
    # 3: all 6 reach their own end at 9, after waiting at the milestones 1, 3 and 9.
    # (Not with max_concurrent_trials=1: its limiter counts paused trials as running, so
    # the bracket would halve before the second trial is created, as in Ray Tune.)
    grid = _fit(tmp_path, "hb_bohb", scheduler="hb_bohb")
    assert grid.num_terminated == 6 and _iterations(grid) == [9] * 6
    for result in grid:
        with open(os.path.join(result.path, "result.json")) as f:
            budgets = [json.loads(line)["hyperband_info"] for line in f]
        assert [b.get("budget") for b in budgets] == [1, None, 3, None, None, None, None, None, 9]


@pytest.mark.parametrize("how", ["by_name", "by_object"])
@pytest.mark.parametrize("name", ["pbt", "pb2"])
def test_population_based_schedulers(tmp_path, name, how):
    import tunekit.schedulers

    if name == "pbt":
        kwargs = {"hyperparam_mutations": {"lr": tune.uniform(0.0, 1.0)}}
        cls = tunekit.schedulers.PopulationBasedTraining
    else:
        kwargs = {"hyperparam_bounds": {"lr": [0.0, 1.0]}}
        cls = tunekit.schedulers.PB2
    # by name they need their search space, so the name goes through create_scheduler
    make = functools.partial(tune.create_scheduler, name) if how == "by_name" else cls
    scheduler = make(time_attr="training_iteration", perturbation_interval=2, **kwargs)
    assert type(scheduler) is cls
    grid = tune.Tuner(
        objective,
        param_space={"x": tune.grid_search([0.6, 0.5, 0.1, 0.2]), "lr": 0.5, "steps": 8},
        tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=scheduler),
        run_config=_run_config(tmp_path, name),
    ).fit()
    # (a trial that exploits a finished trial's last checkpoint has nothing left to run)
    assert grid.num_terminated == 4 and max(_iterations(grid)) == 8
    # bottom trials exploited top ones: recorded in the experiment directory
    with open(os.path.join(grid.experiment_path, "pbt_global.txt")) as f:
        assert f.read().strip()
    # by bare name they need their search space, as in Ray Tune
    with pytest.raises(ValueError, match="hyperparam_"):
        _fit(tmp_path, f"{name}_bare", scheduler=name)


def _rows(result):
    with open(os.path.join(result.path, "result.json")) as f:
        return [json.loads(line) for line in f]


def test_pbt_replay_by_object_and_by_name(tmp_path):
    import random

    from tunekit.schedulers import PopulationBasedTraining, PopulationBasedTrainingReplay

    random.seed(3)
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=2,
                                  hyperparam_mutations={"lr": tune.uniform(0.0, 1.0)},
                                  log_config=True)
    grid = tune.Tuner(
        objective,
        # 9 steps: the last perturbation point (8) is not the last iteration, so every
        # exploit the policy files record also shows in the trial's rows and final config
        # (an exploit at a trial's very last result changes nothing that is reported)
        param_space={"x": tune.grid_search([0.6, 0.5, 0.1, 0.2]), "lr": 0.5, "steps": 9},
        tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=pbt),
        run_config=_run_config(tmp_path, "pbt"),
    ).fit()
    # a trial that exploited has a policy file: the config schedule that led to its state
    policy_files = sorted(
        name for name in os.listdir(grid.experiment_path) if name.startswith("pbt_policy_")
    )
    assert policy_files
    policy_file = os.path.join(grid.experiment_path, policy_files[0])
    (original,) = [r for r in grid if policy_files[0] == f"pbt_policy_{r.metrics['trial_id']}.txt"]

    for label, scheduler in (
        ("replay_obj", PopulationBasedTrainingReplay(policy_file)),
        ("replay_name", tune.create_scheduler("pbt_replay", policy_file=policy_file)),
    ):
        assert isinstance(scheduler, PopulationBasedTrainingReplay)
        schedule = scheduler.policy
        assert schedule
        replay = tune.Tuner(
            objective,
            tune_config=tune.TuneConfig(scheduler=scheduler),
            run_config=_run_config(tmp_path, label, stop={"training_iteration": 9}),
        ).fit()
        (result,) = replay
        # one trial, starting with the schedule's first config and switching at its
        # iterations (continuing from its own checkpoint), ending with the original's
        # config, hence its final score (score = x * step + lr)
        assert result.config == original.config
        assert result.metrics["score"] == pytest.approx(original.metrics["score"])
        config = scheduler.config
        changes = dict(schedule)
        for row in _rows(result):
            assert row["config"] == config
            assert row["score"] == pytest.approx(config["x"] * row["training_iteration"] + config["lr"])
            config = changes.get(row["training_iteration"], config)
        assert [row["training_iteration"] for row in _rows(result)] == list(range(1, 10))

    # by bare name it needs its policy file
    with pytest.raises(TypeError, match="policy_file"):
        _fit(tmp_path, "replay_bare", scheduler="pbt_replay")


def cpu_reporter(config):
    """Reports the CPUs it has; resumes from its checkpoint (a resource change restarts it)."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint.to_dict()["step"]
    for step in range(start + 1, 7):
        cpus = tune.get_context().get_trial_resources().required_resources["CPU"]
        tune.report({"score": config["x"] * step, "cpus": cpus, "resumed_from": start},
                    checkpoint=tune.Checkpoint.from_dict({"step": step}))


def _two_cpus_from_step_3(runner, trial, result, scheduler):
    return {"cpu": 2} if result["training_iteration"] >= 3 else None


def test_resource_changing_scheduler_wrapping_asha(tmp_path, monkeypatch):
    from tunekit.schedulers import ASHAScheduler, ResourceChangingScheduler

    monkeypatch.setenv("TUNEKIT_NUM_CPUS", "2")
    scheduler = ResourceChangingScheduler(
        ASHAScheduler(max_t=6, grace_period=1, reduction_factor=2), _two_cpus_from_step_3
    )
    grid = tune.Tuner(
        cpu_reporter,
        param_space={"x": tune.grid_search([3, 2, 1])},
        tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=scheduler,
                                    max_concurrent_trials=1),
        run_config=_run_config(tmp_path, "rcs"),
    ).fit()
    # ASHA decides (rungs 1, 2, 4; one at a time, best first): x=3 runs to max_t, the
    # others are below the median of the earlier ones at the first rung
    assert _iterations(grid) == [6, 1, 1]
    # the wrapper gave x=3 two CPUs from step 3 on: it restarted from its checkpoint of 3
    rows = _rows(grid[0])
    assert [r["cpus"] for r in rows] == [1, 1, 1, 2, 2, 2]
    assert [r["resumed_from"] for r in rows] == [0, 0, 0, 3, 3, 3]
    assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert scheduler.base_trial_resources.required_resources == {"CPU": 1.0}


def _searcher_grid(tmp_path, name, search_alg):
    return tune.Tuner(
        lambda config: tune.report({"loss": (config["x"] - 0.3) ** 2 + config["y"]}),
        param_space={"x": tune.uniform(0.0, 1.0), "y": tune.choice([0, 1])},
        tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=search_alg, num_samples=4),
        run_config=_run_config(tmp_path, name),
    ).fit()


@pytest.mark.parametrize(
    "plugin, by_object",
    [
        (None, lambda: tune.search.BasicVariantGenerator(random_state=3)),
        ("tunekit_optuna", lambda: __import__("tunekit_optuna").OptunaSearch(seed=3)),
        ("tunekit_hyperopt", lambda: __import__("tunekit_hyperopt").HyperOptSearch(random_state_seed=3)),
    ],
    ids=["random", "optuna", "hyperopt"],
)
def test_searchers_by_object_and_by_name(tmp_path, plugin, by_object):
    if plugin is not None:
        pytest.importorskip(plugin)
    name = {None: "random", "tunekit_optuna": "optuna", "tunekit_hyperopt": "hyperopt"}[plugin]
    for label, search_alg in ((f"{name}_obj", by_object()), (name, name)):
        grid = _searcher_grid(tmp_path, label, search_alg)
        assert len(grid) == 4 and grid.num_terminated == 4
        assert all(0.0 <= r.config["x"] <= 1.0 and r.config["y"] in (0, 1) for r in grid)
        best = grid.get_best_result()
        assert best.metrics["loss"] == min(r.metrics["loss"] for r in grid)


@pytest.mark.parametrize("name", ["random", "grid", "variant_generator"])
def test_basic_variant_generator_names_and_object(tmp_path, name):
    # "random", "grid" and "variant_generator" all name BasicVariantGenerator: grid
    # axes are expanded, the rest sampled, num_samples times
    space = {"x": tune.grid_search([0.1, 0.3, 0.5]), "y": tune.uniform(0.0, 1.0)}

    def fit(label, search_alg):
        return tune.Tuner(
            lambda config: tune.report({"loss": (config["x"] - 0.3) ** 2 + config["y"]}),
            param_space=space,
            tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=search_alg,
                                        num_samples=2),
            run_config=_run_config(tmp_path, label),
        ).fit()

    for label, search_alg in (
        (name, name),
        (f"{name}_obj", tune.search.BasicVariantGenerator(random_state=5)),
        (f"{name}_made", tune.search.create_searcher(name, random_state=5)),
    ):
        grid = fit(label, search_alg)
        assert grid.num_terminated == 6
        assert sorted(r.config["x"] for r in grid) == [0.1, 0.1, 0.3, 0.3, 0.5, 0.5]
        assert all(0.0 <= r.config["y"] <= 1.0 for r in grid)
        assert grid.get_best_result().metrics["loss"] == min(r.metrics["loss"] for r in grid)
    # the same seed gives the same samples
    again = fit(f"{name}_again", tune.search.BasicVariantGenerator(random_state=5))
    first = fit(f"{name}_first", tune.search.BasicVariantGenerator(random_state=5))
    assert [r.config for r in again] == [r.config for r in first]


# --------------------------------------------------------------------------- restore


def train(config):
    """Counts to 4 with a checkpoint per step. Driven by environment variables (read
    in the worker): trials 2 and 3 fail at step 3 with TK_FAIL, trials 4 and 5 hang
    at step 3 with TK_BLOCK until their driver is gone; TK_LOG records every step run.
    Self-contained: the driver script runs its source."""
    import os
    import time

    import tunekit as tune

    log = os.environ.get("TK_LOG")
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint.to_dict()["step"]
    for step in range(start + 1, 5):
        if log:
            with open(log, "a") as f:
                f.write(f"{config['i']} {step}\n")
        if step == 3 and config["i"] in (2, 3) and os.environ.get("TK_FAIL"):
            raise ValueError(f"trial {config['i']} fails at step 3")
        if step == 3 and config["i"] in (4, 5) and os.environ.get("TK_BLOCK"):
            parent = os.getppid()
            while os.getppid() == parent:  # a hung trial: until its driver is gone
                time.sleep(0.05)
            os._exit(1)
        tune.report({"step": step}, checkpoint=tune.Checkpoint.from_dict({"step": step}))


DRIVER = textwrap.dedent(
    """
    import sys
    import tunekit as tune
    OUT = sys.argv[1]
    """
) + inspect.getsource(train) + textwrap.dedent(
    """
    tuner = tune.Tuner(
        tune.with_resources(train, {"cpu": 0.5}),
        param_space={"i": tune.grid_search(list(range(6)))},
        tune_config=tune.TuneConfig(metric="step", mode="max"),
        run_config=tune.RunConfig(name="exp", storage_path=OUT, verbose=0),
    )
    tuner.fit()
    print("FINISHED", flush=True)
    """
)


def _killed_experiment(tmp_path):
    """Run the driver until trials 0-1 finished, 2-3 failed and 4-5 hang after step 2; SIGKILL it."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, TK_FAIL="1", TK_BLOCK="1", TK_LOG=str(tmp_path / "driver.log"))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    path = tmp_path / "exp"
    wanted = {0: "TERMINATED", 1: "TERMINATED", 2: "ERROR", 3: "ERROR", 4: "RUNNING", 5: "RUNNING"}
    deadline = time.time() + 90
    seen = None
    try:
        while time.time() < deadline:
            try:
                analysis = tune.ExperimentAnalysis(str(path))
                seen = {
                    t.config["i"]: (t.status, t.last_result.get("step"), len(t.checkpoints or []))
                    for t in analysis.trials
                }
            except (FileNotFoundError, ValueError, KeyError):
                seen = None
            if seen and {i: s[0] for i, s in seen.items()} == wanted and all(
                seen[i][1:] == (2, 2) for i in (4, 5)
            ):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        else:
            raise AssertionError(f"the driver never reached the state to kill it in: {seen}")
    finally:
        proc.kill()
        proc.wait()
    return path


def _log(path):
    if not path.exists():
        return []
    return [tuple(int(v) for v in line.split()) for line in path.read_text().splitlines()]


def _restored(tmp_path, exp, mode, monkeypatch, **flags):
    copy = tmp_path / mode / "exp"
    shutil.copytree(exp, copy)
    monkeypatch.setenv("TK_LOG", str(tmp_path / mode / "executed.log"))
    tuner = tune.Tuner.restore(str(copy), train, **flags)
    grid = tuner.fit()
    by_i = {r.config["i"]: r for r in grid}
    return grid, by_i, _log(tmp_path / mode / "executed.log")


def _steps(result):
    with open(os.path.join(result.path, "result.json")) as f:
        return [json.loads(line)["step"] for line in f]


def test_restore_after_a_killed_driver(tmp_path, monkeypatch):
    monkeypatch.delenv("TK_FAIL", raising=False)
    monkeypatch.delenv("TK_BLOCK", raising=False)
    exp = _killed_experiment(tmp_path)
    assert tune.Tuner.can_restore(str(exp))
    assert not tune.Tuner.can_restore(str(tmp_path / "nothing"))

    # what was saved, without running anything
    saved = tune.Tuner.restore(str(exp), train).get_results()
    assert len(saved) == 6 and saved.num_terminated == 2 and saved.num_errors == 2
    assert all(isinstance(e, ValueError) for e in saved.errors)

    # default: unfinished trials continue from their checkpoints; errored ones stay errored
    grid, by_i, executed = _restored(tmp_path, exp, "default", monkeypatch)
    assert grid.num_terminated == 4 and grid.num_errors == 2
    assert sorted(executed) == [(4, 3), (4, 4), (5, 3), (5, 4)]
    assert _steps(by_i[4]) == [1, 2, 3, 4]
    assert "fails at step 3" in str(by_i[2].error) and isinstance(by_i[2].error, ValueError)
    assert by_i[0].metrics["step"] == 4 and by_i[0].error is None

    # resume_unfinished=False: unfinished trials end as they are
    grid, by_i, executed = _restored(tmp_path, exp, "skip", monkeypatch, resume_unfinished=False)
    assert executed == []
    assert grid.num_terminated == 4 and grid.num_errors == 2
    assert by_i[4].metrics["step"] == 2

    # resume_errored=True: errored trials continue from their latest checkpoint too
    grid, by_i, executed = _restored(tmp_path, exp, "resume_errored", monkeypatch, resume_errored=True)
    assert grid.num_terminated == 6 and grid.errors == []
    assert sorted(executed) == [(i, s) for i in (2, 3, 4, 5) for s in (3, 4)]
    assert _steps(by_i[2]) == [1, 2, 3, 4]

    # restart_errored=True: errored trials start from scratch
    grid, by_i, executed = _restored(tmp_path, exp, "restart_errored", monkeypatch, restart_errored=True)
    assert grid.num_terminated == 6
    assert sorted(e for e in executed if e[0] in (2, 3)) == [(i, s) for i in (2, 3) for s in (1, 2, 3, 4)]
    assert sorted(e for e in executed if e[0] in (4, 5)) == [(i, s) for i in (4, 5) for s in (3, 4)]
    assert _steps(by_i[3]) == [1, 2, 3, 4]

    # the trainable must be the one the experiment was started with
    with pytest.raises(ValueError, match="same trainable"):
        tune.Tuner.restore(str(exp), objective)
    with pytest.raises(ValueError, match="keys differ"):
        tune.Tuner.restore(str(exp), train, param_space={"j": 1})


def test_get_results_before_fit_is_an_error(tmp_path):
    tuner = tune.Tuner(objective, run_config=_run_config(tmp_path, "unfit"))
    with pytest.raises(RuntimeError, match="not been fit"):
        tuner.get_results()


# --------------------------------------------------------------------------- Ray-only features


def _ray_like(module, name, base=object):
    """A stand-in for a Ray class (Ray is not installed here): same module and name."""
    return type(name, (base,), {"__module__": module})


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: tune.RunConfig(storage_path=p, storage_filesystem=object()), "storage_filesystem.*SyncConfig"),
        (lambda p: tune.RunConfig(storage_path="s3://bucket/exps"), "remote storage paths.*upload_dir"),
        (lambda p: tune.RunConfig(local_dir=p), "local_dir.*storage_path"),
        (lambda p: tune.TuneConfig(chdir_to_trial_dir=True), "chdir_to_trial_dir.*get_trial_dir"),
        (
            lambda p: tune.Tuner(objective, run_config=tune.RunConfig(storage_path=p), _tuner_kwargs={"x": 1}),
            "_tuner_kwargs.*tunekit.run",
        ),
        (
            lambda p: tune.Tuner(_ray_like("ray.train.torch.torch_trainer", "TorchTrainer")()),
            "Ray Train trainers.*function",
        ),
        (
            lambda p: tune.Tuner(_ray_like("ray.tune.trainable.trainable", "Trainable")),
            "subclass tunekit.Trainable",
        ),
        (
            lambda p: tune.Tuner(
                objective, param_space={"lr": _ray_like("ray.tune.search.sample", "Float")()}
            ),
            r"param_space\['lr'\].*tune.uniform",
        ),
        (
            lambda p: tune.TuneConfig(scheduler=_ray_like("ray.tune.schedulers", "ASHAScheduler")()),
            "tunekit.schedulers",
        ),
        (
            lambda p: tune.TuneConfig(search_alg=_ray_like("ray.tune.search.optuna", "OptunaSearch")()),
            "tunekit.search",
        ),
        (
            lambda p: tune.RunConfig(storage_path=p, callbacks=[_ray_like("ray.tune.callback", "Callback")()]),
            "tunekit.Callback",
        ),
        (lambda p: tune.Tuner(objective, run_config=_ray_like("ray.tune", "RunConfig")()), "tunekit.RunConfig"),
        (lambda p: tune.Tuner.restore(p, objective, storage_filesystem=object()), "storage_filesystem"),
        (lambda p: tune.Tuner.can_restore(p, storage_filesystem=object()), "storage_filesystem"),
        (lambda p: tune.Tuner.restore("s3://bucket/exp", objective), "remote experiment paths"),
    ],
    ids=[
        "storage_filesystem", "remote_storage_path", "local_dir", "chdir_to_trial_dir", "tuner_kwargs",
        "ray_train_trainer", "ray_trainable", "ray_search_space", "ray_scheduler", "ray_searcher",
        "ray_callback", "ray_run_config", "restore_storage_filesystem", "can_restore_storage_filesystem",
        "restore_remote",
    ],
)
def test_ray_only_features_are_clear_errors(tmp_path, make, match):
    with pytest.raises((NotImplementedError, TypeError, ValueError, DeprecationWarning), match=match):
        make(str(tmp_path))
