"""Ray Tune 2.x's ``Tuner`` API, translated onto ``tunekit.run``.

``Tuner(trainable, param_space=..., tune_config=TuneConfig(...),
run_config=RunConfig(...)).fit()`` calls :func:`tunekit_core.run.run` with the
equivalent arguments and wraps the returned analysis in a
:class:`~tunekit_core.result_grid.ResultGrid`. Nothing about running trials is
implemented here: the Tuner only translates configuration objects, records them
(``tuner.pkl`` in the experiment directory, as Ray Tune does) so that
``Tuner.restore`` can continue the experiment, and maps ``restore``'s flags onto
``run``'s resume machinery.

Also here: :func:`with_resources` and :func:`get_context` (a :class:`TuneContext`
over the functions of :mod:`tunekit_core.session`).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import os
import types
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import TuneError
from .hookspecs import hookimpl
from .resources import PlacementGroupFactory, to_placement_group_factory

if TYPE_CHECKING:  # pragma: no cover
    import datetime

logger = logging.getLogger("tunekit")

__all__ = [
    "CheckpointConfig",
    "FailureConfig",
    "RunConfig",
    "TuneConfig",
    "TuneContext",
    "Tuner",
    "get_context",
    "with_resources",
]

#: The Tuner's configuration, saved in the experiment directory (Ray Tune's name).
TUNER_STATE_FILE = "tuner.pkl"
_STATE_FORMAT = "tunekit-tuner/1"
_DEPRECATED: Any = "DEPRECATED"
# The attribute tunekit.with_resources sets on a function trainable (read by Experiment).
RESOURCES_ATTR = "_tunekit_resources"


# --------------------------------------------------------------------------- Ray objects


def _ray_class(obj: Any) -> str | None:
    """``module.Class`` of the first class in ``obj``'s MRO that comes from Ray, or None."""
    cls = obj if isinstance(obj, type) else type(obj)
    for klass in getattr(cls, "__mro__", (cls,)):
        module = getattr(klass, "__module__", None) or ""
        if module == "ray" or module.startswith("ray."):
            return f"{module}.{klass.__qualname__}"
    return None


def _reject_ray(obj: Any, where: str, instead: str) -> None:
    """A clear error when a Ray object reaches the Tuner where a tunekit one is needed."""
    origin = _ray_class(obj)
    if origin is not None:
        raise TypeError(
            f"{where} is a Ray object ({origin}); tunekit cannot use Ray's classes. {instead}"
        )


def _check_param_space(space: Any, path: str = "param_space") -> None:
    """Reject Ray Tune domains (``ray.tune.uniform`` ...) and other Ray objects in the space."""
    if isinstance(space, Mapping):
        for key, value in space.items():
            _check_param_space(value, f"{path}[{key!r}]")
    elif isinstance(space, (list, tuple)):
        # the values of a grid or choice; a long list is data, not a space: its head will do
        for index, value in enumerate(space[:100]):
            _check_param_space(value, f"{path}[{index}]")
    elif _ray_class(space) is not None:
        _reject_ray(
            space,
            path,
            "Define the search space with tunekit's functions (import tunekit as tune; "
            "tune.uniform, tune.loguniform, tune.choice, tune.grid_search, ...).",
        )


def _check_trainable(trainable: Any) -> None:
    origin = _ray_class(trainable)
    if origin is None:
        return
    if origin.startswith("ray.train") or hasattr(trainable, "as_trainable"):
        raise TypeError(
            f"Ray Train trainers ({origin}) cannot be tuned by tunekit: it has no Ray Train, "
            "no distributed worker groups and no ScalingConfig. Put the training loop in a "
            "function `def train(config): ...` that calls tunekit.report({...}) (one process "
            "per trial; give it CPUs/GPUs with tunekit.with_resources(train, {'cpu': 4, "
            "'gpu': 1})) and pass that function to tunekit.Tuner."
        )
    if isinstance(trainable, type):
        raise TypeError(
            f"The trainable class {trainable.__name__} derives from {origin}. Make it subclass "
            "tunekit.Trainable instead (same methods: setup, step, save_checkpoint, "
            "load_checkpoint, cleanup, reset_config)."
        )
    raise TypeError(
        f"The trainable is a Ray object ({origin}); pass a function or a tunekit.Trainable "
        "subclass."
    )


# --------------------------------------------------------------------------- configs


