"""Experiments: a trainable plus everything that says how to tune it."""

from __future__ import annotations

import datetime
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .resources import PlacementGroupFactory, to_placement_group_factory
from .trainable import Trainable

_registered_trainables: dict[str, Any] = {}
_ONE_CPU = to_placement_group_factory(None)  # the default request, shared by all trials


def register_trainable(name: str, trainable: Any) -> None:
    """Register a function or :class:`Trainable` class under ``name``.

    ``tunekit.run("name")`` then runs it; this is how lambdas are used as trainables.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("register_trainable needs a non-empty string name.")
    if not (callable(trainable) or (inspect.isclass(trainable) and issubclass(trainable, Trainable))):
        raise TypeError(
            f"register_trainable({name!r}, ...) needs a function or a Trainable subclass, got "
            f"{type(trainable).__name__}."
        )
    _registered_trainables[name] = trainable


def get_registered_trainable(name: str) -> Any:
    try:
        return _registered_trainables[name]
    except KeyError:
        known = ", ".join(sorted(_registered_trainables)) or "none"
        raise ValueError(
            f"Unknown trainable {name!r}. Registered trainables: {known}. Register it first "
            "with tunekit.register_trainable(name, trainable), or pass the function or class "
            "itself."
        ) from None


def is_class_trainable(trainable: Any) -> bool:
    return inspect.isclass(trainable) and issubclass(trainable, Trainable)


def trainable_name(run: Any) -> str:
    if isinstance(run, str):
        return run
    name = getattr(run, "__name__", None) or type(run).__name__
    return "lambda" if name == "<lambda>" else name


def default_results_dir() -> str:
    """``$TUNEKIT_RESULTS_DIR`` or ``~/tunekit_results``."""
    return os.path.expanduser(os.environ.get("TUNEKIT_RESULTS_DIR") or "~/tunekit_results")


def budget_seconds(time_budget_s: Any) -> float | None:
    if time_budget_s is None:
        return None
    if isinstance(time_budget_s, datetime.timedelta):
        seconds = time_budget_s.total_seconds()
    elif isinstance(time_budget_s, (int, float)) and not isinstance(time_budget_s, bool):
        seconds = float(time_budget_s)
    else:
        raise TypeError(
            "time_budget_s must be a number of seconds or a datetime.timedelta, got "
            f"{type(time_budget_s).__name__}."
        )
    if seconds <= 0:
        raise ValueError(f"time_budget_s must be positive, got {time_budget_s!r}.")
    return seconds


def log_file_paths(log_to_file: Any) -> tuple[str, str] | None:
    """Normalise ``log_to_file`` into (stdout name, stderr name) relative to the trial dir."""
    if log_to_file is False or log_to_file is None:
        return None
    if log_to_file is True:
        return ("stdout", "stderr")
    if isinstance(log_to_file, str):
        return (log_to_file, log_to_file)
    if isinstance(log_to_file, Sequence) and len(log_to_file) == 2 and all(
        isinstance(p, str) for p in log_to_file
    ):
        return (log_to_file[0], log_to_file[1])
    raise ValueError(
        "log_to_file must be True/False, a file name for both streams, or a pair "
        f"(stdout_file, stderr_file); got {log_to_file!r}."
    )


def not_implemented_yet(name: str, value: Any, default: Any) -> None:
    if value != default:
        raise NotImplementedError(
            f"The `{name}` parameter is not implemented in this tunekit version (got "
            f"{value!r}); leave it at its default ({default!r}). See docs/run.md for the "
            "parameters that are still to come."
        )


class Experiment:
    """A trainable and its tuning specification (Ray Tune's ``Experiment``)."""

    def __init__(
        self,
        name: str | None,
        run: Any,
        stop: Mapping | Callable | Any | None = None,
        time_budget_s: Any = None,
        config: dict | None = None,
        resources_per_trial: Mapping | PlacementGroupFactory | None = None,
        num_samples: int = 1,
        local_dir: str | None = None,
        trial_name_creator: Callable | None = None,
        trial_dirname_creator: Callable | None = None,
        log_to_file: Any = False,
        checkpoint_freq: int = 0,
        checkpoint_at_end: bool = False,
        keep_checkpoints_num: int | None = None,
        checkpoint_score_attr: str | None = None,
        export_formats: Sequence | None = None,
        max_failures: int = 0,
        restore: str | None = None,
        sync_config: Any = None,
        storage_path: str | None = None,
    ):
        if not isinstance(checkpoint_freq, int) or checkpoint_freq < 0:
            raise ValueError(f"checkpoint_freq must be an int >= 0, got {checkpoint_freq!r}.")
        if keep_checkpoints_num is not None and (
            not isinstance(keep_checkpoints_num, int) or keep_checkpoints_num < 1
        ):
            raise ValueError(
                f"keep_checkpoints_num must be None (keep all) or an int >= 1, got "
                f"{keep_checkpoints_num!r}."
            )
        if checkpoint_score_attr is not None and not isinstance(checkpoint_score_attr, str):
            raise TypeError(
                "checkpoint_score_attr must be a result key, optionally prefixed with 'min-'; "
                f"got {checkpoint_score_attr!r}."
            )
        if restore is not None and not os.path.isdir(os.path.expanduser(os.fspath(restore))):
            raise ValueError(
                f"restore={restore!r} is not a checkpoint directory; pass the path of a "
                "checkpoint_<n> directory of an earlier trial."
            )
        self.checkpoint_freq = checkpoint_freq
        self.checkpoint_at_end = bool(checkpoint_at_end)
        self.keep_checkpoints_num = keep_checkpoints_num
        self.checkpoint_score_attr = checkpoint_score_attr
        self.export_formats = list(export_formats) if export_formats else None
        self.restore = os.path.abspath(os.path.expanduser(os.fspath(restore))) if restore else None
        if sync_config is not None:
            from .sync import SyncConfig

            if not isinstance(sync_config, SyncConfig):
                raise TypeError(
                    f"sync_config must be a tunekit.SyncConfig, got {type(sync_config).__name__}."
                )
        self.sync_config = sync_config

        if isinstance(run, str):
            trainable = get_registered_trainable(run)
            self.trainable_name = run
        else:
            trainable = run
            self.trainable_name = trainable_name(run)
        if not (callable(trainable) or is_class_trainable(trainable)):
            raise TypeError(
                "run_or_experiment must be a function, a Trainable subclass, a registered "
                f"trainable name, or an Experiment; got {type(run).__name__}."
            )
        if inspect.isclass(trainable) and not is_class_trainable(trainable):
            raise TypeError(
                f"Class trainable {trainable.__name__} must subclass tunekit.Trainable."
            )
        self.trainable = trainable
        self.is_class = is_class_trainable(trainable)
        if not self.is_class and (checkpoint_freq or checkpoint_at_end):
            import logging

            logging.getLogger("tunekit").warning(
                "checkpoint_freq/checkpoint_at_end have no effect on the function trainable %s: "
                "report checkpoints with tunekit.report(metrics, checkpoint=...) instead.",
                self.trainable_name,
            )
        self.name = name or self.trainable_name

        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict, got {type(config).__name__}.")
        self.config = dict(config or {})
        if not isinstance(num_samples, int) or isinstance(num_samples, bool):
            raise TypeError(f"num_samples must be an int, got {num_samples!r}.")
        if num_samples == 0 or num_samples < -1:
            raise ValueError(
                f"num_samples must be a positive int, or -1 for no limit; got {num_samples}."
            )
        self.num_samples = num_samples
        self.stop = stop
        self.time_budget_s = budget_seconds(time_budget_s)

        if resources_per_trial is not None and self.is_class:
            default = trainable.default_resource_request(self.config)
            if default is not None:
                raise ValueError(
                    f"Resources for {self.trainable_name} are set by its "
                    "default_resource_request() method; remove resources_per_trial, or stop "
                    "overriding default_resource_request."
                )
        self.resources_per_trial = (
            None if resources_per_trial is None else to_placement_group_factory(resources_per_trial)
        )
        # tunekit.with_resources on a function: a fixed request, or a function of the config.
        self._resources_fn: Callable | None = None
        requested = None if self.is_class else getattr(trainable, "_tunekit_resources", None)
        if requested is not None and self.resources_per_trial is None:
            if isinstance(requested, (PlacementGroupFactory, Mapping)):
                self.resources_per_trial = to_placement_group_factory(requested)
            else:
                self._resources_fn = requested

        root = storage_path or local_dir or default_results_dir()
        if root.startswith("file://"):
            root = root[len("file://"):]
        if "://" in root:
            raise NotImplementedError(
                f"Remote storage paths ({root}) are not implemented in this tunekit version; "
                "use a local directory."
            )
        self.local_dir = os.path.abspath(os.path.expanduser(root))
        self.trial_name_creator = trial_name_creator
        self.trial_dirname_creator = trial_dirname_creator
        self.log_to_file = log_file_paths(log_to_file)
        if not isinstance(max_failures, int) or max_failures < -1:
            raise ValueError(
                f"max_failures must be an int >= 0, or -1 to retry without limit; got {max_failures!r}."
            )
        self.max_failures = max_failures

    @property
    def path(self) -> str:
        """The experiment directory ``<local_dir>/<name>``."""
        return os.path.join(self.local_dir, self.name)

    def resources_for(self, config: dict) -> PlacementGroupFactory:
        """The resources of a trial with ``config`` (Trainable defaults may depend on it)."""
        if self.resources_per_trial is not None:
            return self.resources_per_trial
        if self._resources_fn is not None:
            return to_placement_group_factory(self._resources_fn(config))
        if self.is_class:
            default = self.trainable.default_resource_request(config)
            if default is not None:
                return to_placement_group_factory(default)
        return _ONE_CPU

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, run={self.trainable_name!r})"
