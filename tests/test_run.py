"""tunekit.run through the public API, on real worker processes."""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from datetime import timedelta

import pytest

import tunekit as tune
from tunekit import TuneError


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch):
    monkeypatch.setenv("TUNEKIT_STOP_GRACE_S", "2")


def run(trainable, tmp_path, **kwargs):
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("local_dir", str(tmp_path))
    return tune.run(trainable, **kwargs)


# -- trainables (module level: workers import this module) ---------------------------------


def quadratic(config):
    for step in range(3):
        tune.report(loss=(config["x"] - 2) ** 2 + step, step=step)


def quadratic_dict_style(config):
    for step in range(3):
        tune.report({"loss": (config["x"] - 2) ** 2 + step})


def report_forever(config):
    i = 0
    while True:
        i += 1
        tune.report(score=i)


def returns_dict(config):
    tune.report(loss=1.0)
    return {"loss": 0.5}


def never_reports_after_first(config):
    tune.report(score=1)
    time.sleep(600)


def raises(config):
    tune.report(loss=1.0)
    raise RuntimeError("boom from the trainable")


def exits_hard(config):
    tune.report(loss=1.0)
    os._exit(3)


def segfaults(config):
    import ctypes

    tune.report(loss=1.0)
    ctypes.string_at(0)


def kills_itself(config):
    tune.report(loss=1.0)
    os.kill(os.getpid(), signal.SIGKILL)


def fails_first_attempt(config):
    marker = os.path.join(config["marker_dir"], f"attempted-{config['i']}")
    tune.report(loss=1.0)
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    tune.report(loss=0.0)


def reports_without_metric(config):
    tune.report(other=1.0)


def uses_data(config, data):
    tune.report(total=sum(data) + config["x"])


def sees_gpus(config):
    tune.report(visible=os.environ.get("CUDA_VISIBLE_DEVICES"), n=1)


def prints_things(config):
    print("hello stdout", flush=True)
    print("hello stderr", file=sys.stderr, flush=True)
    tune.report(loss=1.0)


def legacy_checkpoint_dir(config, checkpoint_dir=None):
    tune.report(loss=0.0 if checkpoint_dir is None else 1.0)


def legacy_reporter(config, reporter):
    reporter(loss=3.0, timesteps_total=1)


def nested_metrics(config):
    tune.report({"val": {"loss": 0.25, "acc": 0.75}})


class Counter(tune.Trainable):
    def setup(self, config):
        self.total = config.get("start", 0)
        self.steps = config.get("steps", 3)

    def step(self):
        self.total += 1
        return {"total": self.total, "done": self.iteration + 1 >= self.steps}

    def cleanup(self):
        with open(os.path.join(self.logdir, "cleaned"), "w") as f:
            f.write("yes")


class ResettableCounter(Counter):
    def reset_config(self, new_config):
        self.total = new_config.get("start", 0)
        self.steps = new_config.get("steps", 3)
        return True

    def step(self):
        result = super().step()
        result["pid_seen"] = os.getpid()
        result["instance"] = id(self)
        return result


class NeedsTwoCPUs(tune.Trainable):
    @classmethod
    def default_resource_request(cls, config):
        return {"cpu": 2}

    def step(self):
        return {"x": 1, "done": True}


class WithData(tune.Trainable):
    def setup(self, config, data=None):
        self.value = sum(data)

    def step(self):
        return {"value": self.value, "done": True}


# -- the basics -----------------------------------------------------------------------------