@dataclass
class TuneConfig:
    """What to search and how (Ray Tune's ``TuneConfig``, same fields and defaults).

    Args:
        mode: ``"min"`` or ``"max"``: whether ``metric`` is minimised or maximised.
        metric: the reported result key to optimise; passed to the searcher and
            the scheduler, and the default of ``ResultGrid.get_best_result``.
        search_alg: a :class:`tunekit.search.Searcher` or the name of an
            installed searcher (``"random"``, ``"optuna"``, ``"hyperopt"``...).
            None: random/grid search over ``param_space``.
        scheduler: a :class:`tunekit.schedulers.TrialScheduler` or the name of
            an installed scheduler (``"asha"``, ``"hyperband"``, ``"pbt"``...).
            None: FIFO.
        num_samples: how many times to sample ``param_space`` (a grid is repeated
            that many times); -1: until a stopper or the time budget ends the run.
        max_concurrent_trials: at most this many trials at once (None or 0: as
            many as resources allow).
        time_budget_s: seconds (or a ``datetime.timedelta``) after which all
            trials are stopped.
        reuse_actors: reuse worker processes (and class trainables with
            ``reset_config``) between trials.
        trial_name_creator: ``f(trial) -> str``, the trial's name.
        trial_dirname_creator: ``f(trial) -> str``, its directory name (no path).
    """

    mode: str | None = None
    metric: str | None = None
    search_alg: Any = None
    scheduler: Any = None
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    time_budget_s: int | float | datetime.timedelta | None = None
    reuse_actors: bool = False
    trial_name_creator: Callable[[Any], str] | None = None
    trial_dirname_creator: Callable[[Any], str] | None = None
    chdir_to_trial_dir: Any = _DEPRECATED

    def __post_init__(self) -> None:
        if self.chdir_to_trial_dir != _DEPRECATED:
            raise DeprecationWarning(
                "TuneConfig(chdir_to_trial_dir=...) is deprecated (as in Ray Tune). tunekit never "
                "changes a trial's working directory: write trial files under "
                "tunekit.get_context().get_trial_dir() instead."
            )
        if self.mode is not None and self.mode not in ("min", "max"):
            raise ValueError(
                f"TuneConfig(mode=...) must be 'min', 'max' or None, got {self.mode!r}."
            )
        if self.metric is not None and not isinstance(self.metric, str):
            raise TypeError(f"TuneConfig(metric=...) must be a result key (str), got {self.metric!r}.")
        _reject_ray(
            self.search_alg,
            "TuneConfig(search_alg=...)",
            "Use the tunekit class of the same name from tunekit.search (e.g. "
            "tunekit.search.optuna.OptunaSearch, tunekit.search.ConcurrencyLimiter) or a searcher "
            "name such as search_alg='optuna'.",
        )
        _reject_ray(
            self.scheduler,
            "TuneConfig(scheduler=...)",
            "Use the tunekit class of the same name from tunekit.schedulers (e.g. "
            "tunekit.schedulers.ASHAScheduler) or a scheduler name such as scheduler='asha'.",
        )


@dataclass
class CheckpointConfig:
    """Which checkpoints to keep and when class trainables save them (Ray's ``CheckpointConfig``).

    Args:
        num_to_keep: keep at most this many checkpoints per trial (None: all).
            The latest one is never deleted.
        checkpoint_score_attribute: the result key that ranks checkpoints for
            ``num_to_keep`` (None: the most recent are the best).
        checkpoint_score_order: ``"max"`` or ``"min"``: which values are best.
        checkpoint_frequency: class trainables save a checkpoint every this many
            iterations (0: never). Function trainables report their own.
        checkpoint_at_end: class trainables save one when the trial ends. None
            (the default): True for a class trainable that implements
            ``save_checkpoint``, False otherwise. Function trainables report
            their own (True is an error for them, as in Ray Tune).
    """

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool | None = None

    def __post_init__(self) -> None:
        if self.num_to_keep is not None and (
            isinstance(self.num_to_keep, bool) or not isinstance(self.num_to_keep, int) or self.num_to_keep < 1
        ):
            raise ValueError(
                f"CheckpointConfig(num_to_keep=...) must be None (keep all) or an int >= 1, got "
                f"{self.num_to_keep!r}."
            )
        if self.checkpoint_score_order not in ("max", "min"):
            raise ValueError(
                f"CheckpointConfig(checkpoint_score_order=...) must be 'max' or 'min', got "
                f"{self.checkpoint_score_order!r}."
            )
        if self.checkpoint_score_attribute is not None and not isinstance(
            self.checkpoint_score_attribute, str
        ):
            raise TypeError(
                "CheckpointConfig(checkpoint_score_attribute=...) must be a result key (str), got "
                f"{self.checkpoint_score_attribute!r}."
            )
        if (
            isinstance(self.checkpoint_frequency, bool)
            or not isinstance(self.checkpoint_frequency, int)
            or self.checkpoint_frequency < 0
        ):
            raise ValueError(
                f"CheckpointConfig(checkpoint_frequency=...) must be an int >= 0, got "
                f"{self.checkpoint_frequency!r}."
            )

    @property
    def _score_attr(self) -> str | None:
        """The attribute in ``run``'s ``checkpoint_score_attr`` form ("min-loss")."""
        if self.checkpoint_score_attribute is None:
            return None
        prefix = "min-" if self.checkpoint_score_order == "min" else ""
        return prefix + self.checkpoint_score_attribute


