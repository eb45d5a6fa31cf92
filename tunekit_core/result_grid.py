"""``ResultGrid`` and ``Result``: Ray Tune 2.x's view of an experiment's trials.

A :class:`ResultGrid` wraps an :class:`~tunekit_core.analysis.ExperimentAnalysis`
(what ``tunekit.run`` returns, or one loaded from an experiment directory) and
gives one :class:`Result` per trial. Nothing here runs anything: ``Tuner.fit``
runs the experiment through ``tunekit.run`` and wraps its analysis, so a grid
can equally be built from an experiment that ``run`` started::

    grid = ResultGrid(tunekit.run(train, config=space))
    grid = ResultGrid(ExperimentAnalysis("~/tunekit_results/my_exp"))
    grid = ResultGrid("~/tunekit_results/my_exp")

Per-trial histories (``Result.metrics_dataframe``) and the metrics of each kept
checkpoint (``Result.best_checkpoints``) are read from the trial directory the
first time they are asked for, so building a grid of many trials costs little.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint
from .errors import TuneError
from .space import lookup

if TYPE_CHECKING:  # pragma: no cover
    from pandas import DataFrame

    from .analysis import ExperimentAnalysis

__all__ = ["Result", "ResultGrid", "ERROR_PICKLE_FILE"]

#: The latest failure of a trial, pickled (written by the Tuner's error hook).
ERROR_PICKLE_FILE = "error.pkl"
_TERMINATED = "TERMINATED"
_ERROR = "ERROR"
_UNSET: Any = object()


class Result:
    """The outcome of one trial (Ray Tune's ``Result``).

    Attributes:
        metrics: the trial's last reported result (a dict, ``config`` included),
            or ``{}``/None if it reported nothing.
        checkpoint: its latest kept :class:`tunekit.Checkpoint`, or None.
        error: None unless the trial did not finish cleanly; then the exception
            it failed with (when it could be kept) or a :class:`TuneError` whose
            message is the text of the trial's ``error.txt``.
        path: the trial directory (None for a trial that never started).
        metrics_dataframe: every result of the trial, one row each, nested keys
            flattened with ``"/"`` (read on first access).
        best_checkpoints: the kept checkpoints with the result reported at each
            one's iteration, as ``(Checkpoint, metrics)`` pairs, worst first by
            ``CheckpointConfig.checkpoint_score_attribute`` (oldest first without
            one), as in Ray Tune.
    """

    def __init__(
        self,
        metrics: dict[str, Any] | None,
        checkpoint: Checkpoint | None,
        error: BaseException | None,
        path: str | None,
        metrics_dataframe: DataFrame | None = _UNSET,
        best_checkpoints: list[tuple[Checkpoint, dict[str, Any]]] | None = _UNSET,
        *,
        _config: dict | None = None,
        _loader: Any = None,
    ) -> None:
        self.metrics = metrics
        self.checkpoint = checkpoint
        self.error = error
        self.path = path
        self._metrics_dataframe = metrics_dataframe
        self._best_checkpoints = best_checkpoints
        self._config = _config
        self._loader = _loader

    @property
    def config(self) -> dict[str, Any] | None:
        """The trial's config (from its last result; the trial's own if it reported none)."""
        if self.metrics and "config" in self.metrics:
            return self.metrics["config"]
        return self._config

    @property
    def metrics_dataframe(self) -> DataFrame | None:
        """All results of the trial as a DataFrame (None if it has no directory)."""
        if self._metrics_dataframe is _UNSET:
            self._metrics_dataframe = self._loader.dataframe() if self._loader else None
        return self._metrics_dataframe

    @metrics_dataframe.setter
    def metrics_dataframe(self, value: DataFrame | None) -> None:
        self._metrics_dataframe = value

    @property
    def best_checkpoints(self) -> list[tuple[Checkpoint, dict[str, Any]]] | None:
        """The kept checkpoints and their metrics, worst first (see the class docstring)."""
        if self._best_checkpoints is _UNSET:
            self._best_checkpoints = self._loader.best_checkpoints() if self._loader else None
        return self._best_checkpoints

    @best_checkpoints.setter
    def best_checkpoints(self, value: list[tuple[Checkpoint, dict[str, Any]]] | None) -> None:
        self._best_checkpoints = value

    def get_best_checkpoint(self, metric: str, mode: str) -> Checkpoint | None:
        """The kept checkpoint with the highest (``mode="max"``) or lowest ``metric``.

        Checkpoints whose metrics lack ``metric`` are skipped; ``"a/b"`` names a
        nested value. Raises RuntimeError when the trial has no checkpoint or
        none of them has ``metric``.
        """
        if mode not in ("max", "min"):
            raise ValueError(f"`mode` must be 'min' or 'max', got {mode!r}.")
        pairs = self.best_checkpoints
        if not pairs:
            raise RuntimeError(
                f"The trial in {self.path} has no checkpoint. Report checkpoints with "
                "tunekit.report(metrics, checkpoint=...) (or save_checkpoint in a class trainable)."
            )
        valid = []
        for checkpoint, metrics in pairs:
            value = lookup(metrics, metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
                valid.append((value, checkpoint))
        if not valid:
            known = sorted(k for k in (self.metrics or {}) if k != "config")
            raise RuntimeError(
                f"No checkpoint of the trial in {self.path} has a numeric {metric!r} in its metrics. "
                f"Reported keys: {', '.join(known)}."
            )
        pick = max if mode == "max" else min
        return pick(valid, key=lambda pair: pair[0])[1]

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> Result:
        """A Result read back from a trial directory (``result.json``, checkpoints, errors)."""
        from .analysis import ExperimentAnalysis

        trial_dir = os.path.abspath(os.path.expanduser(os.fspath(path)))
        if not os.path.isdir(trial_dir):
            raise RuntimeError(f"Trial directory {trial_dir} does not exist.")
        analysis = ExperimentAnalysis(os.path.dirname(trial_dir), trials=[])
        trial = analysis._trial_of(trial_dir)
        if not os.path.exists(os.path.join(trial_dir, "result.json")) and not os.path.exists(
            os.path.join(trial_dir, "progress.csv")
        ):
            raise RuntimeError(
                f"Cannot read a Result from {trial_dir}: it has neither result.json nor progress.csv."
            )
        history = analysis._history(trial)
        if history and not trial.last_result:
            trial.last_result = history[-1]
        return _trial_to_result(analysis, trial, None)

    def __repr__(self) -> str:
        return self._repr()

    def _repr(self, indent: int = 0) -> str:
        shown: dict[str, Any] = {}
        if self.error is not None:
            shown["error"] = type(self.error).__name__
        shown["metrics"] = {
            k: v for k, v in (self.metrics or {}).items() if k not in _AUTO_KEYS
        }
        shown["path"] = self.path
        shown["checkpoint"] = self.checkpoint
        pad, inner = " " * indent, " " * (indent + 2)
        body = ",\n".join(f"{inner}{key}={value!r}" for key, value in shown.items())
        return f"{pad}Result(\n{body}\n{pad})"


# Fields every result carries; left out of Result's repr as in Ray Tune.
_AUTO_KEYS = frozenset(
    {
        "config", "date", "done", "experiment_tag", "hostname", "iterations_since_restore",
        "node_ip", "pid", "time_since_restore", "time_this_iter_s", "time_total_s",
        "timestamp", "trial_id", "training_iteration",
    }
)


class _TrialLoader:
    """Reads a trial's history and checkpoint metrics lazily, for one :class:`Result`."""

    __slots__ = ("analysis", "trial", "score_order")

    def __init__(self, analysis: ExperimentAnalysis, trial: Any, score_order: str | None):
        self.analysis = analysis
        self.trial = trial
        self.score_order = score_order

    def dataframe(self) -> DataFrame | None:
        if not getattr(self.trial, "local_path", None):
            return None
        return self.analysis._load_dataframe(self.trial)

    def best_checkpoints(self) -> list[tuple[Checkpoint, dict[str, Any]]]:
        from .analysis import _checkpoint_entries

        entries = _checkpoint_entries(self.trial)
        if not entries:
            return []
        rows = self.analysis._rows_by_iteration(self.trial)
        order = self.score_order
        manager = getattr(self.trial, "checkpoint_manager", None)
        if manager is not None:
            order = manager.score_mode if manager.score_attr is not None else None
        scored = order is not None and all(
            isinstance(e.get("score"), (int, float)) and not math.isnan(e["score"]) for e in entries
        )
        if scored:
            sign = 1.0 if order == "max" else -1.0
            entries = sorted(entries, key=lambda e: (sign * e["score"], e["iteration"]))
        return [
            (Checkpoint(e["path"]), dict(rows.get(e["iteration"]) or {})) for e in entries
        ]