def test_function_trainable_both_report_styles_and_files(tmp_path):
    for fn in (quadratic, quadratic_dict_style):
        analysis = run(
            fn,
            tmp_path,
            name=fn.__name__,
            config={"x": tune.grid_search([1, 2, 3])},
            metric="loss",
            mode="min",
        )
        assert len(analysis.trials) == 3
        assert all(t.status == "TERMINATED" for t in analysis.trials)
        assert analysis.best_config == {"x": 2}
        best = analysis.best_trial
        assert best.last_result["training_iteration"] == 3
        logdir = best.local_path
        assert best.logdir == logdir
        assert json.load(open(os.path.join(logdir, "params.json"))) == {"x": 2}
        assert pickle.load(open(os.path.join(logdir, "params.pkl"), "rb")) == {"x": 2}
        lines = [json.loads(line) for line in open(os.path.join(logdir, "result.json"))]
        assert [r["training_iteration"] for r in lines] == [1, 2, 3]
        for key in (
            "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "date",
            "done", "trial_id", "experiment_tag", "pid", "hostname", "node_ip", "config",
        ):
            assert key in lines[0], key
        assert lines[0]["config"] == {"x": 2}
        assert lines[0]["trial_id"] == best.trial_id
        # The last row says done=True when it was still in the worker's batch as the
        # trainable returned; the trial's last result always does.
        assert all(r["done"] is False for r in lines[:-1])
        assert best.last_result["done"] is True
        rows = list(csv.DictReader(open(os.path.join(logdir, "progress.csv"))))
        assert len(rows) == 3 and "config" not in rows[0] and rows[2]["loss"] == "2"


def test_result_values_and_return_value(tmp_path):
    analysis = run(returns_dict, tmp_path)
    trial = analysis.trials[0]
    assert trial.last_result["loss"] == 0.5
    assert trial.last_result["training_iteration"] == 2


def test_nested_metrics_are_flattened_for_metric_lookup(tmp_path):
    analysis = run(nested_metrics, tmp_path, metric="val/loss", mode="min",
                   stop={"val/acc": 0.7})
    assert analysis.best_result["val"] == {"loss": 0.25, "acc": 0.75}  # kept nested
    trial = analysis.best_trial
    line = json.loads(open(os.path.join(trial.local_path, "result.json")).readline())
    assert line["val"] == {"loss": 0.25, "acc": 0.75}
    assert line["done"] is True  # the stop criterion on the nested key fired
    row = next(csv.DictReader(open(os.path.join(trial.local_path, "progress.csv"))))
    assert row["val/loss"] == "0.25"


def test_legacy_signatures(tmp_path):
    analysis = run(legacy_checkpoint_dir, tmp_path, name="ckdir")
    assert analysis.trials[0].last_result["loss"] == 0.0
    analysis = run(legacy_reporter, tmp_path, name="reporter")
    assert analysis.trials[0].last_result["loss"] == 3.0


def test_class_trainable_lifecycle(tmp_path):
    analysis = run(Counter, tmp_path, config={"start": 10, "steps": 4})
    trial = analysis.trials[0]
    assert trial.last_result["total"] == 14
    assert trial.last_result["training_iteration"] == 4
    assert open(os.path.join(trial.local_path, "cleaned")).read() == "yes"


def test_reuse_actors_calls_reset_config(tmp_path):
    analysis = run(
        ResettableCounter,
        tmp_path,
        config={"start": tune.grid_search([0, 100, 200, 300])},
        reuse_actors=True,
        resources_per_trial={"cpu": 2},  # one at a time: reuse is observable
    )
    results = [t.last_result for t in analysis.trials]
    assert sorted(r["total"] for r in results) == [3, 103, 203, 303]
    assert len({r["instance"] for r in results}) == 1  # one instance, reset four times


def test_registered_trainable_and_experiments(tmp_path):
    tune.register_trainable("quad", quadratic)
    analysis = run("quad", tmp_path, config={"x": 2})
    assert analysis.trials[0].trainable_name == "quad"
    with pytest.raises(ValueError, match="Unknown trainable 'nope'"):
        run("nope", tmp_path)
    exps = [
        tune.Experiment("first", quadratic, config={"x": 1}, local_dir=str(tmp_path)),
        tune.Experiment("second", Counter, config={"steps": 2}, local_dir=str(tmp_path)),
    ]
    analysis = tune.run(exps, verbose=0)
    assert [t.experiment_name for t in analysis.trials] == ["first", "second"]
    assert os.path.isdir(tmp_path / "first") and os.path.isdir(tmp_path / "second")


