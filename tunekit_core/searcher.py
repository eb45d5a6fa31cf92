"""The Searcher interface (Ray Tune semantics) and the ConcurrencyLimiter wrapper.

A searcher proposes trial configs. The run loop calls, in this order:

1. ``set_search_properties(metric, mode, config, **spec)`` once, with the
   ``tune.run`` config (the search space) and a spec holding at least
   ``num_samples`` and ``experiment_name``;
2. ``suggest(trial_id)`` whenever it could start a trial: a resolved config,
   ``None`` (nothing right now, ask again later) or :attr:`Searcher.FINISHED`;
3. ``on_trial_result`` for each result and ``on_trial_complete`` once per trial;
4. ``save(path)`` now and then, and ``restore(path)`` when resuming.

If ``total_samples`` is not ``None`` the run loop creates exactly that many
trials (or fewer, if the searcher says FINISHED first); otherwise it stops at
``num_samples``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["Searcher", "ConcurrencyLimiter"]

_VALID_MODES = (None, "min", "max")


def dumps_state(obj: Any) -> bytes:
    """The bytes :meth:`Searcher.save` writes for the state ``obj``."""
    try:
        import cloudpickle  # noqa: PLC0415 - only needed when saving

        return cloudpickle.dumps(obj)
    except ImportError:  # pragma: no cover - cloudpickle is a core dependency
        import pickle  # noqa: PLC0415

        return pickle.dumps(obj)


def _dump(obj: Any, path: str) -> None:
    data = dumps_state(obj)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _load(path: str) -> Any:
    import pickle  # noqa: PLC0415

    with open(path, "rb") as f:
        return pickle.load(f)


class Searcher:
    """Base class of search algorithms that suggest trial configs.

    Subclasses override :meth:`suggest` and usually :meth:`on_trial_complete`
    (and :meth:`set_search_properties` if they can take the search space from
    ``tune.run(config=...)``). Subclasses that define ``__init__`` must call
    ``super().__init__(metric=..., mode=...)``.

    Args:
        metric: The result key to optimise, or None (set later by ``tune.run``).
        mode: ``"min"``, ``"max"`` or None.

    Checkpointing: :meth:`save` pickles (with cloudpickle) the dict returned by
    :meth:`get_state`, which is a copy of ``self.__dict__`` by default, and
    :meth:`restore` feeds it back to :meth:`set_state`, which updates
    ``self.__dict__``. Override ``get_state``/``set_state`` (or ``save``/
    ``restore``) to leave out unpicklable members such as optimizer handles.
    """

    FINISHED = "FINISHED"
    CKPT_FILE_TMPL = "searcher-state-{}.pkl"

    #: If not None, the number of trials the run loop should create.
    total_samples: int | None = None

    def __init__(self, metric: str | None = None, mode: str | None = None) -> None:
        # Lists are multi-objective searchers' metrics and modes (e.g. OptunaSearch).
        modes = mode if isinstance(mode, (list, tuple)) else [mode]
        if not modes or any(m not in _VALID_MODES for m in modes) or (
            isinstance(mode, (list, tuple)) and None in modes
        ):
            raise ValueError(
                f"`mode` must be 'min', 'max', None, or a list of 'min'/'max'; got {mode!r}."
            )
        metrics = metric if isinstance(metric, (list, tuple)) else [metric]
        if metric is not None and not all(isinstance(m, str) for m in metrics):
            raise ValueError(f"`metric` must be a string, a list of strings or None, got {metric!r}.")
        self._metric = metric
        self._mode = mode

    @property
    def metric(self) -> str | None:
        """The result key this searcher optimises (None if unset)."""
        return self._metric

    @property
    def mode(self) -> str | None:
        """``"min"``, ``"max"`` or None."""
        return self._mode

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Receive ``metric``, ``mode`` and the search space from ``tune.run``.

        Return True if the searcher accepted them, False if it refuses (for
        example because it already has its own search space). The default
        refuses, like Ray Tune's.
        """
        return False

    def suggest(self, trial_id: str) -> dict | str | None:
        """Return the next config for ``trial_id``, None (not now) or :attr:`FINISHED`."""
        raise NotImplementedError(f"{type(self).__name__} must implement suggest(trial_id).")

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Called with every intermediate result of a trial (default: ignored)."""

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Called once when a trial ends (``error=True`` if it failed; default: ignored)."""

    def add_evaluated_point(
        self,
        parameters: dict,
        value: float,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        """Tell the searcher about a config evaluated outside this run (optional)."""
        raise NotImplementedError(f"{type(self).__name__} does not support add_evaluated_point.")

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Let a searcher with its own concurrency logic take ``max_concurrent``.

        Return True if it handles concurrency itself (then a wrapping
        :class:`ConcurrencyLimiter` does not limit); the default returns False.
        """
        return False

    # -- checkpointing ------------------------------------------------------

    def get_state(self) -> dict:
        """The picklable state saved by :meth:`save` (default: a copy of ``__dict__``)."""
        return self.__dict__.copy()

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned (default: update ``__dict__``)."""
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        """Write the searcher's state to the file ``checkpoint_path`` (atomically)."""
        _dump(self.get_state(), checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Load the state written by :meth:`save` from ``checkpoint_path``."""
        self.set_state(_load(checkpoint_path))

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Save to ``<checkpoint_dir>/searcher-state-<session_str>.pkl``."""
        self.save(os.path.join(checkpoint_dir, self.CKPT_FILE_TMPL.format(session_str)))

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """Restore from the newest ``searcher-state-*.pkl`` in ``checkpoint_dir``."""
        import glob  # noqa: PLC0415

        paths = glob.glob(os.path.join(checkpoint_dir, self.CKPT_FILE_TMPL.format("*")))
        if not paths:
            raise RuntimeError(
                f"No searcher checkpoint ({self.CKPT_FILE_TMPL.format('*')}) found in "
                f"{checkpoint_dir!r}."
            )
        self.restore(max(paths))


class ConcurrencyLimiter(Searcher):
    """Wrap a searcher so that at most ``max_concurrent`` of its trials run at once.

    ``suggest`` returns None while ``max_concurrent`` suggested trials are still
    live; a slot frees up when one completes. With ``batch=True`` no new trial
    is suggested until the whole batch of ``max_concurrent`` trials has
    completed, and the wrapped searcher is told about the completions together.

    If the wrapped searcher handles concurrency itself
    (:meth:`Searcher.set_max_concurrency` returns True) the limiter only
    forwards calls. ``set_search_properties``, ``on_trial_result``,
    ``save``/``restore``, ``total_samples``, ``metric`` and ``mode`` are
    forwarded to the wrapped searcher; the limiter's own bookkeeping is not
    part of the saved file (as in Ray Tune).
    """

    def __init__(self, searcher: Searcher, max_concurrent: int, batch: bool = False) -> None:
        if not isinstance(searcher, Searcher):
            raise ValueError(
                f"ConcurrencyLimiter wraps a Searcher, got {type(searcher).__name__}. "
                f"Pass max_concurrent to that search algorithm directly instead."
            )
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise ValueError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}.")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}.")
        self.searcher = searcher
        self.max_concurrent = max_concurrent
        self.batch = bool(batch)
        self.live_trials: set[str] = set()
        self.num_unfinished_live_trials = 0
        self.cached_results: dict[str, tuple[dict | None, bool]] = {}
        self._limit_concurrency = not searcher.set_max_concurrency(max_concurrent)
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    @property
    def metric(self) -> str | None:
        return self.searcher.metric

    @property
    def mode(self) -> str | None:
        return self.searcher.mode

    @property
    def total_samples(self) -> int | None:  # type: ignore[override]
        return self.searcher.total_samples

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        self._limit_concurrency = not self.searcher.set_max_concurrency(self.max_concurrent)
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | str | None:
        if not self._limit_concurrency:
            return self.searcher.suggest(trial_id)
        if trial_id in self.live_trials:
            raise ValueError(f"Trial id {trial_id!r} was already suggested and is still live.")
        if len(self.live_trials) >= self.max_concurrent:
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion is not None and suggestion != Searcher.FINISHED:
            self.live_trials.add(trial_id)
            self.num_unfinished_live_trials += 1
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if not self._limit_concurrency:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
            return
        if trial_id not in self.live_trials:
            return
        if not self.batch:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
            self.live_trials.discard(trial_id)
            self.num_unfinished_live_trials -= 1
            return
        if trial_id in self.cached_results:
            return
        self.cached_results[trial_id] = (result, error)
        self.num_unfinished_live_trials -= 1
        if self.num_unfinished_live_trials <= 0:
            cached, self.cached_results = self.cached_results, {}
            for tid, (res, err) in cached.items():
                self.searcher.on_trial_complete(tid, result=res, error=err)
                self.live_trials.discard(tid)
            self.num_unfinished_live_trials = 0

    def add_evaluated_point(
        self,
        parameters: dict,
        value: float,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        return self.searcher.add_evaluated_point(
            parameters, value, error, pruned, intermediate_values
        )

    def get_state(self) -> dict:
        """The limiter's own bookkeeping (the wrapped searcher is not included)."""
        state = self.__dict__.copy()
        del state["searcher"]
        return state

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    def on_pause(self, trial_id: str) -> None:
        """Forwarded to the wrapped searcher if it has ``on_pause``."""
        hook = getattr(self.searcher, "on_pause", None)
        if hook is not None:
            hook(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        """Forwarded to the wrapped searcher if it has ``on_unpause``."""
        hook = getattr(self.searcher, "on_unpause", None)
        if hook is not None:
            hook(trial_id)