@dataclass
class FailureConfig:
    """What happens when trials fail (Ray's ``FailureConfig``).

    Args:
        max_failures: retry a failed trial up to this many times, from its
            latest checkpoint if it has one (-1: without limit, 0: never).
        fail_fast: True: the first failure stops the whole run; ``"raise"``:
            ``fit()`` also raises that trial's exception.
    """

    max_failures: int = 0
    fail_fast: bool | str = False

    def __post_init__(self) -> None:
        if not (
            isinstance(self.fail_fast, bool)
            or (isinstance(self.fail_fast, str) and self.fail_fast.upper() == "RAISE")
        ):
            raise ValueError(
                f"FailureConfig(fail_fast=...) must be True, False or 'raise', got {self.fail_fast!r}."
            )
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < -1:
            raise ValueError(
                f"FailureConfig(max_failures=...) must be an int >= 0, or -1 to retry without "
                f"limit; got {self.max_failures!r}."
            )
        if self.fail_fast and self.max_failures != 0:
            raise ValueError(
                f"FailureConfig: max_failures must be 0 when fail_fast={self.fail_fast!r} (the "
                "first failure ends the run, so nothing would be retried)."
            )


@dataclass
class RunConfig:
    """Where results go and how the run behaves (Ray Tune's ``RunConfig``).

    Args:
        name: the experiment directory's name. None: the trainable's name and
            the time, e.g. ``train_2024-05-01_12-00-00`` (just the trainable's
            name with ``TUNEKIT_DISABLE_DATED_SUBDIR=1``).
        storage_path: the directory holding experiments. None:
            ``$TUNEKIT_RESULTS_DIR`` or ``~/tunekit_results``. Local paths only:
            mirror to remote storage with ``sync_config``.
        failure_config: a :class:`FailureConfig` (None: the defaults).
        checkpoint_config: a :class:`CheckpointConfig` (None: the defaults).
        sync_config: a :class:`tunekit.SyncConfig` to mirror the experiment to
            an fsspec URL (None: no syncing).
        verbose: 0-3, tunekit's (Ray's classic) verbosity levels; None: 3.
        stop: a dict of result thresholds, a ``f(trial_id, result) -> bool``,
            or a :class:`tunekit.Stopper`.
        callbacks: :class:`tunekit.Callback` instances (loggers included).
        progress_reporter: a :class:`tunekit.ProgressReporter` (None: CLIReporter).
        log_to_file: True, a file name, or a (stdout, stderr) pair: send each
            trial's output to files in its directory.
    """

    name: str | None = None
    storage_path: str | os.PathLike | None = None
    storage_filesystem: Any = None
    failure_config: FailureConfig | None = None
    checkpoint_config: CheckpointConfig | None = None
    sync_config: Any = None
    verbose: int | None = None
    stop: Any = None
    callbacks: list | None = None
    progress_reporter: Any = None
    log_to_file: bool | str | Sequence[str] = False
    local_dir: str | None = None

    def __post_init__(self) -> None:
        from .experiment import default_results_dir

        if self.local_dir is not None:
            raise DeprecationWarning(
                "RunConfig(local_dir=...) is deprecated (as in Ray Tune 2.x); pass "
                "RunConfig(storage_path=...) instead."
            )
        if self.storage_filesystem is not None:
            raise NotImplementedError(
                "RunConfig(storage_filesystem=...) (a pyarrow file system) is Ray-only: tunekit "
                "writes experiments to a local directory. Pass storage_path=<local directory> and "
                "mirror the experiment to remote storage with "
                "RunConfig(sync_config=tunekit.SyncConfig(upload_dir='s3://bucket/path'))."
            )
        if self.storage_path is None:
            self.storage_path = default_results_dir()
        else:
            self.storage_path = os.fspath(self.storage_path)
            if self.storage_path.startswith("file://"):
                self.storage_path = self.storage_path[len("file://"):]
            if "://" in self.storage_path:
                raise NotImplementedError(
                    f"RunConfig(storage_path={self.storage_path!r}): remote storage paths are "
                    "Ray-only. tunekit writes experiments to a local directory: pass a local "
                    "storage_path and mirror it with RunConfig(sync_config=tunekit.SyncConfig("
                    f"upload_dir={self.storage_path!r}))."
                )
            self.storage_path = os.path.abspath(os.path.expanduser(self.storage_path))
        if self.name is not None and (not isinstance(self.name, str) or not self.name or os.sep in self.name):
            raise ValueError(
                f"RunConfig(name=...) must be a plain directory name, got {self.name!r}."
            )
        if self.failure_config is None:
            self.failure_config = FailureConfig()
        elif not isinstance(self.failure_config, FailureConfig):
            raise TypeError(
                f"RunConfig(failure_config=...) must be a tunekit.FailureConfig, got "
                f"{_ray_class(self.failure_config) or type(self.failure_config).__name__}."
            )
        if self.checkpoint_config is None:
            self.checkpoint_config = CheckpointConfig()
        elif not isinstance(self.checkpoint_config, CheckpointConfig):
            raise TypeError(
                f"RunConfig(checkpoint_config=...) must be a tunekit.CheckpointConfig, got "
                f"{_ray_class(self.checkpoint_config) or type(self.checkpoint_config).__name__}."
            )
        _reject_ray(
            self.sync_config,
            "RunConfig(sync_config=...)",
            "Use tunekit.SyncConfig(upload_dir=...).",
        )
        _reject_ray(
            self.progress_reporter,
            "RunConfig(progress_reporter=...)",
            "Use tunekit.CLIReporter or a tunekit.ProgressReporter subclass.",
        )
        _reject_ray(
            self.stop,
            "RunConfig(stop=...)",
            "Use a dict, a function, or a stopper from tunekit.stopper.",
        )
        for index, callback in enumerate(self.callbacks or []):
            _reject_ray(
                callback,
                f"RunConfig(callbacks=[...])[{index}]",
                "Subclass tunekit.Callback (Ray's method names) or use tunekit.logger's loggers.",
            )
        if self.verbose is None:
            self.verbose = 3
        elif isinstance(self.verbose, bool) or int(self.verbose) not in (0, 1, 2, 3):
            raise ValueError(
                f"RunConfig(verbose=...) must be 0, 1, 2 or 3 (tunekit's verbosity levels), got "
                f"{self.verbose!r}."
            )


