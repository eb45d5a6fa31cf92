"""Plugin registry: entry-point resolution, error messages, broken and third-party plugins.

The third-party plugin distributions used here are real: each is a source tree
with a pyproject.toml declaring entry points, built and installed with
``uv pip install --target`` into a temporary directory that is put on
``sys.path`` (and on PYTHONPATH for subprocesses), so discovery goes through
``importlib.metadata`` exactly as for a plugin installed with pip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tunekit_core import registry
from tunekit_core.registry import PluginConflictWarning, PluginLoadError, UnknownPluginError

# -- building and installing throwaway plugin distributions ---------------------------

PLUGINS_PYPROJECT = """
[project]
name = "tunekit-test-plugins"
version = "0.3.0"
dependencies = ["tunekit"]

[project.entry-points."tunekit.schedulers"]
acme_fifo = "tk_test_plugins.sched:AcmeScheduler"
broken = "tk_test_broken:Broken"
ghost = "tk_test_missing_module:Ghost"

[project.entry-points."tunekit.callbacks"]
counter = "tk_test_plugins.cb:CountingCallback"

[project.entry-points."tunekit.plugins"]
recorder = "tk_test_plugins.hooks"
broken_hooks = "tk_test_broken"

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["tk_test_plugins", "tk_test_broken"]
"""

PLUGIN_FILES = {
    "tk_test_plugins/__init__.py": "",
    "tk_test_plugins/sched.py": """
        from tunekit.schedulers import TrialScheduler


        class AcmeScheduler(TrialScheduler):
            def __init__(self, patience=1):
                super().__init__()
                self.patience = patience

            def choose_trial_to_run(self, runner):
                return None
        """,
    "tk_test_plugins/cb.py": """
        from tunekit_core.callback import Callback


        class CountingCallback(Callback):
            def __init__(self):
                self.results = 0

            def on_trial_result(self, iteration, trials, trial, result, **info):
                self.results += 1
        """,
    "tk_test_plugins/hooks.py": """
        from tunekit_core.hookspecs import hookimpl

        CALLS = []


        @hookimpl
        def tunekit_on_trial_start(trial):
            CALLS.append(("start", trial))


        @hookimpl
        def tunekit_on_trial_result(trial, result):
            CALLS.append(("result", trial, result["training_iteration"]))
        """,
    "tk_test_broken/__init__.py": """
        raise RuntimeError("tk_test_broken exploded on import")
        """,
}

DUPE_PYPROJECT = """
[project]
name = "tunekit-test-dupe"
version = "2.0.0"
dependencies = ["tunekit", "tunekit-definitely-not-installed>=1.0"]

[project.entry-points."tunekit.schedulers"]
fifo = "tk_test_dupe:DupeFIFO"

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["tk_test_dupe"]
"""

DUPE_FILES = {
    "tk_test_dupe/__init__.py": """
        from tunekit_fifo import FIFOScheduler


        class DupeFIFO(FIFOScheduler):
            pass
        """,
}

TEST_MODULES = ("tk_test_plugins", "tk_test_broken", "tk_test_dupe")


def _write_tree(root: Path, pyproject: str, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(pyproject))
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to build and install the throwaway plugin distributions")
    return uv


def install_distributions(sources: list[Path], target: Path) -> None:
    """Build ``sources`` and install them into the directory ``target`` (no dependencies)."""
    command = [
        _uv(),
        "pip",
        "install",
        "--no-deps",
        "--python",
        sys.executable,
        "--target",
        str(target),
        *map(str, sources),
    ]
    done = subprocess.run([*command, "--offline"], capture_output=True, text=True)
    if done.returncode != 0:  # the build backend is not in uv's cache yet
        done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, f"installing test plugins failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed test distributions (not on sys.path yet)."""
    base = tmp_path_factory.mktemp("tunekit-test-plugins")
    sources = [
        _write_tree(base / "src-plugins", PLUGINS_PYPROJECT, PLUGIN_FILES),
        _write_tree(base / "src-dupe", DUPE_PYPROJECT, DUPE_FILES),
    ]
    site = base / "site"
    install_distributions(sources, site)
    assert (site / "tunekit_test_plugins-0.3.0.dist-info" / "entry_points.txt").exists()
    return site


