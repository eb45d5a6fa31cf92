"""Hooks reach Ray-style callbacks, @hookimpl objects and installed plugin modules."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pluggy
import pytest

try:
    from test_registry import plugin_site, test_plugins  # noqa: F401
except ImportError:  # tests imported as a package
    from tests.test_registry import plugin_site, test_plugins  # noqa: F401

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