def test_with_parameters_function_and_class(tmp_path):
    data = list(range(200_000))  # > 1 MiB pickled: goes through a file, not the config
    analysis = run(
        tune.with_parameters(uses_data, data=data),
        tmp_path,
        config={"x": tune.grid_search([1, 2])},
    )
    assert sorted(t.last_result["total"] for t in analysis.trials) == [
        sum(data) + 1,
        sum(data) + 2,
    ]
    params = json.load(open(os.path.join(analysis.trials[0].local_path, "params.json")))
    assert "data" not in params
    analysis = run(tune.with_parameters(WithData, data=[1, 2, 3]), tmp_path, name="cls")
    assert analysis.trials[0].last_result["value"] == 6


# -- search spaces and samples -------------------------------------------------------------


def test_grid_repeated_num_samples_times_with_random_params(tmp_path):
    analysis = run(
        quadratic,
        tmp_path,
        config={
            "x": tune.grid_search([1, 2]),
            "lr": tune.loguniform(1e-4, 1e-1),
            "nested": {"units": tune.choice([8, 16]), "list": [tune.randint(0, 5), 7]},
            "double_x": tune.sample_from(lambda spec: spec.config.x * 2),
        },
        num_samples=3,
    )
    configs = analysis.get_all_configs()
    assert len(configs) == 6
    xs = sorted(c["x"] for c in configs.values())
    assert xs == [1, 1, 1, 2, 2, 2]
    for cfg in configs.values():
        assert cfg["double_x"] == cfg["x"] * 2
        assert 1e-4 <= cfg["lr"] <= 1e-1
        assert cfg["nested"]["units"] in (8, 16)
        assert 0 <= cfg["nested"]["list"][0] < 5 and cfg["nested"]["list"][1] == 7
    trial = analysis.trials[0]
    assert "x=" in trial.experiment_tag and "lr=" in trial.experiment_tag
    assert set(trial.evaluated_params) >= {"x", "lr", "nested/units"}


def test_malformed_space_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="grid_search"):
        run(quadratic, tmp_path, config={"x": {"grid_search": 3}})


# -- stopping ---------------------------------------------------------------------------------


def test_stop_dict_callable_and_stopper(tmp_path):
    analysis = run(report_forever, tmp_path, stop={"training_iteration": 5}, name="dict")
    assert analysis.trials[0].last_result["score"] == 5
    lines = open(os.path.join(analysis.trials[0].local_path, "result.json")).readlines()
    assert len(lines) == 5

    analysis = run(
        report_forever, tmp_path, stop=lambda trial_id, result: result["score"] >= 7, name="fn"
    )
    assert analysis.trials[0].last_result["score"] == 7

    analysis = run(
        report_forever, tmp_path, stop=tune.MaximumIterationStopper(4), name="stopper"
    )
    assert analysis.trials[0].last_result["training_iteration"] == 4


def test_stop_all_and_unknown_stop_key(tmp_path):
    class StopAllAfter(tune.Stopper):
        def __init__(self):
            self.seen = 0

        def __call__(self, trial_id, result):
            self.seen += 1
            return False

        def stop_all(self):
            return self.seen >= 10

    analysis = run(report_forever, tmp_path, stop=StopAllAfter(), num_samples=2, name="all")
    assert all(t.status == "TERMINATED" for t in analysis.trials)

    with pytest.raises(TuneError) as info:
        run(report_forever, tmp_path, stop={"nonexistent": 1}, name="badkey")
    error = open(info.value.trials[0].error_file).read()
    assert "nonexistent" in error


def test_time_budget_and_infinite_samples(tmp_path):
    start = time.time()
    analysis = run(
        report_forever, tmp_path, num_samples=-1, time_budget_s=timedelta(seconds=2), name="tb"
    )
    assert time.time() - start < 30
    assert len(analysis.trials) >= 2
    assert all(t.status == "TERMINATED" for t in analysis.trials)

    analysis = run(quadratic, tmp_path, num_samples=-1, stop={"training_iteration": 1},
                   time_budget_s=1.5, config={"x": 1}, name="tb2")
    assert len(analysis.trials) > 2


def test_stopped_trial_that_never_reports_is_killed(tmp_path):
    start = time.time()
    analysis = run(never_reports_after_first, tmp_path, stop={"score": 1}, time_budget_s=60)
    assert time.time() - start < 20
    assert analysis.trials[0].status == "TERMINATED"


