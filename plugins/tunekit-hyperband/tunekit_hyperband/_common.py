"""What the schedulers of this plugin share: metric handling, state files, trial lookup."""

from __future__ import annotations

import math
import pickle
from typing import Any

from tunekit_fifo import FIFOScheduler

from tunekit_core.scheduler import TrialScheduler

# The metric name used when only a mode is given (Ray Tune's DEFAULT_METRIC).
DEFAULT_METRIC = "_metric"

CONTINUE = TrialScheduler.CONTINUE
PAUSE = TrialScheduler.PAUSE
STOP = TrialScheduler.STOP

_STATE_VERSION = 1


class MetricScheduler(FIFOScheduler):
    """A FIFO scheduler that judges trials by one metric and a mode.

    It takes ``metric``/``mode`` from ``tunekit.run`` when they are not given to
    the constructor (Ray Tune's ``set_search_properties``), reads the metric from
    results with a clear error when it is missing, and saves its state as a
    plain pickle of the attributes named by :meth:`_state_keys`.
    """

    def __init__(self, metric: str | None = None, mode: str | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        # Trial objects by id: never saved (a resumed run has new Trial objects).
        self._trials: dict[str, Any] = {}

    # -- metric and mode ---------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Take ``metric``/``mode`` from ``tunekit.run`` unless already set to something else.

        Returns False when the scheduler was built with a different metric or
        mode (``tunekit.run`` then reports the conflict). With only a mode,
        the metric is ``"_metric"``, as in Ray Tune.
        """
        if not super().set_search_properties(metric, mode, **spec):
            return False
        if self._metric is None and self._mode is not None:
            self._metric = DEFAULT_METRIC
        return True

    def _check_metric_and_mode(self) -> None:
        if not self._metric or self._mode not in ("min", "max"):
            raise ValueError(
                f"{type(self).__name__} needs a metric and a mode (got metric={self._metric!r}, "
                f"mode={self._mode!r}). Pass metric=... and mode='min' or 'max' to the "
                "scheduler, or to tunekit.run()."
            )

    @property
    def _sign(self) -> float:
        """+1 when higher is better, -1 when lower is better."""
        return 1.0 if self._mode == "max" else -1.0

    def _score(self, trial: Any, result: dict) -> float | None:
        """The trial's metric in ``result``, signed so that higher is better.

        Returns None for a result that ends the trial without the metric (the
        end-of-trial marker); a missing metric anywhere else is an error.
        None values and NaN are returned as NaN (they never decide anything).
        """
        metric = self._metric
        try:
            value = result[metric]
        except KeyError:
            if result.get("done"):
                return None
            keys = ", ".join(sorted(k for k in result if k != "config")) or "none"
            raise ValueError(
                f"{type(self).__name__} decides on the metric {metric!r}, but trial {trial} "
                f"reported a result without it (keys present: {keys}). Report {metric!r} in "
                f"every result (tunekit.report({{{metric!r}: value}})) or give the scheduler "
                "the name of a metric the trainable reports."
            ) from None
        if value is None:
            return math.nan
        try:
            return self._sign * float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"{type(self).__name__}: trial {trial} reported {metric}={value!r}, which is "
                "not a number; the scheduler's metric must be numeric."
            ) from None

    # -- trials --------------------------------------------------------------------------
    def _remember(self, trial: Any) -> None:
        self._trials[trial.trial_id] = trial

    def _lookup(self, runner: Any, trial_id: str) -> Any:
        """The Trial object with ``trial_id`` (None if the runner does not know it)."""
        trial = self._trials.get(trial_id)
        if trial is None:
            for candidate in runner.get_trials():
                self._trials.setdefault(candidate.trial_id, candidate)
            trial = self._trials.get(trial_id)
        return trial

    # -- state -----------------------------------------------------------------------------
    def _state_keys(self) -> list[str]:
        """The attributes that make up the scheduler's state (all but the Trial cache)."""
        return [k for k in self.__dict__ if k != "_trials"]

    def save(self, checkpoint_path: str) -> None:
        """Write the scheduler's state to ``checkpoint_path`` (a pickle of plain data)."""
        state = {k: self.__dict__[k] for k in self._state_keys()}
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"version": _STATE_VERSION, "class": type(self).__name__, "state": state}, f)

    def restore(self, checkpoint_path: str) -> None:
        """Load the state :meth:`save` wrote; the run continues where it was."""
        with open(checkpoint_path, "rb") as f:
            saved = pickle.load(f)
        if not isinstance(saved, dict) or saved.get("class") != type(self).__name__:
            found = saved.get("class") if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(
                f"{checkpoint_path} holds the state of {found}, not of {type(self).__name__}; "
                "resume with the scheduler the experiment was started with."
            )
        self.__dict__.update(saved["state"])
        self._trials = {}


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values`` ignoring NaN, with linear interpolation.

    None when there is no non-NaN value. Matches ``numpy.nanpercentile``'s default.
    """
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return None
    position = (len(data) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    fraction = position - low
    if fraction == 0 or data[high] == data[low]:
        return data[low]
    return data[low] + (data[high] - data[low]) * fraction


def searcher_of(runner: Any, trial: Any) -> Any:
    """The searcher that created ``trial`` (Ray Tune: ``runner.search_alg.searcher``)."""
    search_alg = getattr(runner, "search_alg", None)
    if search_alg is not None:
        return getattr(search_alg, "searcher", search_alg)
    find = getattr(runner, "_searcher_of", None)
    if find is not None:
        try:
            return find(trial)
        except AttributeError:
            return None
    return None


def notify_searcher(searcher: Any, method: str, trial_id: str) -> None:
    """Call ``searcher.<method>(trial_id)`` on the first searcher in a wrapper chain that has it.

    Wrappers such as ConcurrencyLimiter keep the wrapped searcher as ``.searcher``.
    """
    seen = 0
    while searcher is not None and seen < 10:
        hook = getattr(searcher, method, None)
        if callable(hook):
            hook(trial_id)
            return
        searcher = getattr(searcher, "searcher", None)
        seen += 1