def _forget_test_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in TEST_MODULES:
            del sys.modules[name]


@pytest.fixture
def test_plugins(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test distributions installed: first on sys.path, and on PYTHONPATH."""
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join([str(plugin_site), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    registry.clear_cache()
    yield plugin_site
    _forget_test_modules()
    registry.clear_cache()


@pytest.fixture
def test_plugins_last(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test distributions installed, but last on sys.path."""
    monkeypatch.setattr(sys, "path", [*sys.path, str(plugin_site)])
    registry.clear_cache()
    yield plugin_site
    _forget_test_modules()
    registry.clear_cache()


# -- the standard plugins ---------------------------------------------------------------


def test_standard_names_resolve() -> None:
    assert {"random", "grid", "variant_generator"} <= set(registry.names("searcher"))
    assert "fifo" in registry.names("scheduler")
    assert {"json", "csv"} <= set(registry.names("logger"))
    assert "local" in registry.names("executor")

    import tunekit_fifo
    import tunekit_loggers

    assert registry.load("scheduler", "fifo") is tunekit_fifo.FIFOScheduler
    assert registry.load("logger", "json") is tunekit_loggers.JsonLoggerCallback
    assert registry.load("logger", "csv") is tunekit_loggers.CSVLoggerCallback
    # plural and group spellings of a kind are accepted too
    assert registry.load("schedulers", "fifo") is registry.load("tunekit.schedulers", "fifo")


def test_create_instantiates_with_kwargs() -> None:
    from tunekit.schedulers import FIFOScheduler, TrialScheduler, create_scheduler

    scheduler = registry.create("scheduler", "fifo")
    assert isinstance(scheduler, FIFOScheduler)
    assert isinstance(scheduler, TrialScheduler)
    made = create_scheduler("fifo", metric="loss", mode="min")
    assert (made.metric, made.mode) == ("loss", "min")


def test_unknown_name_lists_installed_and_suggests_closest() -> None:
    with pytest.raises(UnknownPluginError) as caught:
        registry.load("scheduler", "fifoo")
    message = str(caught.value)
    assert message.startswith("Unknown scheduler 'fifoo'. Installed schedulers: ")
    assert "fifo" in message.split("Installed schedulers: ")[1]
    assert "Did you mean 'fifo'?" in message
    assert "pip install tunekit[all]" in message
    assert isinstance(caught.value, ValueError)
    assert caught.value.installed == registry.names("scheduler")


def test_unknown_name_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(UnknownPluginError) as caught:
        registry.create("logger", "zzzzzz")
    message = str(caught.value)
    assert "Installed loggers: " in message and "csv" in message and "json" in message
    assert "Did you mean" not in message


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Unknown plugin kind 'schedular'.*scheduler"):
        registry.names("schedular")


def test_list_plugins_records_standard_plugins() -> None:
    records = {(r.kind, r.name): r for r in registry.list_plugins()}
    fifo = records[("scheduler", "fifo")]
    assert fifo.distribution == "tunekit-fifo"
    assert fifo.group == "tunekit.schedulers"
    assert fifo.value == "tunekit_fifo:FIFOScheduler"
    assert fifo.loads and fifo.problem is None and fifo.active
    assert records[("executor", "local")].distribution == "tunekit"
    only_loggers = registry.list_plugins("logger")
    assert {r.kind for r in only_loggers} == {"logger"}


# -- third-party, broken and duplicate plugins -------------------------------------------


def test_third_party_scheduler_resolves_by_name(test_plugins: Path) -> None:
    from tunekit.schedulers import TrialScheduler, create_scheduler

    assert "acme_fifo" in registry.names("scheduler")
    scheduler = create_scheduler("acme_fifo", patience=3)
    assert isinstance(scheduler, TrialScheduler)
    assert type(scheduler).__module__ == "tk_test_plugins.sched"
    assert scheduler.patience == 3
    record = next(r for r in registry.list_plugins("scheduler") if r.name == "acme_fifo")
    assert (record.distribution, record.version) == ("tunekit-test-plugins", "0.3.0")


def test_third_party_callback_resolves_by_name(test_plugins: Path) -> None:
    from tunekit_core.callback import Callback

    callback = registry.create("callback", "counter")
    assert isinstance(callback, Callback)
    assert callback.results == 0


def test_listing_imports_no_plugin(test_plugins: Path) -> None:
    records = registry.list_plugins()
    assert {"broken", "ghost", "acme_fifo"} <= {r.name for r in records}
    assert not [m for m in sys.modules if m.split(".")[0] in TEST_MODULES]


def test_broken_plugin_raises_load_error_naming_distribution(test_plugins: Path) -> None:
    with pytest.raises(PluginLoadError) as caught:
        registry.load("scheduler", "broken")
    error = caught.value
    assert isinstance(error, ImportError)
    message = str(error)
    assert "scheduler 'broken'" in message
    assert "tunekit-test-plugins 0.3.0" in message
    assert "tk_test_broken:Broken" in message
    assert "RuntimeError: tk_test_broken exploded on import" in message
    assert isinstance(error.__cause__, RuntimeError)
    assert error.distribution == "tunekit-test-plugins"
    # other plugins of the same distribution still load
    assert registry.load("scheduler", "acme_fifo").__name__ == "AcmeScheduler"


def test_loads_is_decided_statically_and_checked_on_import(test_plugins: Path) -> None:
    records = {(r.kind, r.name): r for r in registry.list_plugins()}
    # the broken module exists, so statically it looks loadable...
    assert records[("scheduler", "broken")].loads
    # ...a missing module does not
    ghost = records[("scheduler", "ghost")]
    assert not ghost.loads and "tk_test_missing_module" in ghost.problem
    # importing tells the truth
    checked = registry.check_import("scheduler", "broken")
    assert not checked.loads and "exploded on import" in checked.problem
    assert registry.check_import("scheduler", "acme_fifo").loads
    imported = {(r.kind, r.name): r for r in registry.list_plugins(import_plugins=True)}
    assert not imported[("scheduler", "broken")].loads
    assert not imported[("plugin", "broken_hooks")].loads
    assert imported[("scheduler", "acme_fifo")].loads


def test_missing_requirement_makes_plugin_not_load(test_plugins: Path) -> None:
    dupe = [r for r in registry.list_plugins("scheduler") if r.distribution == "tunekit-test-dupe"]
    assert len(dupe) == 1
    assert not dupe[0].loads
    assert "tunekit-definitely-not-installed" in dupe[0].problem


def test_duplicate_names_first_on_sys_path_wins(test_plugins: Path) -> None:
    fifos = [r for r in registry.list_plugins("scheduler") if r.name == "fifo"]
    assert [r.distribution for r in fifos] == ["tunekit-test-dupe", "tunekit-fifo"]
    assert [r.active for r in fifos] == [True, False]
    assert registry.names("scheduler").count("fifo") == 1
    with pytest.warns(PluginConflictWarning, match="tunekit-test-dupe.*tunekit-fifo"):
        winner = registry.load("scheduler", "fifo")
    assert winner.__name__ == "DupeFIFO"


def test_duplicate_names_later_on_sys_path_lose(test_plugins_last: Path) -> None:
    import tunekit_fifo

    fifos = [r for r in registry.list_plugins("scheduler") if r.name == "fifo"]
    assert [r.distribution for r in fifos] == ["tunekit-fifo", "tunekit-test-dupe"]
    with pytest.warns(PluginConflictWarning):
        assert registry.load("scheduler", "fifo") is tunekit_fifo.FIFOScheduler


def test_scan_is_cached_until_cleared(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.clear_cache()
    assert "acme_fifo" not in registry.names("scheduler")
    monkeypatch.syspath_prepend(str(plugin_site))
    assert "acme_fifo" not in registry.names("scheduler")  # cached scan
    registry.clear_cache()
    try:
        assert "acme_fifo" in registry.names("scheduler")
    finally:
        monkeypatch.undo()
        _forget_test_modules()
        registry.clear_cache()


# -- public facades ----------------------------------------------------------------------


def test_facades_export_plugin_classes_lazily() -> None:
    import tunekit_fifo
    import tunekit_loggers

    import tunekit.logger
    import tunekit.schedulers
    from tunekit.callback import Callback
    from tunekit_core.callback import Callback as CoreCallback
    from tunekit_core.callback import LoggerCallback

    assert tunekit.schedulers.FIFOScheduler is tunekit_fifo.FIFOScheduler
    assert tunekit.logger.JsonLoggerCallback is tunekit_loggers.JsonLoggerCallback
    assert tunekit.logger.CSVLoggerCallback is tunekit_loggers.CSVLoggerCallback
    assert tunekit.logger.LoggerCallback is LoggerCallback
    assert Callback is CoreCallback
    assert "FIFOScheduler" in dir(tunekit.schedulers)
    with pytest.raises(AttributeError):
        tunekit.schedulers.NoSuchScheduler  # noqa: B018


def test_facade_names_the_missing_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    import tunekit.schedulers

    monkeypatch.delattr(tunekit.schedulers, "FIFOScheduler", raising=False)
    monkeypatch.setitem(sys.modules, "tunekit_fifo", None)  # as if not installed
    with pytest.raises(ImportError) as caught:
        tunekit.schedulers.FIFOScheduler  # noqa: B018
    message = str(caught.value)
    assert "tunekit-fifo" in message and "pip install tunekit[standard]" in message

    # maybe cached by an earlier test (delitem: getattr would import it)
    monkeypatch.delitem(vars(tunekit.schedulers), "ASHAScheduler", raising=False)
    monkeypatch.setitem(
        tunekit.schedulers._LAZY, "ASHAScheduler", ("tk_no_such_module", "tunekit-hyperband")
    )
    with pytest.raises(ImportError, match=r"pip install tunekit-hyperband.*tunekit\[schedulers\]"):
        tunekit.schedulers.ASHAScheduler  # noqa: B018


# -- names of tunekit's own plugins whose distribution is not installed ---------------------

REPO = Path(__file__).resolve().parents[1]


def _shipped_entry_points() -> dict[tuple[str, str], str]:
    """(kind, name) -> distribution, read from the pyproject.toml of every folder under plugins/."""
    import tomllib

    found: dict[tuple[str, str], str] = {}
    for pyproject in sorted(REPO.glob("plugins/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        for group, entries in project.get("entry-points", {}).items():
            if group in registry.GROUPS.values() and group != registry.GROUPS["plugin"]:
                kind = group.removeprefix("tunekit.").removesuffix("s")
                for name in entries:
                    found[(kind, name)] = project["name"]
    return found


def test_shipped_plugins_table_matches_the_plugin_distributions() -> None:
    import tomllib

    shipped = _shipped_entry_points()
    assert ("scheduler", "asha") in shipped and ("searcher", "optuna") in shipped  # read them
    table = {key: distribution for key, (distribution, _) in registry.SHIPPED_PLUGINS.items()}
    assert table == shipped
    # the extra named for each distribution installs it
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for distribution, extra in set(registry.SHIPPED_PLUGINS.values()):
        assert distribution in extras[extra], (distribution, extra)


def _hide_distribution(monkeypatch: pytest.MonkeyPatch, distribution: str) -> None:
    """Make the registry's scan look as if ``distribution`` were not installed."""
    index = registry._get_index()
    hidden = {
        kind: {
            name: kept
            for name, entries in by_name.items()
            if (kept := [e for e in entries if e.distribution != distribution])
        }
        for kind, by_name in index.items()
    }
    assert hidden != index  # it was installed
    monkeypatch.setattr(registry, "_index", hidden)
    monkeypatch.setattr(registry, "_loaded", {})


def test_missing_scheduler_distribution_is_an_import_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import tunekit as tune

    _hide_distribution(monkeypatch, "tunekit-hyperband")
    for name in ("asha", "async_hyperband", "hyperband", "hb_bohb", "median_stopping_rule"):
        with pytest.raises(ImportError) as caught:
            tune.run(lambda config: tune.report(score=1), scheduler=name, metric="score",
                     mode="max", local_dir=str(tmp_path), verbose=0)
        error = caught.value
        message = str(error)
        assert f"The scheduler {name!r} is provided by the plugin distribution 'tunekit-hyperband'" in message
        assert "pip install tunekit-hyperband" in message and "tunekit[schedulers]" in message
        assert "fifo" in message.split("Installed schedulers: ")[1]
        # still catchable as before: an UnknownPluginError, which is a ValueError
        assert isinstance(error, registry.MissingPluginError)
        assert isinstance(error, UnknownPluginError) and isinstance(error, ValueError)
        assert (error.kind, error.name, error.distribution) == ("scheduler", name, "tunekit-hyperband")
    assert not list(tmp_path.rglob("result.json"))  # no trial ran
    # the other schedulers are unaffected
    assert registry.load("scheduler", "pbt").__name__ == "PopulationBasedTraining"


def test_missing_searcher_and_logger_distributions_name_them(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    import tunekit as tune
    from tunekit.search import create_searcher

    _hide_distribution(monkeypatch, "tunekit-optuna")
    with pytest.raises(ImportError, match=r"pip install tunekit-optuna.*tunekit\[optuna\]"):
        create_searcher("optuna")
    _hide_distribution(monkeypatch, "tunekit-tensorboard")
    # run(callbacks=[...]) looks names up among callbacks and loggers
    with pytest.raises(ImportError, match=r"pip install tunekit-tensorboard.*tunekit\[tensorboard\]"):
        tune.run(lambda config: tune.report(score=1), callbacks=["tensorboard"],
                 local_dir=str(tmp_path), verbose=0)
    _hide_distribution(monkeypatch, "tunekit-ray")
    with pytest.raises(ImportError, match=r"pip install tunekit-ray.*tunekit\[ray\]"):
        registry.create("executor", "ray")


def test_unknown_third_party_names_are_not_import_errors() -> None:
    for kind, name in (("scheduler", "acme_sched"), ("searcher", "asha"), ("logger", "optuna")):
        with pytest.raises(UnknownPluginError) as caught:
            registry.load(kind, name)
        assert not isinstance(caught.value, ImportError)
        assert str(caught.value).startswith(f"Unknown {kind} {name!r}.")


# -- TrialScheduler and FIFOScheduler ------------------------------------------------------


class _Trial:
    def __init__(self, name: str, status: str, cpus: int = 1) -> None:
        self.name = name
        self.status = status
        self.resources = cpus

    def __repr__(self) -> str:
        return self.name


class _Runner:
    def __init__(self, trials: list[_Trial], free_cpus: int) -> None:
        self.trials = trials
        self.free_cpus = free_cpus
        self.asked: list[str] = []

    def get_trials(self) -> list[_Trial]:
        return self.trials

    def get_pending_trials(self) -> list[_Trial]:
        return [t for t in self.trials if t.status == "PENDING"]

    def get_paused_trials(self) -> list[_Trial]:
        return [t for t in self.trials if t.status == "PAUSED"]

    def has_resources_for_trial(self, trial: _Trial) -> bool:
        self.asked.append(trial.name)
        return trial.resources <= self.free_cpus


def test_fifo_chooses_first_pending_then_paused() -> None:
    from tunekit.schedulers import FIFOScheduler, TrialScheduler

    scheduler = FIFOScheduler()
    trials = [
        _Trial("a", "RUNNING"),
        _Trial("b", "PAUSED"),
        _Trial("c", "PENDING"),
        _Trial("d", "PENDING"),
    ]
    assert scheduler.choose_trial_to_run(_Runner(trials, 1)).name == "c"
    trials[2].status = trials[3].status = "RUNNING"
    assert scheduler.choose_trial_to_run(_Runner(trials, 1)).name == "b"
    assert scheduler.choose_trial_to_run(_Runner(trials, 0)) is None
    assert scheduler.on_trial_result(None, trials[0], {}) == TrialScheduler.CONTINUE
    assert scheduler.debug_string() == "Using FIFO scheduling algorithm."


def test_fifo_skips_trials_that_do_not_fit_and_asks_once_per_resource_shape() -> None:
    from tunekit.schedulers import FIFOScheduler

    trials = [
        _Trial("big1", "PENDING", 4),
        _Trial("big2", "PENDING", 4),
        _Trial("small", "PENDING", 1),
    ]
    runner = _Runner(trials, 2)
    assert FIFOScheduler().choose_trial_to_run(runner).name == "small"
    assert runner.asked == ["big1", "small"]


def test_fifo_works_with_runners_offering_only_get_trials() -> None:
    from tunekit.schedulers import FIFOScheduler

    class OldRunner:
        def get_trials(self):
            return [_Trial("x", "TERMINATED"), _Trial("y", "PENDING")]

        def has_resources_for_trial(self, trial):
            return True

    assert FIFOScheduler().choose_trial_to_run(OldRunner()).name == "y"


def test_scheduler_search_properties() -> None:
    from tunekit.schedulers import FIFOScheduler, TrialScheduler

    scheduler = FIFOScheduler()
    assert scheduler.set_search_properties("loss", "min", num_samples=4)
    assert (scheduler.metric, scheduler.mode) == ("loss", "min")
    assert scheduler.set_search_properties(None, None)  # nothing new: fine
    assert scheduler.set_search_properties("loss", "min")  # the same: fine
    assert not scheduler.set_search_properties("acc", None)
    assert not scheduler.set_search_properties(None, "max")
    assert (scheduler.metric, scheduler.mode) == ("loss", "min")
    with pytest.raises(ValueError, match="'min' or 'max'"):
        FIFOScheduler(mode="maximum")
    with pytest.raises(ValueError, match="'min' or 'max'"):
        FIFOScheduler().set_search_properties("loss", "best")
    assert TrialScheduler().supports_buffered_results is True
    with pytest.raises(NotImplementedError, match="choose_trial_to_run"):
        TrialScheduler().choose_trial_to_run(None)


def test_ray_style_scheduler_subclass_without_init() -> None:
    from tunekit.schedulers import TrialScheduler
    from tunekit_core.scheduler import apply_search_properties

    class RayStyle(TrialScheduler):
        def __init__(self):
            self._metric = "score"
            self._supports_buffered_results = False

        def set_search_properties(self, metric, mode):
            return super().set_search_properties(metric, mode)

    scheduler = RayStyle()
    assert scheduler.mode is None and not scheduler.supports_buffered_results
    assert apply_search_properties(scheduler, "score", "max", num_samples=3)
    assert scheduler.mode == "max"


def test_scheduler_save_and_restore(tmp_path: Path) -> None:
    from tunekit.schedulers import FIFOScheduler

    scheduler = FIFOScheduler(metric="loss", mode="min")
    scheduler.set_search_properties(None, None)
    path = tmp_path / "scheduler.pkl"
    scheduler.save(str(path))
    restored = FIFOScheduler()
    restored.restore(str(path))
    assert (restored.metric, restored.mode) == ("loss", "min")