def _trial_error(trial: Any) -> BaseException | None:
    """The error a trial ended with: its pickled exception, else its error text."""
    if getattr(trial, "status", None) == _TERMINATED:
        return None
    local = getattr(trial, "local_path", None)
    if local:
        pickled = os.path.join(local, ERROR_PICKLE_FILE)
        if os.path.exists(pickled):
            try:
                import cloudpickle

                with open(pickled, "rb") as f:
                    error = cloudpickle.load(f)
                if isinstance(error, BaseException):
                    return error
            except Exception:  # noqa: BLE001 - an unreadable pickle falls back to the text
                pass
    error_file = getattr(trial, "error_file", None)
    if not error_file and local and os.path.exists(os.path.join(local, "error.txt")):
        error_file = os.path.join(local, "error.txt")
    if error_file:
        try:
            with open(error_file, encoding="utf-8", errors="replace") as f:
                return TuneError(f.read())
        except OSError:
            pass
    message = getattr(trial, "error_msg", None)
    if message:
        return TuneError(message)
    return None


def _trial_to_result(analysis: ExperimentAnalysis, trial: Any, score_order: str | None) -> Result:
    checkpoint = trial.checkpoint if hasattr(trial, "checkpoint") else None
    last = getattr(trial, "last_result", None) or {}
    return Result(
        metrics=dict(last),
        checkpoint=checkpoint,
        error=_trial_error(trial),
        path=getattr(trial, "local_path", None),
        _config=getattr(trial, "config", None),
        _loader=_TrialLoader(analysis, trial, score_order),
    )


