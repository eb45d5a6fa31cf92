"""The trial scheduler interface (Ray Tune's ``TrialScheduler``).

A scheduler decides, for every result, whether a trial goes on, pauses or
stops, and picks which pending or paused trial runs next. Scheduler plugins
subclass :class:`TrialScheduler` and register under the ``tunekit.schedulers``
entry-point group; ``tunekit.run(scheduler="fifo")`` resolves the name.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["TrialScheduler", "apply_search_properties", "validate_mode"]

_MODES = (None, "min", "max")


def validate_mode(mode: Any) -> None:
    """Raise ValueError unless ``mode`` is None, "min" or "max"."""
    if mode not in _MODES:
        raise ValueError(
            f"The scheduler's `mode` must be 'min' or 'max' (or None to take it from "
            f"tunekit.run), got {mode!r}."
        )


class TrialScheduler:
    """Base class of trial schedulers, with Ray Tune's interface and semantics.

    ``on_trial_result`` returns one of :attr:`CONTINUE`, :attr:`PAUSE` or
    :attr:`STOP` (:attr:`NOOP` when the scheduler already acted through the
    runner). The defaults continue every trial and do nothing on the other
    events; ``choose_trial_to_run`` must be implemented.

    Subclasses ported from Ray Tune that set ``self._metric``/``self._mode``
    themselves without calling ``__init__`` work as they are.
    """

    CONTINUE = "CONTINUE"
    PAUSE = "PAUSE"
    STOP = "STOP"
    NOOP = "NOOP"

    _metric: str | None = None
    _mode: str | None = None
    _supports_buffered_results: bool = True

    def __init__(self, metric: str | None = None, mode: str | None = None) -> None:
        validate_mode(mode)
        self._metric = metric
        self._mode = mode

    @property
    def metric(self) -> str | None:
        """The metric the scheduler optimises (None until known)."""
        return self._metric

    @property
    def mode(self) -> str | None:
        """ "min" or "max" (None until known)."""
        return self._mode

    @property
    def supports_buffered_results(self) -> bool:
        """Whether trials may run ahead and deliver several results at once.

        Schedulers that act on each result as it happens (HyperBand) say False,
        and the run loop then forwards results one at a time.
        """
        return self._supports_buffered_results

    @supports_buffered_results.setter
    def supports_buffered_results(self, value: bool) -> None:
        self._supports_buffered_results = bool(value)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Take ``metric`` and ``mode`` from ``tunekit.run`` where not set already.

        Returns False (and changes nothing) when the scheduler already has a
        different metric or mode; ``tunekit.run`` then reports the conflict.
        ``spec`` carries experiment information (``num_samples``, ...) that
        subclasses may use.
        """
        validate_mode(mode)
        if metric is not None and self._metric is not None and metric != self._metric:
            return False
        if mode is not None and self._mode is not None and mode != self._mode:
            return False
        if metric is not None:
            self._metric = metric
        if mode is not None:
            self._mode = mode
        return True

    def on_trial_add(self, runner: Any, trial: Any) -> None:
        """``trial`` was added to the run loop (it is PENDING)."""

    def on_trial_error(self, runner: Any, trial: Any) -> None:
        """``trial`` failed."""

    def on_trial_result(self, runner: Any, trial: Any, result: dict) -> str:
        """``trial`` reported ``result``: return CONTINUE, PAUSE, STOP or NOOP."""
        return self.CONTINUE

    def on_trial_complete(self, runner: Any, trial: Any, result: dict | None) -> None:
        """``trial`` finished normally with ``result`` as its last result."""

    def on_trial_remove(self, runner: Any, trial: Any) -> None:
        """``trial`` was stopped and removed (e.g. by this scheduler's STOP)."""

    def choose_trial_to_run(self, runner: Any) -> Any:
        """The PENDING or PAUSED trial to start next, or None to start nothing now.

        Only return a trial for which ``runner.has_resources_for_trial(trial)``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement choose_trial_to_run(runner); "
            f"subclass tunekit.schedulers.FIFOScheduler to run trials in order."
        )

    def debug_string(self) -> str:
        """One line describing the scheduler's state, for progress output."""
        return f"Using {type(self).__name__}."

    def save(self, checkpoint_path: str) -> None:
        """Write the scheduler's state to ``checkpoint_path`` (pickles ``__dict__``)."""
        import cloudpickle

        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        """Restore the state :meth:`save` wrote to ``checkpoint_path``."""
        import cloudpickle

        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(cloudpickle.load(f))


def apply_search_properties(
    scheduler: Any, metric: str | None, mode: str | None, **spec: Any
) -> bool:
    """Call ``scheduler.set_search_properties`` passing ``spec`` only if it accepts it.

    Schedulers written for Ray Tune define ``set_search_properties(metric, mode)``.
    """
    method = scheduler.set_search_properties
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return method(metric, mode)
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return method(metric, mode, **spec)
    names = {p.name for p in parameters}
    return method(metric, mode, **{k: v for k, v in spec.items() if k in names})
