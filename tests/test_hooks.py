"""Hooks reach Ray-style callbacks, @hookimpl objects and installed plugin modules."""

from __future__ import annotations

import os
import signal
import sys
import types
from pathlib import Path

import pluggy
import pytest

try:
    from test_registry import plugin_site, test_plugins  # noqa: F401
except ImportError:  # tests imported as a package
    from tests.test_registry import plugin_site, test_plugins  # noqa: F401

try:
    from _schedulers import pause_once_at_two
except ImportError:  # tests imported as a package
    from tests._schedulers import pause_once_at_two

import tunekit as tune
from tunekit_core import registry
from tunekit_core.callback import Callback, LoggerCallback
from tunekit_core.hooks import AUTOLOAD_ENV, make_plugin_manager
from tunekit_core.hookspecs import hookimpl

TRIALS = ["t0", "t1"]


def fire_all(pm: pluggy.PluginManager) -> None:
    """Call every hook once, as the run loop would."""
    h = pm.hook
    experiment = types.SimpleNamespace(
        public_spec={"stop": {"training_iteration": 3}, "num_samples": 2, "time_budget_s": None}
    )
    h.tunekit_on_experiment_start(
        experiment=experiment, experiments=[experiment], total_num_samples=2
    )
    h.tunekit_on_step_begin(iteration=1, trials=TRIALS)
    h.tunekit_on_trial_start(trial="t0", iteration=1, trials=TRIALS)
    h.tunekit_on_trial_result(
        trial="t0", result={"training_iteration": 1}, iteration=1, trials=TRIALS
    )
    h.tunekit_on_checkpoint(trial="t0", checkpoint="ckpt", iteration=1, trials=TRIALS)
    h.tunekit_on_trial_restore(trial="t0", iteration=1, trials=TRIALS)
    h.tunekit_on_trial_save(trial="t0", iteration=1, trials=TRIALS)
    h.tunekit_on_trial_complete(trial="t0", iteration=1, trials=TRIALS)
    h.tunekit_on_trial_error(trial="t1", error=ValueError("boom"), iteration=1, trials=TRIALS)
    h.tunekit_on_step_end(iteration=1, trials=TRIALS)
    h.tunekit_flush()
    h.tunekit_on_experiment_end(trials=TRIALS)