class ResultGrid:
    """The results of an experiment, one :class:`Result` per trial (Ray Tune's ``ResultGrid``).

    ``Tuner.fit()`` returns one. Index it (``grid[0]``), iterate over it, take
    ``len(grid)``, ask for the best result or a DataFrame. Trials of every
    status are included; a trial that did not finish has its latest result and
    checkpoint.

    Args:
        experiment_analysis: an :class:`ExperimentAnalysis` (e.g. what
            ``tunekit.run`` returned) or the path of an experiment directory
            (``Tuner`` or ``run`` experiments alike).
    """

    def __init__(
        self,
        experiment_analysis: ExperimentAnalysis | str | os.PathLike,
        *,
        _checkpoint_score_order: str | None = None,
    ) -> None:
        from .analysis import ExperimentAnalysis

        if isinstance(experiment_analysis, (str, os.PathLike)):
            experiment_analysis = ExperimentAnalysis(experiment_analysis)
        elif not isinstance(experiment_analysis, ExperimentAnalysis):
            raise TypeError(
                "ResultGrid needs an ExperimentAnalysis (what tunekit.run returns) or the path of "
                f"an experiment directory, got {type(experiment_analysis).__name__}."
            )
        self._experiment_analysis = experiment_analysis
        self._score_order = _checkpoint_score_order
        self._results: list[Result | None] = [None] * len(experiment_analysis.trials)

    # -- the experiment --------------------------------------------------------------
    @property
    def experiment_path(self) -> str:
        """The experiment directory (``<storage_path>/<name>``)."""
        return self._experiment_analysis.experiment_path

    # -- results ---------------------------------------------------------------------
    def _result(self, index: int) -> Result:
        result = self._results[index]
        if result is None:
            trial = self._experiment_analysis.trials[index]
            result = _trial_to_result(self._experiment_analysis, trial, self._score_order)
            self._results[index] = result
        return result

    def __len__(self) -> int:
        return len(self._results)

    def __getitem__(self, i: int) -> Result:
        """The result of the ``i``-th trial (in creation order)."""
        if isinstance(i, slice):
            return [self._result(j) for j in range(len(self._results))[i]]
        n = len(self._results)
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"ResultGrid indices must be integers, got {type(i).__name__}.")
        if not -n <= i < n:
            raise IndexError(f"ResultGrid index {i} out of range ({n} results).")
        return self._result(i % n if n else i)

    def __iter__(self) -> Iterator[Result]:
        for index in range(len(self._results)):
            yield self._result(index)

    @property
    def errors(self) -> list[BaseException]:
        """The errors of the trials that did not finish cleanly."""
        return [result.error for result in self if result.error is not None]

    @property
    def num_errors(self) -> int:
        """How many trials ended in ERROR."""
        return sum(1 for t in self._experiment_analysis.trials if t.status == _ERROR)

    @property
    def num_terminated(self) -> int:
        """How many trials finished (TERMINATED, not errored)."""
        return sum(1 for t in self._experiment_analysis.trials if t.status == _TERMINATED)

    def get_best_result(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> Result:
        """The result of the best trial by ``metric`` and ``mode``.

        ``metric``/``mode`` default to the TuneConfig's. ``scope`` is one of
        ``"last"`` (each trial's last value), ``"avg"``, ``"last-5-avg"``,
        ``"last-10-avg"`` or ``"all"`` (each trial's best value); nested metrics
        are named ``"a/b"``. NaN and infinite scores are skipped unless
        ``filter_nan_and_inf=False``. With a single trial, that trial's result.
        """
        analysis = self._experiment_analysis
        if len(analysis.trials) == 1:
            return self._result(0)
        if not metric and not analysis.default_metric:
            raise ValueError(
                "No metric is given. Pass `metric=` to get_best_result, or set "
                "TuneConfig(metric=...) in your Tuner."
            )
        if not mode and not analysis.default_mode:
            raise ValueError(
                "No mode is given. Pass `mode='min'` or `mode='max'` to get_best_result, or set "
                "TuneConfig(mode=...) in your Tuner."
            )
        best = analysis.get_best_trial(
            metric=metric, mode=mode, scope=scope, filter_nan_and_inf=filter_nan_and_inf
        )
        if best is None:
            message = (
                f"No best trial for the metric {metric or analysis.default_metric!r}: no trial "
                "reported it"
            )
            if filter_nan_and_inf:
                message += (
                    ", or every value of it is NaN or infinite. Pass filter_nan_and_inf=False to "
                    "compare those too."
                )
            raise RuntimeError(message + ".")
        return self._result(analysis.trials.index(best))

    def get_dataframe(
        self, filter_metric: str | None = None, filter_mode: str | None = None
    ) -> DataFrame:
        """One row per trial with its results and ``config/...`` columns.

        Each row is the trial's last result; with ``filter_metric`` and
        ``filter_mode`` it is the result where ``filter_metric`` was best
        (``"max"``: highest, ``"min"``: lowest).
        """
        return self._experiment_analysis.dataframe(metric=filter_metric, mode=filter_mode)

    def __repr__(self) -> str:
        inner = ",\n".join(result._repr(indent=2) for result in self)
        return f"ResultGrid<[\n{inner}\n]>"
