"""Stoppers: decide when a single trial, or the whole experiment, should stop.

A stopper is called by the run loop with every result a trial reports
(``stopper(trial_id, result) -> bool``: stop this trial?) and is asked after
each step whether the whole experiment should end (``stopper.stop_all()``).
The semantics follow Ray Tune's ``ray.tune.stopper`` module.

``make_stopper`` turns the ``stop`` argument of ``run`` (a dict of result
thresholds, a function, a ``Stopper``, or a list of stoppers) into one
``Stopper``.
"""

from __future__ import annotations

import bisect
import datetime
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .space import lookup

__all__ = [
    "CombinedStopper",
    "CriteriaStopper",
    "ExperimentPlateauStopper",
    "FunctionStopper",
    "MaximumIterationStopper",
    "NoopStopper",
    "StopCriterionError",
    "Stopper",
    "TimeoutStopper",
    "TrialPlateauStopper",
    "make_stopper",
]


class StopCriterionError(ValueError):
    """A key of the ``stop`` dict is missing from a result, or cannot be compared."""


def _pstdev(values) -> float:
    """Population standard deviation (``numpy.std`` with ``ddof=0``) without numpy.

    Raises ``TypeError`` for values that are not numbers (for example ``None``).
    """
    n = len(values)
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((v - mean) * (v - mean) for v in values) / n)


