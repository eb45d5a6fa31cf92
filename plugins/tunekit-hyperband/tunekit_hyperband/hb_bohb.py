"""HyperBand for BOHB: Ray Tune's ``HyperBandForBOHB``."""

from __future__ import annotations

from typing import Any

from ._common import CONTINUE, PAUSE, STOP, notify_searcher, searcher_of
from .hyperband import _PAUSED, _RUNNING, HyperBandScheduler

__all__ = ["HyperBandForBOHB"]


class HyperBandForBOHB(HyperBandScheduler):
    """HyperBand adapted to BOHB-style searchers (model-based suggestions per budget).

    Same parameters as :class:`HyperBandScheduler`, with Ray Tune's changes:

    - a band fills its largest bracket first (most trials, earliest milestone);
    - a trial that reaches the milestone is PAUSED even while its bracket is not
      full yet, so the searcher can add trials to it; the bracket is halved once
      it is full and every other live trial in it is paused, or when no trial is
      running any more;
    - the searcher hears of it: ``searcher.on_pause(trial_id)`` when a trial is
      paused at a milestone and ``searcher.on_unpause(trial_id)`` when a paused
      trial is promoted (if the searcher, or a searcher it wraps as
      ``.searcher``, has those methods);
    - results carry ``hyperband_info`` (``{"budget": milestone}`` once the
      trial reached its milestone), which BOHB searchers read as the budget.

    Use it with a BOHB searcher (``search_alg``); with another searcher plain
    :class:`HyperBandScheduler` or ASHA fit better.
    """

    def _next_s(self, band: list) -> int:
        return self._s_max_1 - len(band) - 1

    def on_trial_result(self, runner: Any, trial: Any, result: dict) -> str:
        """PAUSE at the milestone until the bracket is full and all others wait; then halve."""
        result["hyperband_info"] = {}
        bracket = self._bracket_of(runner, trial)
        if self._time_attr not in result:
            return CONTINUE
        score = self._score(trial, result)
        if score is None:
            return CONTINUE
        time = result[self._time_attr]
        bracket.update(trial.trial_id, time, score)
        if bracket.needs_to_run(trial.trial_id):
            return CONTINUE
        result["hyperband_info"]["budget"] = bracket.milestone
        if self._stop_last_trials and bracket.halvings_left == 0 and time >= self._max_t:
            bracket.remove(trial.trial_id)
            return STOP
        others_waiting = all(
            getattr(self._lookup(runner, other), "status", _PAUSED) == _PAUSED
            for other in bracket.live
            if other != trial.trial_id
        )
        if not bracket.filled() or not others_waiting:
            self._tell_searcher(runner, trial, "on_pause")
            return PAUSE
        action = self._process(runner, bracket, trial)
        if action == PAUSE:
            self._tell_searcher(runner, trial, "on_pause")
        return action

    def _tell_searcher(self, runner: Any, trial: Any, method: str) -> None:
        notify_searcher(searcher_of(runner, trial), method, trial.trial_id)

    def _on_promoted(self, runner: Any, trial_id: str) -> None:
        trial = self._lookup(runner, trial_id)
        if trial is not None:
            self._tell_searcher(runner, trial, "on_unpause")

    def choose_trial_to_run(self, runner: Any) -> Any:
        """A PENDING or promoted PAUSED trial, brackets in band order; when nothing runs
        at all, halve the brackets whose trials wait at their milestone."""
        self._adopt_unknown_pending(runner)
        if self._recheck:
            self._recheck_brackets(runner)
        found = self._scan(runner)
        if found is not None:
            return found
        if any(t.status == _RUNNING for t in runner.get_trials()):
            return None
        for bracket in self._brackets():
            if not bracket.live:
                continue
            if not any(
                getattr(self._lookup(runner, t), "status", None) == _PAUSED for t in bracket.live
            ):
                continue
            self._process(runner, bracket)
            found = self._first_runnable(runner, bracket)
            if found is not None:
                return found
        return None

    def _scan(self, runner: Any) -> Any:
        for band in self._bands:
            for bracket in band:
                if bracket is None:
                    continue
                found = self._first_runnable(runner, bracket)
                if found is not None:
                    return found
        return None