class Recorder(Callback):
    """Overrides every Ray method with Ray's signatures."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.calls.append(("setup", stop, num_samples, total_num_samples, info))

    def on_step_begin(self, iteration, trials, **info):
        self.calls.append(("step_begin", iteration, trials))

    def on_step_end(self, iteration, trials, **info):
        self.calls.append(("step_end", iteration))

    def on_trial_start(self, iteration, trials, trial, **info):
        self.calls.append(("start", trial))

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.calls.append(("restore", trial))

    def on_trial_save(self, iteration, trials, trial, **info):
        self.calls.append(("save", trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.calls.append(("result", trial, result["training_iteration"], iteration))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.calls.append(("checkpoint", trial, checkpoint))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.calls.append(("complete", trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.calls.append(("error", trial))

    def on_experiment_end(self, trials, **info):
        self.calls.append(("end", trials))


def test_callback_methods_receive_ray_arguments() -> None:
    recorder = Recorder()
    fire_all(make_plugin_manager([recorder], load_plugins=False))
    assert recorder.calls == [
        ("setup", {"training_iteration": 3}, 2, 2, {"time_budget_s": None}),
        ("step_begin", 1, TRIALS),
        ("start", "t0"),
        ("result", "t0", 1, 1),
        ("checkpoint", "t0", "ckpt"),
        ("restore", "t0"),
        ("save", "t0"),
        ("complete", "t0"),
        ("error", "t1"),
        ("step_end", 1),
        ("end", TRIALS),
    ]


def test_setup_takes_stop_and_num_samples_from_experiment_attributes() -> None:
    seen = {}

    class Setup(Callback):
        def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
            seen.update(stop=stop, num_samples=num_samples, total=total_num_samples, info=info)

    pm = make_plugin_manager([Setup()], load_plugins=False)
    experiment = types.SimpleNamespace(stop={"loss": 0.1}, num_samples=5, name="exp")
    pm.hook.tunekit_on_experiment_start(
        experiment=experiment, experiments=[experiment], total_num_samples=None
    )
    assert seen == {"stop": {"loss": 0.1}, "num_samples": 5, "total": None, "info": {}}


def test_methods_with_other_signatures_get_keywords() -> None:
    got = []

    class KwargsOnly(Callback):
        def on_trial_result(self, **kwargs):
            got.append(sorted(kwargs))

        def on_trial_complete(self, *, trial, **info):
            got.append(("complete", trial))

    fire_all(make_plugin_manager([KwargsOnly()], load_plugins=False))
    assert got == [["iteration", "result", "trial", "trials"], ("complete", "t0")]


def test_only_overridden_methods_become_hook_implementations() -> None:
    class OnlyResults(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            pass

    callback = OnlyResults()
    pm = make_plugin_manager([Callback(), callback], load_plugins=False)
    assert pm.hook.tunekit_on_trial_start.get_hookimpls() == []
    assert pm.hook.tunekit_on_step_end.get_hookimpls() == []
    (impl,) = pm.hook.tunekit_on_trial_result.get_hookimpls()
    # registered as the bound method itself: no forwarding frame per result
    assert impl.function == callback.on_trial_result


def test_logger_callback_maps_trial_events_to_log_methods() -> None:
    events = []

    class Log(LoggerCallback):
        def log_trial_start(self, trial):
            events.append(("start", trial))

        def log_trial_result(self, iteration, trial, result):
            events.append(("result", trial, iteration))

        def log_trial_end(self, trial, failed=False):
            events.append(("end", trial, failed))

        def flush(self):
            events.append(("flush",))

    logger = Log()
    pm = make_plugin_manager([logger], load_plugins=False)
    (impl,) = pm.hook.tunekit_on_trial_result.get_hookimpls()
    assert impl.function == logger.log_trial_result
    fire_all(pm)
    assert events == [
        ("start", "t0"),
        ("result", "t0", 1),
        ("end", "t0", False),
        ("end", "t1", True),
        ("flush",),
    ]


def test_logger_callback_with_positional_log_signature() -> None:
    events = []

    class Log(LoggerCallback):
        def log_trial_result(self, it, t, r):  # Ray calls the log methods positionally
            events.append((it, t, r["training_iteration"]))

        def on_trial_complete(self, iteration, trials, trial, **info):
            events.append(("own complete", trial))

    fire_all(make_plugin_manager([Log()], load_plugins=False))
    assert events == [(1, "t0", 1), ("own complete", "t0")]


def test_callbacks_run_in_the_order_given() -> None:
    order = []

    class Named(Callback):
        def __init__(self, name):
            self.name = name

        def on_trial_start(self, iteration, trials, trial, **info):
            order.append(self.name)

    pm = make_plugin_manager([Named("first"), Named("second"), Named("third")], load_plugins=False)
    pm.hook.tunekit_on_trial_start(trial="t", iteration=0, trials=[])
    assert order == ["first", "second", "third"]


def test_hookimpl_objects_and_modules_are_callbacks_too() -> None:
    calls = []

    class Plain:
        @hookimpl
        def tunekit_on_trial_result(self, trial, result):
            calls.append(("object", trial))

    module = types.ModuleType("my_hooks")

    @hookimpl
    def tunekit_on_trial_complete(trial):
        calls.append(("module", trial))

    module.tunekit_on_trial_complete = tunekit_on_trial_complete

    class Mixed(Callback):
        @hookimpl(tryfirst=True)
        def tunekit_on_trial_error(self, trial, error):
            calls.append(("mixed", trial, str(error)))

    fire_all(make_plugin_manager([Plain(), module, Mixed()], load_plugins=False))
    assert calls == [("object", "t0"), ("module", "t0"), ("mixed", "t1", "boom")]


def test_non_callbacks_are_rejected_clearly() -> None:
    with pytest.raises(
        TypeError, match="neither a tunekit.Callback nor an object with @tunekit.hookimpl"
    ):
        make_plugin_manager([object()], load_plugins=False)

    class Typo:
        @hookimpl
        def tunekit_on_trail_result(self, trial):
            pass

    with pytest.raises(pluggy.PluginValidationError, match="tunekit_on_trail_result"):
        make_plugin_manager([Typo()], load_plugins=False)


def test_exceptions_in_callbacks_propagate() -> None:
    class Failing(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            raise KeyError("missing metric")

    pm = make_plugin_manager([Failing()], load_plugins=False)
    with pytest.raises(KeyError, match="missing metric"):
        pm.hook.tunekit_on_trial_result(trial="t", result={}, iteration=0, trials=[])


def test_installed_plugin_module_receives_hooks(test_plugins: Path) -> None:
    class Counter(Callback):
        def __init__(self):
            self.n = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.n += 1

    counter = Counter()
    with pytest.warns(RuntimeWarning, match="tunekit-test-plugins.*exploded on import"):
        pm = make_plugin_manager([counter])
    hooks_module = sys.modules["tk_test_plugins.hooks"]
    hooks_module.CALLS.clear()
    fire_all(pm)
    assert hooks_module.CALLS == [("start", "t0"), ("result", "t0", 1)]
    assert counter.n == 1
    # callbacks run before the plugin modules
    names = [impl.plugin_name for impl in reversed(pm.hook.tunekit_on_trial_result.get_hookimpls())]
    assert names[0].startswith("callback:0:") and names[-1] == "tunekit.plugins:recorder"


def test_entry_point_callback_by_name(test_plugins: Path) -> None:
    counter = registry.create("callback", "counter")
    fire_all(make_plugin_manager([counter], load_plugins=False))
    assert counter.results == 1


def test_plugin_autoload_can_be_disabled(
    test_plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    pm = make_plugin_manager([])
    assert pm.hook.tunekit_on_trial_result.get_hookimpls() == []
    assert "tk_test_plugins.hooks" not in sys.modules


def test_plugin_manager_reuses_loaded_plugin_modules(test_plugins: Path) -> None:
    with pytest.warns(RuntimeWarning):
        first = make_plugin_manager([])
    with pytest.warns(RuntimeWarning):
        second = make_plugin_manager([])
    module = first.get_plugin("tunekit.plugins:recorder")
    assert module is second.get_plugin("tunekit.plugins:recorder")
    assert module is sys.modules["tk_test_plugins.hooks"]


def test_exports_for_plugin_authors() -> None:
    import tunekit_core.hookspecs as hookspecs

    specs = [name for name in dir(hookspecs) if name.startswith("tunekit_")]
    assert {
        "tunekit_on_experiment_start",
        "tunekit_on_trial_start",
        "tunekit_on_trial_result",
        "tunekit_on_checkpoint",
        "tunekit_on_trial_complete",
        "tunekit_on_trial_error",
        "tunekit_on_experiment_end",
        "tunekit_on_step_begin",
        "tunekit_on_step_end",
    } <= set(specs)
    for name in specs:
        assert getattr(hookspecs, name).__doc__, f"{name} needs a docstring"
    assert isinstance(hookspecs.hookimpl, pluggy.HookimplMarker)
    assert isinstance(hookspecs.hookspec, pluggy.HookspecMarker)
    assert hookspecs.hookimpl.project_name == "tunekit"


# -- on_trial_save and on_trial_restore in real runs -------------------------------------------


def _iteration_of(checkpoint):
    return None if checkpoint is None else checkpoint.get_metadata()["iteration"]


class SaveRestoreRecorder(Callback):
    """Records starts, errors, checkpoints, saves and restores, with the trial's latest
    checkpoint (its iteration) as the callback sees it."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.events.append(("start", trial.trial_id))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.events.append(("error", trial.trial_id))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.events.append(("checkpoint", trial.trial_id, _iteration_of(checkpoint)))

    def on_trial_save(self, iteration, trials, trial, **info):
        self.events.append(("save", trial.trial_id, _iteration_of(trial.checkpoint)))

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.events.append(("restore", trial.trial_id, _iteration_of(trial.checkpoint)))

    def of(self, *kinds):
        return [e for e in self.events if e[0] in kinds]


