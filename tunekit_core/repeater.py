"""Repeater: evaluate every suggestion of a searcher several times (Ray Tune semantics).

``Repeater(searcher, repeat=3)`` asks ``searcher`` for a config once and hands it
out to ``repeat`` trials in a row (a *group*). With ``set_index`` each trial's
config carries its position in the group under :data:`TRIAL_INDEX`
(``"__trial_index__"``: 0, 1, 2, ...), handy as a seed. The wrapped searcher
only knows the group's first trial: when every trial of the group has
completed it is told ``{metric: mean of the repeats}`` for that trial.

``num_samples`` counts trials, repeats included: ``num_samples=15`` with
``repeat=5`` makes 3 suggestions. Trials left over (``num_samples % repeat``)
run, but their incomplete group is never reported to the searcher.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import pickle
import threading
from typing import Any

from .searcher import Searcher

__all__ = ["Repeater", "TRIAL_INDEX"]

logger = logging.getLogger(__name__)

#: Config key holding a trial's index within its group of repeats.
TRIAL_INDEX = "__trial_index__"


class _TrialGroup:
    """The trials sharing one suggested config; the first is the one the searcher knows."""

    def __init__(self, primary_trial_id: str, config: dict, max_trials: int) -> None:
        self.primary_trial_id = primary_trial_id
        self.config = config
        self.max_trials = max_trials
        self.trial_ids: list[str] = [primary_trial_id]
        self.scores: dict[str, Any] = {}  # trial id -> score (NaN if none); set on completion
        self.errors: dict[str, bool] = {}

    def add(self, trial_id: str) -> int:
        self.trial_ids.append(trial_id)
        return len(self.trial_ids) - 1

    def full(self) -> bool:
        return len(self.trial_ids) >= self.max_trials

    def finished(self) -> bool:
        return self.full() and len(self.scores) == self.max_trials


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _score(result: dict | None, metric: str) -> float:
    if not result or metric not in result or result[metric] is None:
        return math.nan
    try:
        return float(result[metric])
    except (TypeError, ValueError):
        return math.nan


class Repeater(Searcher):
    """Wrap a searcher so that each of its suggestions is evaluated ``repeat`` times.

    Args:
        searcher: The searcher whose suggestions are repeated. It only sees the
            first trial of each group, completed with the mean of the group's
            ``metric`` values (NaN values, e.g. of failed repeats, left out).
        repeat: Trials per suggestion (>= 1).
        set_index: Put the trial's index within its group in its config under
            ``"__trial_index__"``.

    ``set_search_properties``, ``metric``, ``mode``, ``add_evaluated_point``
    are forwarded; ``total_samples`` is the wrapped searcher's times
    ``repeat``. :meth:`save` keeps the groups as well as the wrapped
    searcher's state, so a resumed run finishes its open groups. Avoid early
    stopping schedulers with it: a group's mean then mixes short and long trials.
    """

    def __init__(self, searcher: Searcher, repeat: int = 1, set_index: bool = True) -> None:
        if not isinstance(searcher, Searcher):
            raise ValueError(
                f"Repeater wraps a Searcher, got {type(searcher).__name__}. Create the search "
                f"algorithm first, e.g. Repeater(OptunaSearch(), repeat=3)."
            )
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"repeat must be an int >= 1, got {repeat!r}.")
        self.searcher = searcher
        self.repeat = repeat
        self._set_index = bool(set_index)
        self._groups: dict[str, _TrialGroup] = {}  # trial id -> its (unfinished) group
        self._current_group: _TrialGroup | None = None
        super().__init__(metric=None, mode=None)

    @property
    def metric(self) -> Any:
        return self.searcher.metric

    @property
    def mode(self) -> Any:
        return self.searcher.mode

    @property
    def total_samples(self) -> int | None:  # type: ignore[override]
        inner = self.searcher.total_samples
        return None if inner is None else inner * self.repeat

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Forward to the wrapped searcher; ``num_samples`` is divided by ``repeat`` for it."""
        num_samples = spec.get("num_samples")
        if isinstance(num_samples, int) and num_samples > 0:
            if num_samples % self.repeat:
                logger.warning(
                    "num_samples=%d is not a multiple of repeat=%d: num_samples counts trials, "
                    "repeats included (e.g. num_samples=15 for 3 suggestions repeated 5 times). "
                    "The %d leftover trial(s) are not reported to the searcher.",
                    num_samples, self.repeat, num_samples % self.repeat,
                )
            spec = {**spec, "num_samples": max(1, num_samples // self.repeat)}
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | str | None:
        """The current group's config, or a new suggestion once the group is full."""
        group = self._current_group
        if group is None or group.full():
            config = self.searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            group = self._current_group = _TrialGroup(
                trial_id, copy.deepcopy(config), self.repeat
            )
            index = 0
        else:
            index = group.add(trial_id)
        self._groups[trial_id] = group
        config = copy.deepcopy(group.config)
        if self._set_index:
            config[TRIAL_INDEX] = index
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Record the trial's score; tell the searcher the group's mean once all are in."""
        group = self._groups.pop(trial_id, None)
        if group is None:
            return
        metric = self.searcher.metric
        metrics = list(metric) if isinstance(metric, (list, tuple)) else [metric]
        group.scores[trial_id] = [
            _score(result, m) if m is not None else math.nan for m in metrics
        ]
        group.errors[trial_id] = bool(error)
        if not group.finished():
            return
        if group is self._current_group:
            self._current_group = None
        means = [_mean([s[i] for s in group.scores.values()]) for i in range(len(metrics))]
        if all(math.isnan(m) for m in means):
            self.searcher.on_trial_complete(
                group.primary_trial_id, result=None, error=any(group.errors.values())
            )
            return
        summary = {m: v for m, v in zip(metrics, means) if m is not None}
        self.searcher.on_trial_complete(group.primary_trial_id, result=summary, error=False)

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

    # -- checkpointing ------------------------------------------------------

    def get_state(self) -> dict:
        """The repeater's own state (groups); the wrapped searcher saves its own."""
        state = self.__dict__.copy()
        del state["searcher"]
        return state

    def set_state(self, state: dict) -> None:
        state = dict(state)
        state.pop("searcher", None)
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        """Save the groups and the wrapped searcher's state in one file."""
        inner_path = f"{checkpoint_path}.inner-{os.getpid()}-{threading.get_ident()}"
        try:
            self.searcher.save(inner_path)
            with open(inner_path, "rb") as f:
                inner = f.read()
        finally:
            try:
                os.remove(inner_path)
            except OSError:
                pass
        blob = {"repeater_state": self.get_state(), "searcher_state": inner}
        try:
            data = pickle.dumps(blob, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError):
            import cloudpickle  # noqa: PLC0415 - configs holding lambdas or local classes

            data = cloudpickle.dumps(blob)
        tmp = f"{checkpoint_path}.tmp-{os.getpid()}-{threading.get_ident()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Load what :meth:`save` wrote (or a file saved by the wrapped searcher alone)."""
        with open(checkpoint_path, "rb") as f:
            data = f.read()
        try:
            blob = pickle.loads(data)
        except Exception:  # noqa: BLE001 - not ours: the wrapped searcher's own format
            blob = None
        if not (isinstance(blob, dict) and set(blob) == {"repeater_state", "searcher_state"}):
            self.searcher.restore(checkpoint_path)
            return
        inner_path = f"{checkpoint_path}.inner-{os.getpid()}-{threading.get_ident()}"
        try:
            with open(inner_path, "wb") as f:
                f.write(blob["searcher_state"])
            self.searcher.restore(inner_path)
        finally:
            try:
                os.remove(inner_path)
            except OSError:
                pass
        self.set_state(blob["repeater_state"])