class Stopper:
    """Base class for trial and experiment stopping rules.

    Subclass it and implement ``__call__`` (return True to stop the trial that
    reported ``result``) and ``stop_all`` (return True to end the whole
    experiment: running trials are stopped and no new trial starts). The base
    class stops nothing.
    """

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Return True if the trial ``trial_id`` should stop after ``result``."""
        return False

    def stop_all(self) -> bool:
        """Return True if the whole experiment should stop now."""
        return False


class NoopStopper(Stopper):
    """A stopper that never stops anything."""


class MaximumIterationStopper(Stopper):
    """Stop each trial once it has reported ``max_iter`` results.

    The count is of results seen by this stopper for the trial, as in Ray Tune.
    """

    def __init__(self, max_iter: int) -> None:
        self._max_iter = max_iter
        self._iter: dict[str, int] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        count = self._iter.get(trial_id, 0) + 1
        self._iter[trial_id] = count
        return count >= self._max_iter

    def stop_all(self) -> bool:
        return False


class TrialPlateauStopper(Stopper):
    """Stop a trial whose ``metric`` has plateaued.

    A trial stops once it has reported at least ``grace_period`` results and
    the population standard deviation of its last ``num_results`` values of
    ``metric`` is below ``std``. With ``metric_threshold`` (which needs
    ``mode``), the trial must also have reached the threshold: the current value
    must be at most the threshold for ``mode="min"`` and at least it for
    ``mode="max"``. A result without ``metric`` counts as a missing value, which
    prevents stopping until it has left the window.
    """

    def __init__(
        self,
        metric: str,
        std: float = 0.01,
        num_results: int = 4,
        grace_period: int = 4,
        metric_threshold: float | None = None,
        mode: str | None = None,
    ) -> None:
        if metric_threshold is not None and mode not in ("min", "max"):
            raise ValueError(
                "TrialPlateauStopper: when `metric_threshold` is given, `mode` must be "
                f"'min' or 'max' (got {mode!r}). Pass mode='min' or mode='max'."
            )
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(
                f"TrialPlateauStopper: `mode` must be None, 'min' or 'max' (got {mode!r})."
            )
        if not isinstance(num_results, int) or num_results < 1:
            raise ValueError(
                "TrialPlateauStopper: `num_results` must be a positive integer "
                f"(got {num_results!r})."
            )
        self._metric = metric
        self._mode = mode
        self._std = std
        self._num_results = num_results
        self._grace_period = grace_period
        self._metric_threshold = metric_threshold
        self._iter: dict[str, int] = {}
        self._trial_results: dict[str, deque] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        value = result.get(self._metric)
        window = self._trial_results.get(trial_id)
        if window is None:
            window = self._trial_results[trial_id] = deque(maxlen=self._num_results)
        window.append(value)
        count = self._iter.get(trial_id, 0) + 1
        self._iter[trial_id] = count

        if count < self._grace_period:
            return False
        if len(window) < self._num_results:
            return False
        if self._metric_threshold is not None:
            if value is None:
                return False
            try:
                if self._mode == "min" and value > self._metric_threshold:
                    return False
                if self._mode == "max" and value < self._metric_threshold:
                    return False
            except TypeError:
                return False
        try:
            current_std = _pstdev(window)
        except (TypeError, ValueError, OverflowError):
            current_std = math.inf
        return current_std < self._std

    def stop_all(self) -> bool:
        return False


class ExperimentPlateauStopper(Stopper):
    """Stop the whole experiment once the best results of ``metric`` plateau.

    The stopper keeps the ``top`` best values of ``metric`` seen across all
    trials (lowest for ``mode="min"``, highest for ``mode="max"``). Once it has
    ``top`` values and their population standard deviation is at most ``std``
    the experiment has plateaued; after ``patience`` further plateaued results
    the experiment stops (``patience=0`` stops at once). Any result that leaves
    the plateau resets the patience count. Results that lack ``metric`` (or
    report NaN) add no value but still count towards ``patience``.
    """

    def __init__(
        self,
        metric: str,
        std: float = 0.001,
        top: int = 10,
        mode: str = "min",
        patience: int = 0,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(
                f"ExperimentPlateauStopper: `mode` must be 'min' or 'max' (got {mode!r})."
            )
        if isinstance(top, bool) or not isinstance(top, int) or top <= 1:
            raise ValueError(
                f"ExperimentPlateauStopper: `top` must be an integer greater than 1 (got {top!r})."
            )
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(
                "ExperimentPlateauStopper: `patience` must be a non-negative integer "
                f"(got {patience!r})."
            )
        if isinstance(std, bool) or not isinstance(std, (int, float)) or std <= 0:
            raise ValueError(
                f"ExperimentPlateauStopper: `std` must be a positive number (got {std!r})."
            )
        self._metric = metric
        self._std = std
        self._top = top
        self._mode = mode
        self._patience = patience
        self._iterations = 0
        # Sorted ascending; for "min" the smallest `top`, for "max" the largest.
        self._top_values: list[float] = []

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        value = result.get(self._metric)
        if value is not None and value == value:  # skip missing and NaN values
            bisect.insort(self._top_values, value)
            if len(self._top_values) > self._top:
                if self._mode == "min":
                    self._top_values.pop()
                else:
                    self._top_values.pop(0)
        if self.has_plateaued():
            self._iterations += 1
        else:
            self._iterations = 0
        return self.stop_all()

    def has_plateaued(self) -> bool:
        """True when ``top`` values are known and their spread is at most ``std``."""
        if len(self._top_values) < self._top:
            return False
        try:
            return _pstdev(self._top_values) <= self._std
        except (TypeError, ValueError, OverflowError):
            return False

    def stop_all(self) -> bool:
        return self.has_plateaued() and self._iterations >= self._patience


class TimeoutStopper(Stopper):
    """Stop the whole experiment once ``timeout`` seconds of run time have passed.

    ``timeout`` is a number of seconds or a ``datetime.timedelta``. The clock
    starts at the first ``stop_all()`` call (so setup time does not count) and
    only time between ``stop_all()`` calls is charged; after the stopper is
    unpickled (experiment resumed) the clock restarts, so time spent while the
    experiment was not running is not charged. ``run(time_budget_s=...)`` uses
    this stopper.
    """

    def __init__(
        self,
        timeout: int | float | datetime.timedelta,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(timeout, datetime.timedelta):
            seconds = timeout.total_seconds()
        elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
            seconds = float(timeout)
        else:
            raise ValueError(
                "TimeoutStopper: `timeout` must be a number of seconds or a "
                f"datetime.timedelta, got {type(timeout).__name__} ({timeout!r})."
            )
        self._timeout_seconds = seconds
        self._budget = seconds
        self._clock = clock
        self._last_check: float | None = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else time.monotonic()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        now = self._now()
        if self._last_check is not None:
            self._budget -= now - self._last_check
        self._last_check = now
        return self._budget <= 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_last_check"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        state["_last_check"] = None
        self.__dict__.update(state)


class CombinedStopper(Stopper):
    """Combine stoppers: a trial (or the experiment) stops if any of them says so.

    Every stopper sees every result (there is no short-circuit), so stateful
    stoppers such as ``ExperimentPlateauStopper`` keep complete histories.
    """

    def __init__(self, *stoppers: Stopper) -> None:
        for s in stoppers:
            if not isinstance(s, Stopper):
                raise TypeError(
                    "CombinedStopper: every argument must be a Stopper instance, got "
                    f"{type(s).__name__} ({s!r})."
                )
        self._stoppers = stoppers

    @property
    def stoppers(self) -> tuple[Stopper, ...]:
        """The combined stoppers, in the order given."""
        return self._stoppers

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        stop = False
        for s in self._stoppers:
            if s(trial_id, result):
                stop = True
        return stop

    def stop_all(self) -> bool:
        stop = False
        for s in self._stoppers:
            if s.stop_all():
                stop = True
        return stop


class FunctionStopper(Stopper):
    """Wrap a function ``fn(trial_id, result) -> bool`` as a trial stopper."""

    def __init__(self, function: Callable[[str, dict[str, Any]], bool]) -> None:
        if not self.is_valid_function(function):
            raise TypeError(
                f"FunctionStopper: expected a callable (trial_id, result) -> bool, got "
                f"{type(function).__name__} ({function!r})."
            )
        self._fn = function

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return bool(self._fn(trial_id, result))

    def stop_all(self) -> bool:
        return False

    @classmethod
    def is_valid_function(cls, fn: Any) -> bool:
        """True if ``fn`` is a plain callable usable as a stop function.

        A callable that defines ``stop_all`` but does not subclass ``Stopper``
        is rejected with a ``TypeError``: it looks like a stopper, but would
        silently lose its experiment-wide ``stop_all``.
        """
        is_function = callable(fn) and not isinstance(fn, Stopper)
        if is_function and hasattr(fn, "stop_all"):
            raise TypeError(
                f"The stop object {fn!r} defines `stop_all` but does not subclass "
                "tunekit.stopper.Stopper. Subclass Stopper so that its `stop_all` is used."
            )
        return is_function


def _flatten_criteria(criteria: Mapping, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in criteria.items():
        if not isinstance(key, str):
            raise TypeError(
                f"stop dict keys must be result field names (str), got {key!r}. "
                "Use '/' to name nested fields, e.g. {'info/loss': 0.1}."
            )
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten_criteria(value, name + "/"))
        else:
            flat[name] = value
    return flat


_MISSING = object()


class CriteriaStopper(Stopper):
    """Stop a trial once ``result[key] >= value`` for any key of ``criteria``.

    This is what ``run(stop={...})`` means. Keys may name any result field;
    nested fields are named with ``/`` (``"info/loss"``), and nested dicts in
    ``criteria`` are flattened the same way. A result that lacks one of the
    keys raises ``StopCriterionError`` naming the key and the keys the result
    has, as Ray Tune does: a misspelt key fails at the first result instead of
    letting trials run forever. A result with ``done=True`` (the trial's last)
    returns True without checking the criteria.
    """

    def __init__(self, criteria: Mapping[str, Any]) -> None:
        self._criteria = _flatten_criteria(criteria)
        self._items = tuple(self._criteria.items())

    @property
    def criteria(self) -> dict[str, Any]:
        """The flattened stopping criteria."""
        return dict(self._criteria)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if result.get("done") is True:
            # The trial's final result: it stops anyway, and (as in Ray Tune) the
            # criteria are not checked, so a bare final result raises no error.
            return True
        for key, threshold in self._items:
            value = lookup(result, key, _MISSING)
            if value is _MISSING:
                raise StopCriterionError(
                    f"Stopping criterion {key!r} (from the `stop` argument) is not in the "
                    f"result reported by trial {trial_id}. Keys present: "
                    f"{sorted(map(str, result))}. Report {key!r} from the trainable or fix "
                    "the key in `stop`."
                )
            try:
                if value >= threshold:
                    return True
            except TypeError as exc:
                raise StopCriterionError(
                    f"Stopping criterion {key!r}: cannot compare the reported value {value!r} "
                    f"with the threshold {threshold!r} ({exc}). Both must be comparable "
                    "numbers."
                ) from None
        return False

    def stop_all(self) -> bool:
        return False


def make_stopper(
    stop: Any, time_budget_s: int | float | datetime.timedelta | None = None
) -> tuple[Stopper | None, dict[str, Any] | None]:
    """Normalise ``run``'s ``stop`` argument into ``(stopper, criteria)``.

    ``stop`` may be:

    * ``None`` (or an empty dict/list): no stopper;
    * a dict ``{result_key: threshold}``: a trial stops once
      ``result[key] >= threshold`` for any key (``CriteriaStopper``);
    * a ``Stopper`` instance;
    * a function ``(trial_id, result) -> bool`` (``FunctionStopper``);
    * a list or tuple of ``Stopper`` instances (``CombinedStopper``).

    Anything else raises ``TypeError``. ``time_budget_s``, if given, adds a
    ``TimeoutStopper``. The returned stopper covers everything (the run loop
    only has to call it); ``criteria`` is the flattened dict for the record
    (experiment spec, trial ``stopping_criterion``), or None when ``stop`` was
    not a dict.
    """
    stopper: Stopper | None
    criteria: dict[str, Any] | None = None
    if stop is None:
        stopper = None
    elif isinstance(stop, Stopper):
        stopper = stop
    elif isinstance(stop, Mapping):
        criteria = _flatten_criteria(stop)
        stopper = CriteriaStopper(criteria) if criteria else None
    elif isinstance(stop, (list, tuple)):
        bad = [s for s in stop if not isinstance(s, Stopper)]
        if bad:
            raise TypeError(
                "A list passed as `stop` must contain only Stopper instances; got "
                f"{bad!r}. Pass a dict, a function (trial_id, result) -> bool, a Stopper, "
                "or a list of Stoppers."
            )
        if not stop:
            stopper = None
        elif len(stop) == 1:
            stopper = stop[0]
        else:
            stopper = CombinedStopper(*stop)
    elif callable(stop):
        if not FunctionStopper.is_valid_function(stop):  # pragma: no cover - defensive
            raise TypeError(f"Invalid `stop` object {stop!r}.")
        stopper = FunctionStopper(stop)
    else:
        raise TypeError(
            f"Invalid `stop` argument of type {type(stop).__name__}: {stop!r}. Expected a "
            "dict of result thresholds (e.g. {'training_iteration': 10}), a function "
            "(trial_id, result) -> bool, a tunekit.stopper.Stopper, or a list of Stoppers."
        )

    if time_budget_s is not None:
        timeout = TimeoutStopper(time_budget_s)
        stopper = timeout if stopper is None else CombinedStopper(stopper, timeout)
    return stopper, criteria
