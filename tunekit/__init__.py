"""tunekit: hyperparameter tuning with Ray Tune's ``tune.run`` semantics.

``import tunekit as tune`` gives the names a Ray Tune script uses. Names are loaded
on first use so that importing tunekit stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # running
    "run": "tunekit_core.run",
    "Verbosity": "tunekit_core.run",
    "Experiment": "tunekit_core.experiment",
    "register_trainable": "tunekit_core.experiment",
    "with_parameters": "tunekit_core.with_parameters",
    "Trainable": "tunekit_core.trainable",
    "TuneError": "tunekit_core.errors",
    "PlacementGroupFactory": "tunekit_core.resources",
    # inside a trial
    "report": "tunekit_core.session",
    "get_trial_id": "tunekit_core.session",
    "get_trial_name": "tunekit_core.session",
    "get_trial_dir": "tunekit_core.session",
    "get_trial_resources": "tunekit_core.session",
    "is_session_enabled": "tunekit_core.session",
    "get_checkpoint": "tunekit_core.session",
    "checkpoint_dir": "tunekit_core.session",
    "Checkpoint": "tunekit_core.checkpoint",
    "SyncConfig": "tunekit_core.sync",
    # search spaces
    "uniform": "tunekit_core.space",
    "quniform": "tunekit_core.space",
    "loguniform": "tunekit_core.space",
    "qloguniform": "tunekit_core.space",
    "randn": "tunekit_core.space",
    "qrandn": "tunekit_core.space",
    "randint": "tunekit_core.space",
    "qrandint": "tunekit_core.space",
    "lograndint": "tunekit_core.space",
    "qlograndint": "tunekit_core.space",
    "choice": "tunekit_core.space",
    "grid_search": "tunekit_core.space",
    "sample_from": "tunekit_core.space",
    # stopping
    "Stopper": "tunekit_core.stopper",
    "MaximumIterationStopper": "tunekit_core.stopper",
    "TrialPlateauStopper": "tunekit_core.stopper",
    "ExperimentPlateauStopper": "tunekit_core.stopper",
    "TimeoutStopper": "tunekit_core.stopper",
    "CombinedStopper": "tunekit_core.stopper",
    "FunctionStopper": "tunekit_core.stopper",
    # Ray Tune 2.x's Tuner API
    "Tuner": "tunekit_core.tuner",
    "TuneConfig": "tunekit_core.tuner",
    "RunConfig": "tunekit_core.tuner",
    "CheckpointConfig": "tunekit_core.tuner",
    "FailureConfig": "tunekit_core.tuner",
    "ResultGrid": "tunekit_core.result_grid",
    "Result": "tunekit_core.result_grid",
    "with_resources": "tunekit_core.tuner",
    "get_context": "tunekit_core.tuner",
    # results and reporting
    "ExperimentAnalysis": "tunekit_core.analysis",
    "ProgressReporter": "tunekit_core.progress",
    "CLIReporter": "tunekit_core.progress",
    "JupyterNotebookReporter": "tunekit_core.progress",
    # talking to a running experiment (run(server_port=...))
    "TuneClient": "tunekit_core.client",
    # plugins
    "create_scheduler": "tunekit.schedulers",
    "create_searcher": "tunekit.search",
    "Callback": "tunekit_core.callback",
    "hookimpl": "tunekit_core.hookspecs",
    "hookspec": "tunekit_core.hookspecs",
}

# submodules reachable as attributes, as with `tune.search.ConcurrencyLimiter` in Ray Tune
_SUBMODULES = frozenset(
    {
        "analysis", "callback", "error", "experiment", "logger", "progress_reporter",
        "schedulers", "search", "stopper", "sync", "trainable", "web_server",
    }
)

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"tunekit.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tunekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from tunekit_core.analysis import ExperimentAnalysis  # noqa: F401
    from tunekit_core.run import run  # noqa: F401