def counts_to_four(config):
    """Checkpoints every config["every"] steps; fails once at config.get("fail_at")."""
    import time

    start = 0
    if tune.get_checkpoint() is not None:
        start = tune.get_checkpoint().to_dict()["i"]
    marker = os.path.join(config["dir"], "failed")
    for i in range(start + 1, config.get("n", 4) + 1):
        time.sleep(config.get("sleep", 0))
        if i == config.get("fail_at") and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("planned failure")
        checkpoint = tune.Checkpoint.from_dict({"i": i}) if i % config["every"] == 0 else None
        tune.report({"i": i, "start": start, "score": config.get("score", 0.0)},
                    checkpoint=checkpoint)


class Counter(tune.Trainable):
    def setup(self, config):
        self.count = 0

    def step(self):
        self.count += 1
        return {"count": self.count}

    def save_checkpoint(self, checkpoint_dir):
        return {"count": self.count}

    def load_checkpoint(self, checkpoint):
        self.count = checkpoint["count"]


def _run(trainable, tmp_path, recorder, **kwargs):
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("local_dir", str(tmp_path))
    return tune.run(trainable, callbacks=[recorder], **kwargs)


@pytest.mark.parametrize("kind", ["function", "class"])
def test_on_trial_save_follows_each_persisted_checkpoint(tmp_path, kind) -> None:
    recorder = SaveRestoreRecorder()
    if kind == "function":
        analysis = _run(counts_to_four, tmp_path, recorder, config={"dir": str(tmp_path), "every": 2})
        saved = [2, 4]
    else:
        analysis = _run(Counter, tmp_path, recorder, checkpoint_freq=2, checkpoint_at_end=True,
                        stop={"training_iteration": 5})
        saved = [2, 4, 5]
    (trial_id,) = [t.trial_id for t in analysis.trials]
    # once per checkpoint, right after on_checkpoint, with the new checkpoint registered
    expected = []
    for i in saved:
        expected += [("checkpoint", trial_id, i), ("save", trial_id, i)]
    assert recorder.of("checkpoint", "save") == expected
    assert recorder.of("restore") == []  # nothing started from a checkpoint