def test_time_budget_kills_silent_trial(tmp_path):
    start = time.time()
    analysis = run(never_reports_after_first, tmp_path, time_budget_s=1)
    assert time.time() - start < 20
    assert analysis.trials[0].status == "TERMINATED"


# -- validation ------------------------------------------------------------------------------


def test_mode_and_metric_errors(tmp_path):
    with pytest.raises(ValueError, match="'min' or 'max'"):
        run(quadratic, tmp_path, metric="loss", mode="minimize")
    with pytest.raises(TuneError) as info:
        run(reports_without_metric, tmp_path, metric="loss", mode="min")
    text = open(info.value.trials[0].error_file).read()
    assert "'loss'" in text and "other" in text


def test_remote_driver_needs_the_ray_executor(tmp_path):
    # _remote=True runs the driver on a Ray cluster (tests/test_ray_executor.py); with a
    # custom executor that cannot work, and run() says so before touching Ray.
    with pytest.raises(ValueError, match="cannot use a custom trial_executor"):
        run(quadratic, tmp_path, config={"x": 1}, trial_executor="local", _remote=True)


def test_deprecated_parameters(tmp_path):
    with pytest.raises(DeprecationWarning, match="queue_trials"):
        run(quadratic, tmp_path, queue_trials=True)
    from tunekit.logger import JsonLoggerCallback

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(quadratic, tmp_path, config={"x": 1}, loggers=[JsonLoggerCallback])
    assert any("loggers" in str(w.message) for w in caught)


def test_unknown_plugin_names(tmp_path):
    with pytest.raises(ValueError, match="fifo"):
        run(quadratic, tmp_path, scheduler="fifoo")
    with pytest.raises(ValueError, match="random"):
        run(quadratic, tmp_path, search_alg="randomm")


def test_plugins_by_name(tmp_path):
    analysis = run(
        quadratic,
        tmp_path,
        config={"x": tune.uniform(0, 4)},
        search_alg="random",
        scheduler="fifo",
        trial_executor="local",
        num_samples=3,
    )
    assert len(analysis.trials) == 3


# -- resources -------------------------------------------------------------------------------