# --------------------------------------------------------------------------- Tuner


def _resolve_trainable(trainable: Any) -> Any:
    """The function or class behind ``trainable`` (a registered name is looked up)."""
    from .experiment import get_registered_trainable

    if isinstance(trainable, str):
        return get_registered_trainable(trainable)
    return trainable


def _flat_keys(space: Mapping | None) -> list[str] | None:
    if space is None:
        return None
    out: list[str] = []

    def walk(prefix: str, node: Mapping) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping) and value:
                walk(name + "/", value)
            else:
                out.append(name)

    walk("", space)
    return sorted(out)


def _picklable(value: Any, label: str, dropped: list[str]) -> Any:
    """``value`` if cloudpickle can save it; for a config dataclass, a copy without the
    fields it cannot (their names are added to ``dropped``)."""
    import cloudpickle

    try:
        cloudpickle.dumps(value)
        return value
    except Exception:  # noqa: BLE001 - anything unpicklable
        pass
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        clone = copy.copy(value)
        for f in dataclasses.fields(value):
            try:
                cloudpickle.dumps(getattr(value, f.name))
            except Exception:  # noqa: BLE001
                object.__setattr__(clone, f.name, None)
                dropped.append(f"{label}.{f.name}")
        return clone
    dropped.append(label)
    return None


class _ErrorSaver:
    """Pickles each failure's exception next to ``error.txt`` (``Result.error`` reads it)."""

    @hookimpl
    def tunekit_on_trial_error(self, trial: Any, error: Any) -> None:
        if not isinstance(error, BaseException) or not trial.local_path:
            return
        import cloudpickle

        from .result_grid import ERROR_PICKLE_FILE

        path = os.path.join(trial.local_path, ERROR_PICKLE_FILE)
        tmp = f"{path}.{uuid.uuid4().hex[:6]}.tmp"
        try:
            with open(tmp, "wb") as f:
                cloudpickle.dump(error, f)
            os.replace(tmp, path)
        except Exception:  # noqa: BLE001 - error.txt keeps the text; the pickle is a bonus
            try:
                os.remove(tmp)
            except OSError:
                pass