class InterruptAtTwo(Callback):
    """Presses Ctrl+C (SIGINT to this process) when a trial reports its iteration 2."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result["training_iteration"] == 2:
            if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, signal.SIG_DFL):
                pytest.fail("tunekit.run installed no SIGINT handler")
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("case", ["retry", "retry_from_scratch", "unpause", "restore", "resume"])
def test_on_trial_restore_when_a_trial_continues_from_a_checkpoint(tmp_path, case, monkeypatch):
    recorder = SaveRestoreRecorder()
    config = {"dir": str(tmp_path), "every": 1}
    if case == "retry":
        analysis = _run(counts_to_four, tmp_path, recorder, config={**config, "fail_at": 3},
                        max_failures=1)
        restored_from = 2  # its own latest checkpoint
    elif case == "retry_from_scratch":
        analysis = _run(counts_to_four, tmp_path, recorder,
                        config={**config, "every": 10, "fail_at": 3}, max_failures=1)
        restored_from = None
    elif case == "unpause":
        analysis = _run(counts_to_four, tmp_path, recorder, config=config,
                        scheduler=pause_once_at_two())
        restored_from = 2
    elif case == "restore":
        first = tune.run(counts_to_four, config=config, name="first", local_dir=str(tmp_path),
                         stop={"training_iteration": 2}, verbose=0)
        path = first.trials[0].checkpoint.path  # iteration 2
        analysis = _run(counts_to_four, tmp_path, recorder, config=config, name="second",
                        restore=path)
        restored_from = None  # a new trial: it has no checkpoint of its own yet
        assert analysis.trials[0].last_result["start"] == 2
    else:  # resume after Ctrl+C
        monkeypatch.delenv("TUNEKIT_DISABLE_SIGINT_HANDLER", raising=False)
        monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
        first = tune.run(counts_to_four, config=config, name="r", local_dir=str(tmp_path),
                         verbose=0, callbacks=[InterruptAtTwo()])
        assert first.trials[0].status == "RUNNING"
        restored_from = _iteration_of(first.trials[0].checkpoint)
        assert restored_from >= 2
        analysis = _run(counts_to_four, tmp_path, recorder, config=config, name="r", resume=True)
    (trial,) = analysis.trials
    assert trial.status == "TERMINATED"
    restores = recorder.of("restore")
    if case == "retry_from_scratch":
        assert restores == []
        assert recorder.of("start", "error") == [("start", trial.trial_id), ("error", trial.trial_id),
                                                 ("start", trial.trial_id)]
        return
    assert restores == [("restore", trial.trial_id, restored_from)]
    # right after the (re)start it belongs to, before anything else of that start
    position = recorder.events.index(restores[0])
    assert recorder.events[position - 1] == ("start", trial.trial_id)
    assert recorder.events[position + 1:] == [
        event for event in recorder.events[position + 1:] if event[0] in ("checkpoint", "save")
    ]


def test_on_trial_restore_after_a_pbt_exploit(tmp_path) -> None:
    from tunekit.schedulers import PopulationBasedTraining

    class ConfigAtRestore(SaveRestoreRecorder):
        def __init__(self):
            super().__init__()
            self.first_config, self.exploited = {}, []

        def on_trial_start(self, iteration, trials, trial, **info):
            self.first_config.setdefault(trial.trial_id, dict(trial.config))
            super().on_trial_start(iteration, trials, trial, **info)

        def on_trial_restore(self, iteration, trials, trial, **info):
            if trial.config != self.first_config[trial.trial_id]:
                self.exploited.append(trial.trial_id)  # continues from another trial's checkpoint
            super().on_trial_restore(iteration, trials, trial, **info)

    recorder = ConfigAtRestore()
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration", metric="score", mode="max", perturbation_interval=2,
        hyperparam_mutations={"score": tune.uniform(0.0, 1.0)}, synch=True,
    )
    # synch: the population is ranked once all reached iteration 2; the lowest score exploits
    _run(counts_to_four, tmp_path, recorder, scheduler=scheduler, resources_per_trial={"cpu": 0.25},
         config={"dir": str(tmp_path), "every": 1, "n": 6,
                 "score": tune.grid_search([0.1, 0.2, 0.3, 0.4])})
    assert recorder.exploited, recorder.events
    for event in recorder.of("restore"):
        assert recorder.events[recorder.events.index(event) - 1] == ("start", event[1])