def test_resources_fractional_custom_and_too_big(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEKIT_RESOURCES", json.dumps({"slot": 1}))
    analysis = run(quadratic, tmp_path, config={"x": 1}, num_samples=3,
                   resources_per_trial={"cpu": 0.5, "slot": 1}, name="custom")
    assert len(analysis.trials) == 3
    with pytest.raises(TuneError, match="can never fit"):
        run(quadratic, tmp_path, config={"x": 1}, resources_per_trial={"cpu": 64}, name="big")
    with pytest.raises(TuneError, match="can never fit"):
        run(NeedsTwoCPUs, tmp_path, name="cls", trial_executor=_one_cpu_executor())
    pgf = tune.PlacementGroupFactory([{"CPU": 1}, {"CPU": 1}])
    analysis = run(quadratic, tmp_path, config={"x": 1}, resources_per_trial=pgf, name="pgf")
    assert analysis.trials[0].resources == {"CPU": 2.0}


def _one_cpu_executor():
    from tunekit_core.local_executor import LocalExecutor

    return LocalExecutor(resources={"CPU": 1})


def test_gpus_are_assigned_per_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEKIT_NUM_GPUS", "2")
    analysis = run(sees_gpus, tmp_path, num_samples=4, resources_per_trial={"cpu": 0.1, "gpu": 1})
    visible = [t.last_result["visible"] for t in analysis.trials]
    assert set(visible) <= {"0", "1"} and len(visible) == 4
    analysis = run(sees_gpus, tmp_path, num_samples=2, resources_per_trial={"cpu": 0.1, "gpu": 0.5},
                   name="frac")
    assert all(t.last_result["visible"] in ("0", "1") for t in analysis.trials)
    analysis = run(sees_gpus, tmp_path, num_samples=1, resources_per_trial={"cpu": 1}, name="none")
    assert analysis.trials[0].last_result["visible"] == ""
    with pytest.raises(TuneError, match="can never fit"):
        run(sees_gpus, tmp_path, resources_per_trial={"gpu": 3}, name="toomany")


def short_interval(config):
    start = time.time()
    time.sleep(config.get("sleep", 0.2))
    tune.report(start=start, end=time.time())


def test_max_concurrent_trials(tmp_path):
    from tunekit.search import ConcurrencyLimiter

    analysis = run(short_interval, tmp_path, num_samples=4, resources_per_trial={"cpu": 0.25},
                   max_concurrent_trials=1, name="mc")
    spans = sorted((t.last_result["start"], t.last_result["end"]) for t in analysis.trials)
    assert len(spans) == 4
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end  # never two at a time
    analysis = run(short_interval, tmp_path, num_samples=4, resources_per_trial={"cpu": 0.25},
                   max_concurrent_trials=2, name="mc2", config={"sleep": 3.0})
    spans = sorted((t.last_result["start"], t.last_result["end"]) for t in analysis.trials)
    overlaps = sum(1 for (_, end), (start, _) in zip(spans, spans[1:]) if start < end)
    assert overlaps >= 1  # with room for 8, two did run together
    from tunekit_basic_search import BasicVariantGenerator

    limiter = ConcurrencyLimiter(BasicVariantGenerator(), max_concurrent=2)
    with pytest.raises(ValueError, match="ConcurrencyLimiter"):
        run(quadratic, tmp_path, search_alg=limiter, max_concurrent_trials=3)


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("fn,needle", [
    (raises, "boom from the trainable"),
    (exits_hard, "exited with code 3"),
    (segfaults, "SIGSEGV"),
    (kills_itself, "SIGKILL"),
])
def test_crashing_trainables_error_the_trial_not_the_driver(tmp_path, fn, needle):
    analysis = run(fn, tmp_path, raise_on_failed_trial=False, num_samples=2)
    assert [t.status for t in analysis.trials] == ["ERROR", "ERROR"]
    for trial in analysis.trials:
        text = open(trial.error_file).read()
        assert needle in text
        assert os.path.dirname(trial.error_file) == trial.local_path
        # the result reported before the crash was kept
        assert len(open(os.path.join(trial.local_path, "result.json")).readlines()) == 1
    with pytest.raises(TuneError, match="Trials did not complete"):
        run(fn, tmp_path, name="raising")


def test_max_failures_retries_from_scratch(tmp_path):
    analysis = run(
        fails_first_attempt,
        tmp_path,
        config={"marker_dir": str(tmp_path), "i": tune.grid_search([0, 1])},
        max_failures=1,
    )
    for trial in analysis.trials:
        assert trial.status == "TERMINATED"
        assert trial.num_failures == 1
        assert "first attempt fails" in open(trial.error_file).read()
        assert trial.last_result["loss"] == 0.0


def test_fail_fast(tmp_path):
    analysis = run(raises, tmp_path, fail_fast=True, raise_on_failed_trial=False, num_samples=4,
                   resources_per_trial={"cpu": 2})
    statuses = [t.status for t in analysis.trials]
    assert statuses.count("ERROR") == 1
    assert len(analysis.trials) < 4
    with pytest.raises(RuntimeError, match="boom from the trainable"):
        run(raises, tmp_path, fail_fast="raise", name="raise")
    with pytest.raises(ValueError, match="max_failures"):
        run(raises, tmp_path, fail_fast=True, max_failures=2)


# -- output ----------------------------------------------------------------------------------


def test_log_to_file_variants(tmp_path):
    analysis = run(prints_things, tmp_path, log_to_file=True, name="both")
    logdir = analysis.trials[0].local_path
    assert "hello stdout" in open(os.path.join(logdir, "stdout")).read()
    assert "hello stderr" in open(os.path.join(logdir, "stderr")).read()
    analysis = run(prints_things, tmp_path, log_to_file="combined.log", name="one")
    text = open(os.path.join(analysis.trials[0].local_path, "combined.log")).read()
    assert "hello stdout" in text and "hello stderr" in text
    analysis = run(prints_things, tmp_path, log_to_file=("o.txt", "e.txt"), name="pair")
    logdir = analysis.trials[0].local_path
    assert "hello stderr" in open(os.path.join(logdir, "e.txt")).read()


def test_trial_name_and_dirname_creators(tmp_path):
    analysis = run(
        quadratic,
        tmp_path,
        config={"x": tune.grid_search([1, 2])},
        trial_name_creator=lambda t: f"custom_{t.config['x']}",
        trial_dirname_creator=lambda t: f"dir_{t.trial_id}",
    )
    assert sorted(str(t) for t in analysis.trials) == ["custom_1", "custom_2"]
    for trial in analysis.trials:
        assert os.path.basename(trial.local_path) == f"dir_{trial.trial_id}"
    with pytest.raises(ValueError, match="plain directory name"):
        run(quadratic, tmp_path, config={"x": 1}, trial_dirname_creator=lambda t: "a/b", name="bad")


def test_verbose_levels(tmp_path, capfd):
    run(quadratic, tmp_path, config={"x": 1}, verbose=0, name="v0")
    out, err = capfd.readouterr()
    assert "Status" not in out
    run(quadratic, tmp_path, config={"x": 1}, verbose=1, name="v1", metric="loss", mode="min")
    out, _ = capfd.readouterr()
    assert "Status" in out and "TERMINATED" in out
    run(quadratic, tmp_path, config={"x": 1}, verbose=3, name="v3")
    out, _ = capfd.readouterr()
    assert "loss" in out


def test_callbacks_receive_lifecycle(tmp_path):
    events = []

    class Recorder(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            events.append(("start", trial.trial_id))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            events.append(("result", result["training_iteration"]))

        def on_trial_complete(self, iteration, trials, trial, **info):
            events.append(("complete", trial.trial_id))

        def on_trial_error(self, iteration, trials, trial, **info):
            events.append(("error", trial.trial_id))

        def on_experiment_end(self, trials, **info):
            events.append(("end", len(trials)))

    analysis = run(quadratic, tmp_path, config={"x": 1}, callbacks=[Recorder()])
    tid = analysis.trials[0].trial_id
    assert events == [
        ("start", tid), ("result", 1), ("result", 2), ("result", 3), ("complete", tid), ("end", 1)
    ]
    events.clear()
    run(raises, tmp_path, callbacks=[Recorder()], raise_on_failed_trial=False, name="err")
    assert [e[0] for e in events] == ["start", "result", "error", "end"]


def test_default_local_dir_and_storage_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEKIT_RESULTS_DIR", str(tmp_path / "env"))
    analysis = tune.run(quadratic, config={"x": 1}, verbose=0)
    assert analysis.trials[0].local_path.startswith(str(tmp_path / "env" / "quadratic"))
    analysis = tune.run(quadratic, config={"x": 1}, verbose=0, storage_path=str(tmp_path / "sp"),
                        name="exp")
    assert analysis.trials[0].local_path.startswith(str(tmp_path / "sp" / "exp"))


def test_unwritable_local_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="Cannot write"):
        run(quadratic, blocker / "results", config={"x": 1})


def test_analysis_from_directory(tmp_path):
    run(quadratic, tmp_path, config={"x": tune.grid_search([1, 2, 3])}, name="exp")
    analysis = tune.ExperimentAnalysis(str(tmp_path / "exp"), default_metric="loss",
                                       default_mode="min")
    assert len(analysis.trials) == 3
    assert analysis.best_config == {"x": 2}
    assert analysis.get_best_trial("loss", "min", scope="avg").config == {"x": 2}
    df = analysis.results_df
    assert len(df) == 3


# -- Ctrl+C ----------------------------------------------------------------------------------

DRIVER = textwrap.dedent(
    """
    import os, sys, time
    import tunekit as tune

    PAUSE = float(os.environ.get("PAUSE", "0.05"))

    def slow(config):
        for i in range(10_000):
            tune.report(i=i)
            time.sleep(PAUSE)

    print("STARTING", flush=True)
    analysis = tune.run(slow, num_samples=2, local_dir=sys.argv[1], verbose=0, name="sigint")
    print("RETURNED", len(analysis.trials), flush=True)
    """
)


def _start_driver(tmp_path, env_extra=None):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout.readline().strip() == "STARTING"
    result_file = None
    deadline = time.time() + 30
    while time.time() < deadline and result_file is None:  # wait until a trial reports
        for root, _, files in os.walk(tmp_path / "out"):
            if "result.json" in files and os.path.getsize(os.path.join(root, "result.json")) >= 0:
                result_file = os.path.join(root, "result.json")
        time.sleep(0.2)
    time.sleep(1.0)
    return proc


def test_first_ctrl_c_stops_gracefully(tmp_path):
    proc = _start_driver(tmp_path)
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "RETURNED 2" in out
    assert "resume=True" in err
    # interrupted trials are not finished: a resume continues them
    analysis = tune.ExperimentAnalysis(str(tmp_path / "out" / "sigint"))
    assert [t.status for t in analysis.trials] == ["RUNNING", "RUNNING"]
    states = [f for f in os.listdir(tmp_path / "out" / "sigint") if f.startswith("experiment_state")]
    assert states
    for root, _, files in os.walk(tmp_path / "out" / "sigint"):
        if "result.json" in files:
            for line in open(os.path.join(root, "result.json")):
                json.loads(line)  # flushed and complete


def test_second_ctrl_c_exits_at_once(tmp_path):
    proc = _start_driver(tmp_path, {"TUNEKIT_STOP_GRACE_S": "30", "PAUSE": "20"})
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "RETURNED" not in out
    assert "KeyboardInterrupt" in err


def test_sigint_handler_can_be_disabled(tmp_path):
    proc = _start_driver(tmp_path, {"TUNEKIT_DISABLE_SIGINT_HANDLER": "1"})
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert "RETURNED" not in out
    assert "KeyboardInterrupt" in err


def test_state_file_records_every_transition(tmp_path):
    run(fails_first_attempt, tmp_path, config={"marker_dir": str(tmp_path), "i": 0},
        max_failures=1, name="hist")
    exp = tmp_path / "hist"
    state_file = next(
        p for p in os.listdir(exp) if p.startswith("experiment_state-") and p.endswith(".json")
    )
    trial = json.load(open(exp / state_file))["trials"][0]
    assert [s for s, _ in trial["status_history"]] == [
        "PENDING", "RUNNING", "ERROR", "PENDING", "RUNNING", "TERMINATED"
    ]


def test_gc_tuning_is_undone_after_the_run(tmp_path, monkeypatch):
    import gc

    seen = []

    class Watch(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            seen.append((gc.get_threshold()[0], gc.get_freeze_count()))

    before = (gc.get_threshold(), gc.get_freeze_count())
    run(quadratic, tmp_path, config={"x": 1}, callbacks=[Watch()])
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    # during the run: young objects collected less often, what existed before set aside
    assert seen and all(t >= 10_000 and frozen > 0 for t, frozen in seen)
    with pytest.raises(TuneError):
        run(raises, tmp_path, name="raises")
    assert (gc.get_threshold(), gc.get_freeze_count()) == before  # also when run() raises
    seen.clear()
    monkeypatch.setenv("TUNEKIT_DISABLE_GC_TUNING", "1")
    run(quadratic, tmp_path, config={"x": 1}, callbacks=[Watch()], name="untuned")
    assert seen and all(t == before[0][0] for t, _ in seen)


def _one_result(config):
    tune.report(loss=config["x"])


def test_trial_attributes_stay_key_shared(tmp_path):
    """Every trial of a run keeps a key-sharing instance dict (W5's memory per trial).
    CPython shares the keys of at most 30 attributes; one more declared in Trial.__init__,
    or one the run loop sets that __init__ does not declare, gives that trial a full table
    of its own: twice the memory per trial."""
    analysis = run(_one_result, tmp_path, config={"x": tune.uniform(0, 1)}, num_samples=3)
    full_table = sys.getsizeof({f"attribute_{i}": i for i in range(30)})
    for trial in analysis.trials:
        assert sys.getsizeof(trial.__dict__) < full_table / 2, sorted(trial.__dict__)