class Tuner:
    """Ray Tune 2.x's entry point: configure a tuning run, ``fit()`` it, get a ResultGrid.

    ::

        tuner = tunekit.Tuner(
            train,
            param_space={"lr": tunekit.loguniform(1e-4, 1e-1)},
            tune_config=tunekit.TuneConfig(metric="loss", mode="min", num_samples=20),
            run_config=tunekit.RunConfig(name="my_exp", stop={"training_iteration": 10}),
        )
        results = tuner.fit()
        print(results.get_best_result().config)

    ``fit()`` runs on the same engine as :func:`tunekit.run` (it calls it), so
    the experiment directory is the same: ``ExperimentAnalysis`` reads it, and
    ``Tuner.restore`` continues it after a crash.

    Args:
        trainable: a function ``train(config)`` that calls ``tunekit.report``,
            a :class:`tunekit.Trainable` subclass, or a registered name; wrap it
            with :func:`tunekit.with_resources` to give trials more than 1 CPU.
        param_space: the search space (``config`` of ``tunekit.run``).
        tune_config: a :class:`TuneConfig` (None: the defaults).
        run_config: a :class:`RunConfig` (None: the defaults).
    """

    def __init__(
        self,
        trainable: Any = None,
        *,
        param_space: dict[str, Any] | None = None,
        tune_config: TuneConfig | None = None,
        run_config: RunConfig | None = None,
        _tuner_kwargs: dict | None = None,
        _tuner_internal: Any = None,
    ) -> None:
        if _tuner_kwargs:
            raise NotImplementedError(
                "Tuner(_tuner_kwargs=...) is Ray's internal pass-through to tune.run and does not "
                "exist in tunekit. Put the setting in TuneConfig/RunConfig, or call tunekit.run(), "
                f"which takes every tune.run parameter (got {sorted(_tuner_kwargs)})."
            )
        if _tuner_internal is not None:
            raise NotImplementedError(
                "Tuner(_tuner_internal=...) is Ray-internal; restore a Tuner with "
                "tunekit.Tuner.restore(path, trainable)."
            )
        if trainable is None:
            raise TuneError("You need to provide a trainable to tune: Tuner(train, ...).")
        _check_trainable(trainable)
        if param_space is not None and not isinstance(param_space, dict):
            raise ValueError(
                f"The param_space passed to the Tuner must be a dict, got {type(param_space).__name__}."
            )
        if param_space:
            _check_param_space(param_space)
        if tune_config is None:
            tune_config = TuneConfig()
        elif not isinstance(tune_config, TuneConfig):
            raise TypeError(
                f"tune_config must be a tunekit.TuneConfig, got "
                f"{_ray_class(tune_config) or type(tune_config).__name__}."
            )
        if run_config is None:
            run_config = RunConfig()
        elif not isinstance(run_config, RunConfig):
            raise TypeError(
                f"run_config must be a tunekit.RunConfig, got "
                f"{_ray_class(run_config) or type(run_config).__name__}."
            )
        self._trainable = trainable
        self._param_space = param_space
        self._tune_config = tune_config
        self._run_config = copy.copy(run_config)
        self._resume: tuple[str, str | None] | None = None
        self._analysis = None
        if self._run_config.name is None:
            from .env import env_flag
            from .experiment import trainable_name
            from .trainable import date_str

            name = trainable_name(trainable)
            if not env_flag("TUNEKIT_DISABLE_DATED_SUBDIR", "TUNE_DISABLE_DATED_SUBDIR"):
                name = f"{name}_{date_str()}"
            self._run_config.name = name
        self._save_state()

    # -- the experiment ------------------------------------------------------------------
    @property
    def _experiment_path(self) -> str:
        return os.path.join(self._run_config.storage_path, self._run_config.name)

    def _save_state(self) -> None:
        """Write ``tuner.pkl``: what ``Tuner.restore`` needs besides the trainable."""
        import cloudpickle

        from .experiment import trainable_name

        dropped: list[str] = []
        state = {
            "format": _STATE_FORMAT,
            "trainable_name": trainable_name(self._trainable),
            "param_space_keys": _flat_keys(self._param_space),
            "param_space": _picklable(self._param_space, "param_space", dropped),
            "tune_config": _picklable(self._tune_config, "tune_config", dropped),
            "run_config": _picklable(self._run_config, "run_config", dropped),
        }
        state["dropped"] = dropped
        if dropped:
            logger.warning(
                "Could not save %s with the Tuner (not picklable): Tuner.restore() will need "
                "them again (param_space=...) or use the defaults.",
                ", ".join(dropped),
            )
        path = self._experiment_path
        target = os.path.join(path, TUNER_STATE_FILE)
        tmp = f"{target}.{uuid.uuid4().hex[:6]}.tmp"
        try:
            os.makedirs(path, exist_ok=True)
            with open(tmp, "wb") as f:
                cloudpickle.dump(state, f)
            os.replace(tmp, target)
        except OSError as exc:
            raise ValueError(
                f"Cannot write the experiment directory {path}: {exc.strerror or exc}. Choose a "
                "writable RunConfig(storage_path=...), or set TUNEKIT_RESULTS_DIR."
            ) from exc

    def _run_kwargs(self) -> dict[str, Any]:
        """``tunekit.run``'s arguments for this Tuner (the whole translation)."""
        from .experiment import is_class_trainable

        tc, rc = self._tune_config, self._run_config
        cc, fc = rc.checkpoint_config, rc.failure_config
        target = _resolve_trainable(self._trainable)
        is_class = is_class_trainable(target)
        at_end = cc.checkpoint_at_end
        if is_class:
            if at_end is None:
                # Ray's default for class trainables, for those that can be checkpointed.
                at_end = _overrides_save_checkpoint(target)
        else:
            if at_end:
                raise ValueError(
                    "CheckpointConfig(checkpoint_at_end=True) cannot be used with a function "
                    "trainable (as in Ray Tune): report a last checkpoint yourself with "
                    "tunekit.report(metrics, checkpoint=tunekit.Checkpoint.from_directory(...))."
                )
            if cc.checkpoint_frequency:
                raise ValueError(
                    f"CheckpointConfig(checkpoint_frequency={cc.checkpoint_frequency}) cannot be used "
                    "with a function trainable (as in Ray Tune): report a checkpoint every N "
                    "iterations yourself with tunekit.report(metrics, checkpoint=...)."
                )
            at_end = False
        callbacks = list(rc.callbacks or [])
        callbacks.append(_ErrorSaver())
        return dict(
            name=rc.name,
            storage_path=rc.storage_path,
            metric=tc.metric,
            mode=tc.mode,
            stop=rc.stop,
            time_budget_s=tc.time_budget_s,
            config=self._param_space,
            num_samples=tc.num_samples,
            search_alg=tc.search_alg,
            scheduler=tc.scheduler,
            keep_checkpoints_num=cc.num_to_keep,
            checkpoint_score_attr=cc._score_attr,
            checkpoint_freq=cc.checkpoint_frequency,
            checkpoint_at_end=at_end,
            verbose=rc.verbose,
            progress_reporter=rc.progress_reporter,
            log_to_file=rc.log_to_file,
            trial_name_creator=tc.trial_name_creator,
            trial_dirname_creator=tc.trial_dirname_creator,
            sync_config=rc.sync_config,
            max_failures=fc.max_failures,
            fail_fast=fc.fail_fast,
            reuse_actors=tc.reuse_actors,
            raise_on_failed_trial=False,
            callbacks=callbacks,
            max_concurrent_trials=tc.max_concurrent_trials,
        )

    def fit(self) -> Any:
        """Run the experiment (or continue it, after :meth:`restore`); return a ResultGrid.

        Failed trials do not raise: see ``ResultGrid.errors``. Errors outside
        trials (a bad configuration, ``FailureConfig(fail_fast="raise")``) do.
        """
        from .result_grid import ResultGrid
        from .run import run

        kwargs = self._run_kwargs()
        if self._resume is not None:
            kwargs["resume"] = "AUTO"  # nothing saved yet (killed early): start afresh, as Ray does
            kwargs["_resume_trials"] = self._resume
        self._analysis = run(self._trainable, **kwargs)
        unfinished = sum(
            1 for t in self._analysis.trials if t.status in ("PENDING", "RUNNING", "PAUSED")
        )
        if unfinished:  # interrupted (Ctrl+C): say how to go on, in Tuner terms
            logger.warning(
                "%d trial(s) did not finish. To continue the experiment, call "
                "tunekit.Tuner.restore(%r, trainable).fit().",
                unfinished,
                self._experiment_path,
            )
        return ResultGrid(
            self._analysis,
            _checkpoint_score_order=self._run_config.checkpoint_config.checkpoint_score_order,
        )

    def get_results(self) -> Any:
        """The ResultGrid of the last ``fit()``, or of the restored experiment without running it."""
        from .result_grid import ResultGrid

        if self._analysis is None:
            raise RuntimeError(
                "There are no results yet: this Tuner has not been fit. Call Tuner.fit() first (or "
                "Tuner.restore(path, trainable) to load an earlier experiment)."
            )
        return ResultGrid(
            self._analysis,
            _checkpoint_score_order=self._run_config.checkpoint_config.checkpoint_score_order,
        )

    # -- restoring -----------------------------------------------------------------------
    @classmethod
    def restore(
        cls,
        path: str | os.PathLike,
        trainable: Any,
        resume_unfinished: bool = True,
        resume_errored: bool = False,
        restart_errored: bool = False,
        param_space: dict[str, Any] | None = None,
        storage_filesystem: Any = None,
        _resume_config: Any = None,
    ) -> Tuner:
        """A Tuner that continues the experiment in ``path`` when ``fit()`` is called.

        Finished trials stay finished. Unfinished trials (pending, running,
        paused when the driver stopped) continue from their latest checkpoint,
        or are marked finished with ``resume_unfinished=False``. Errored trials
        stay errored, unless ``resume_errored`` (continue from their latest
        checkpoint) or ``restart_errored`` (from scratch). The run uses the
        original TuneConfig and RunConfig (saved in ``tuner.pkl``); the searcher
        and scheduler continue from their saved state.

        Args:
            path: the experiment directory (``ResultGrid.experiment_path``).
            trainable: the same trainable the experiment was started with.
            param_space: the same search space; only needed when it could not
                be saved (it held unpicklable objects). Its keys must match.
        """
        if storage_filesystem is not None:
            raise NotImplementedError(
                "Tuner.restore(storage_filesystem=...) is Ray-only: tunekit restores experiments "
                "from a local directory. Download a synced experiment first with "
                "tunekit.sync.download_experiment(...) and pass its local path."
            )
        if _resume_config is not None:
            raise NotImplementedError(
                "Tuner.restore(_resume_config=...) is Ray-internal; use resume_unfinished, "
                "resume_errored and restart_errored."
            )
        path = _local_experiment_path(path)
        state_file = os.path.join(path, TUNER_STATE_FILE)
        if not os.path.exists(state_file):
            raise ValueError(
                f"No Tuner state ({TUNER_STATE_FILE}) in {path}, so it cannot be restored as a Tuner. "
                "Check the path (it is ResultGrid.experiment_path: <storage_path>/<name>). An "
                "experiment started with tunekit.run() is continued with tunekit.run(..., name=..., "
                "storage_path=..., resume=True), and read with ResultGrid(path)."
            )
        import cloudpickle

        with open(state_file, "rb") as f:
            state = cloudpickle.load(f)
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError(f"{state_file} is not a tunekit Tuner state file.")
        _check_trainable(trainable)
        from .experiment import trainable_name

        expected = state.get("trainable_name")
        if expected is not None and trainable_name(trainable) != expected:
            raise ValueError(
                f"Tuner.restore() got the trainable {trainable_name(trainable)!r}, but the experiment "
                f"in {path} was run with {expected!r}. Pass the same trainable the Tuner was "
                "created with."
            )
        keys = state.get("param_space_keys")
        if param_space is not None:
            if not isinstance(param_space, dict):
                raise ValueError(
                    f"param_space must be a dict, got {type(param_space).__name__}."
                )
            if keys is not None and _flat_keys(param_space) != keys:
                raise ValueError(
                    "Tuner.restore(param_space=...) must be the search space the experiment was "
                    "started with (only re-pass it to refresh objects that could not be saved); "
                    f"its keys differ.\nGot: {_flat_keys(param_space)}\nExpected: {keys}"
                )
        else:
            param_space = state.get("param_space")
            if param_space is None and keys is not None:
                raise ValueError(
                    f"The search space of the experiment in {path} could not be saved with it "
                    "(unpicklable values). Pass it again: Tuner.restore(path, trainable, "
                    "param_space=...)."
                )
        dropped = state.get("dropped") or []
        tune_config = state.get("tune_config") or TuneConfig()
        run_config = copy.copy(state.get("run_config") or RunConfig())
        for field in dropped:
            logger.warning(
                "%s was not saved with the Tuner (not picklable); the restored run goes without it.",
                field,
            )
        if run_config.checkpoint_config is None:
            run_config.checkpoint_config = CheckpointConfig()
        if run_config.failure_config is None:
            run_config.failure_config = FailureConfig()
        if run_config.verbose is None:
            run_config.verbose = 3
        # The experiment may have been moved: it continues where it is now.
        run_config.name = os.path.basename(path)
        run_config.storage_path = os.path.dirname(path)

        tuner = cls.__new__(cls)
        tuner._trainable = trainable
        tuner._param_space = param_space
        tuner._tune_config = tune_config
        tuner._run_config = run_config
        errored = "resume" if resume_errored else "restart" if restart_errored else None
        tuner._resume = ("resume" if resume_unfinished else "skip", errored)
        tuner._analysis = None
        try:
            from .analysis import ExperimentAnalysis

            tuner._analysis = ExperimentAnalysis(
                path, default_metric=tune_config.metric, default_mode=tune_config.mode
            )
        except Exception as exc:  # noqa: BLE001 - nothing saved yet: get_results() says so
            logger.debug("No results to load from %s yet: %s", path, exc)
        return tuner

    @classmethod
    def can_restore(cls, path: str | os.PathLike, storage_filesystem: Any = None) -> bool:
        """True if ``path`` is the directory of a Tuner experiment that :meth:`restore` can continue."""
        if storage_filesystem is not None:
            raise NotImplementedError(
                "Tuner.can_restore(storage_filesystem=...) is Ray-only: tunekit restores from a "
                "local directory."
            )
        return os.path.exists(os.path.join(_local_experiment_path(path), TUNER_STATE_FILE))

    def __repr__(self) -> str:
        return f"Tuner({self._experiment_path!r})"


