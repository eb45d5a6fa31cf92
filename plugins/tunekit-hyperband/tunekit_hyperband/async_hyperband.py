"""Asynchronous successive halving (ASHA): Ray Tune's ``AsyncHyperBandScheduler``."""

from __future__ import annotations

import math
import random
from typing import Any

from ._common import CONTINUE, STOP, MetricScheduler, percentile

__all__ = ["ASHAScheduler", "AsyncHyperBandScheduler"]


class _Rungs:
    """One ASHA bracket: the rungs (milestones) and the scores recorded at each.

    Milestones are ``grace_period * reduction_factor ** (k + s)`` for the bracket
    index ``s``; a trial reaching a milestone is compared with the scores other
    trials had there and stopped if it is below the ``1 - 1/reduction_factor``
    quantile (so about one in ``reduction_factor`` goes on).
    """

    def __init__(self, grace_period: float, max_t: float, reduction_factor: float, s: int,
                 stop_last_trials: bool) -> None:
        self.reduction_factor = reduction_factor
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) - s + 1 + 1e-9)
        # Highest milestone first: a result is judged at the highest rung it has reached.
        self.milestones: list[float] = [
            grace_period * reduction_factor ** (k + s) for k in reversed(range(max(count, 0)))
        ]
        self.recorded: list[dict[str, float]] = [{} for _ in self.milestones]
        self.stop_last_trials = stop_last_trials

    def cutoff(self, recorded: dict[str, float]) -> float | None:
        """The score a trial must reach to go on from a rung (None while the rung is empty)."""
        if not recorded:
            return None
        return percentile(list(recorded.values()), (1 - 1 / self.reduction_factor) * 100)

    def on_result(self, trial_id: str, time: float, score: float) -> str:
        """CONTINUE or STOP for a trial at ``time`` with ``score`` (higher is better).

        The score is compared at the highest rung the trial has reached and not
        yet been recorded at; a score equal to the cutoff goes on.
        """
        for milestone, recorded in zip(self.milestones, self.recorded):
            if time >= milestone and trial_id in recorded and not self.stop_last_trials:
                # Already judged at this rung (it went on): nothing new to decide.
                return CONTINUE
            if time < milestone or trial_id in recorded:
                continue
            action = CONTINUE
            cutoff = self.cutoff(recorded)
            if cutoff is not None and score < cutoff:
                action = STOP
            if not math.isnan(score):
                recorded[trial_id] = score
            return action
        return CONTINUE

    def debug_str(self) -> str:
        parts = []
        for milestone, recorded in zip(self.milestones, self.recorded):
            cutoff = self.cutoff(recorded)
            shown = "None" if cutoff is None else f"{cutoff:.4g}"
            parts.append(f"Iter {milestone:g}: {shown} ({len(recorded)} recorded)")
        return "Bracket: " + " | ".join(parts)