def _local_experiment_path(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    if "://" in path:
        raise NotImplementedError(
            f"Restoring from {path!r}: remote experiment paths are Ray-only. Download it first "
            "(tunekit.sync.download_experiment, or run(..., resume='REMOTE')) and pass the local "
            "directory."
        )
    return os.path.abspath(os.path.expanduser(path))


def _overrides_save_checkpoint(cls: type) -> bool:
    from .trainable import Trainable

    return getattr(cls, "save_checkpoint", None) is not Trainable.save_checkpoint


# --------------------------------------------------------------------------- resources


def with_resources(trainable: Any, resources: Any) -> Any:
    """The trainable, annotated with the resources each of its trials needs.

    ``resources`` is a dict (``{"cpu": 2, "gpu": 0.5}``), a
    :class:`tunekit.PlacementGroupFactory`, or a function of the trial's config
    returning either. A function trainable is annotated in place (and
    returned); for a :class:`tunekit.Trainable` subclass a subclass whose
    ``default_resource_request`` returns ``resources`` is returned. This
    overrides the trainable's own request, as in Ray Tune.
    """
    from .experiment import is_class_trainable

    if isinstance(trainable, str) or not callable(trainable) or (
        inspect.isclass(trainable) and not is_class_trainable(trainable)
    ):
        _check_trainable(trainable)
        raise ValueError(
            "tunekit.with_resources() works with function trainables and tunekit.Trainable "
            f"subclasses; got {type(trainable).__name__}."
        )
    if isinstance(resources, (PlacementGroupFactory, Mapping)):
        request: Any = to_placement_group_factory(resources)  # validated now
    elif callable(resources):
        request = resources
    else:
        raise ValueError(
            "with_resources(trainable, resources): resources must be a dict such as "
            "{'cpu': 2, 'gpu': 1}, a PlacementGroupFactory, or a function of the config returning "
            f"one; got {type(resources).__name__}."
        )
    if is_class_trainable(trainable):
        base = trainable

        class ResourceTrainable(base):
            @classmethod
            def default_resource_request(cls, config: dict) -> Any:
                if callable(request) and not isinstance(request, PlacementGroupFactory):
                    return request(config)
                return request

        ResourceTrainable.__name__ = base.__name__
        return ResourceTrainable
    if isinstance(trainable, types.MethodType):
        method = trainable

        def _trainable(config):
            return method(config)

        _trainable.__name__ = getattr(method, "__name__", "trainable")
        trainable = _trainable
    try:
        setattr(trainable, RESOURCES_ATTR, request)
    except AttributeError as exc:
        raise RuntimeError(
            "Could not annotate this trainable with resources; wrap it in a plain function "
            "(def train(config): ...) first."
        ) from exc
    return trainable


# --------------------------------------------------------------------------- context


class TuneContext:
    """Information about the running trial (Ray Tune's ``TuneContext``).

    Get it with :func:`tunekit.get_context` inside a trainable; outside a trial
    its methods raise RuntimeError.
    """

    def get_trial_id(self) -> str:
        """The trial's id."""
        from . import session

        return session.get_trial_id()

    def get_trial_name(self) -> str:
        """The trial's name."""
        from . import session

        return session.get_trial_name()

    def get_trial_dir(self) -> str:
        """The trial's directory (write your own files here)."""
        from . import session

        return session.get_trial_dir()

    def get_trial_resources(self) -> PlacementGroupFactory:
        """The resources the trial was given, as a PlacementGroupFactory (``.required_resources``)."""
        from . import session

        return PlacementGroupFactory([session.get_trial_resources()])

    def get_experiment_name(self) -> str:
        """The experiment's name (its directory's name)."""
        return os.path.basename(os.path.dirname(os.path.normpath(self.get_trial_dir())))

    # A tunekit trial is one process: the distributed-training ranks are trivial.
    def get_world_size(self) -> int:
        """1: a trial runs in one process."""
        return 1

    def get_world_rank(self) -> int:
        """0: a trial runs in one process."""
        return 0

    def get_local_rank(self) -> int:
        """0: a trial runs in one process."""
        return 0

    def get_local_world_size(self) -> int:
        """1: a trial runs in one process."""
        return 1

    def get_node_rank(self) -> int:
        """0: a trial runs in one process."""
        return 0

    def __repr__(self) -> str:
        return "TuneContext()"


_context = TuneContext()


def get_context() -> TuneContext:
    """The :class:`TuneContext` of the running trial (trial id, name, directory, resources)."""
    return _context