class AsyncHyperBandScheduler(MetricScheduler):
    """Asynchronous successive halving (ASHA), with Ray Tune's parameters and semantics.

    Trials run without waiting for each other. When a trial reaches a rung
    (``grace_period``, ``grace_period * reduction_factor``, ... up to ``max_t``
    in units of ``time_attr``) its metric is compared with what earlier trials
    had at that rung; unless it is in the top ``1 / reduction_factor`` it is
    stopped. Use it as the default early-stopping scheduler: it needs no
    checkpoints and keeps every CPU busy. Paper: https://arxiv.org/abs/1810.05934.

    Args:
        time_attr: the result field that measures progress (monotonically
            increasing), e.g. ``"training_iteration"`` or ``"time_total_s"``.
            Results without it are skipped (no decision), as in Ray Tune.
        metric: the result field to optimise (default: the one given to ``tunekit.run``).
        mode: ``"min"`` or ``"max"`` (default: the one given to ``tunekit.run``).
        max_t: trials are stopped once ``time_attr`` reaches it (with ``stop_last_trials``).
        grace_period: the first rung: no trial is stopped earlier.
        reduction_factor: about one trial in ``reduction_factor`` goes on at each rung.
        brackets: number of brackets, each with its first rung ``reduction_factor``
            times later than the previous one; a new trial joins one at random,
            favouring brackets with more rungs (softmax of their rung counts).
        stop_last_trials: stop trials at ``max_t`` (False lets them go on, the
            last rung then no longer judges them).
        seed: seed of the random bracket assignment (only used with ``brackets > 1``).

    A score equal to a rung's cutoff goes on; NaN scores never stop a trial and
    are not recorded. A result without the metric is an error that names it.
    """

    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
        brackets: int = 1,
        stop_last_trials: bool = True,
        *,
        seed: int | None = None,
    ) -> None:
        if not max_t > 0:
            raise ValueError(f"max_t must be > 0, got {max_t!r}.")
        if not grace_period > 0:
            raise ValueError(f"grace_period must be > 0, got {grace_period!r}.")
        if grace_period > max_t:
            raise ValueError(
                f"grace_period ({grace_period!r}) must be <= max_t ({max_t!r}): the first rung "
                "cannot come after the end of training."
            )
        if not reduction_factor > 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor!r}.")
        if isinstance(brackets, bool) or not isinstance(brackets, int) or brackets < 1:
            raise ValueError(f"brackets must be an int >= 1, got {brackets!r}.")
        super().__init__(metric=metric, mode=mode)
        self._time_attr = time_attr
        self._max_t = max_t
        self._grace_period = grace_period
        self._reduction_factor = reduction_factor
        self._stop_last_trials = stop_last_trials
        self._brackets = [
            _Rungs(grace_period, max_t, reduction_factor, s, stop_last_trials)
            for s in range(brackets)
        ]
        self._trial_bracket: dict[str, int] = {}
        self._num_stopped = 0
        self._rng = random.Random(seed)

    def _bracket_for_new_trial(self) -> int:
        if len(self._brackets) == 1:
            return 0
        sizes = [len(b.milestones) for b in self._brackets]
        top = max(sizes)
        weights = [math.exp(size - top) for size in sizes]
        return self._rng.choices(range(len(self._brackets)), weights=weights)[0]

    def on_trial_add(self, runner: Any, trial: Any) -> None:
        """Assign the new trial to a bracket."""
        self._check_metric_and_mode()
        self._trial_bracket[trial.trial_id] = self._bracket_for_new_trial()

    def on_trial_result(self, runner: Any, trial: Any, result: dict) -> str:
        """STOP the trial at ``max_t`` or when it is below a rung's cutoff, else CONTINUE."""
        if self._time_attr not in result:
            return CONTINUE
        score = self._score(trial, result)
        if score is None:
            return CONTINUE
        time = result[self._time_attr]
        if self._stop_last_trials and time >= self._max_t:
            action = STOP
        else:
            index = self._trial_bracket.get(trial.trial_id)
            if index is None:  # not seen before (e.g. a trial added before a restore)
                self.on_trial_add(runner, trial)
                index = self._trial_bracket[trial.trial_id]
            action = self._brackets[index].on_result(trial.trial_id, time, score)
        if action == STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, runner: Any, trial: Any, result: dict | None) -> None:
        """Record the trial's final score at the rung it reached."""
        index = self._trial_bracket.pop(trial.trial_id, None)
        if index is None or not result or self._time_attr not in result:
            return
        if self._metric not in result:
            return
        score = self._score(trial, result)
        if score is not None:
            self._brackets[index].on_result(trial.trial_id, result[self._time_attr], score)

    def on_trial_remove(self, runner: Any, trial: Any) -> None:
        self._trial_bracket.pop(trial.trial_id, None)

    def on_trial_error(self, runner: Any, trial: Any) -> None:
        self._trial_bracket.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        lines = [f"Using AsyncHyperBand: num_stopped={self._num_stopped}"]
        lines += [bracket.debug_str() for bracket in self._brackets]
        return "\n".join(lines)


ASHAScheduler = AsyncHyperBandScheduler
