"""Synchronous HyperBand: Ray Tune's ``HyperBandScheduler``."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from ._common import CONTINUE, PAUSE, STOP, MetricScheduler

__all__ = ["HyperBandScheduler"]

_PENDING = "PENDING"
_RUNNING = "RUNNING"
_PAUSED = "PAUSED"


class _Bracket:
    """One HyperBand bracket: up to ``n0`` trials run to ``r0``, the best ``1/eta`` go on
    to ``r0 * eta``, and so on until ``max_t``.

    State is plain data keyed by trial id so that it pickles and survives a resume.
    """

    def __init__(self, s: int, n0: int, r0: int, max_t: float, eta: float,
                 stop_last_trials: bool) -> None:
        self.s = s
        self.n0 = n0
        self.n = n0  # how many trials the bracket keeps now
        self.r0 = r0
        self.milestone: float = r0 if s > 0 else max_t  # run every live trial to this
        self.max_t = max_t
        self.eta = eta
        self.halvings_left = s
        self.stop_last_trials = stop_last_trials
        # trial id -> [time reached, score]; insertion order is the order trials joined
        self.live: dict[str, list[Any]] = {}
        self.joined: list[str] = []
        self.to_resume: set[str] = set()  # promoted trials that are PAUSED and should run
        self.total_work = self._total_work()
        self.progress = 0.0

    def _milestones(self) -> list[float]:
        """The times at which the bracket is halved, then ``max_t``."""
        out = [self.r0 * self.eta**k for k in range(self.s)]
        return [*out, self.max_t]

    def _total_work(self) -> float:
        work, n, last = 0.0, self.n0, 0.0
        for milestone in self._milestones():
            work += n * (milestone - last)
            last = milestone
            n = math.ceil(n / self.eta)
        return work

    def filled(self) -> bool:
        """Whether the bracket got all the trials it holds.

        Counted over every trial that joined, finished ones included: trials are
        created one at a time, so a bracket whose first trials already ended must
        not take in more (the first bracket, which never halves, would take all).
        """
        return len(self.joined) >= self.n

    def add(self, trial_id: str) -> None:
        self.live[trial_id] = [0, math.nan]
        self.joined.append(trial_id)

    def update(self, trial_id: str, time: float, score: float) -> None:
        entry = self.live[trial_id]
        self.progress += max(0.0, time - entry[0])
        entry[0] = time
        entry[1] = score
        self.to_resume.discard(trial_id)

    def needs_to_run(self, trial_id: str) -> bool:
        """Whether the trial has not reached the current milestone (or runs on past max_t)."""
        if self.halvings_left == 0 and not self.stop_last_trials:
            return True
        return self.live[trial_id][0] < self.milestone

    def iteration_done(self) -> bool:
        """Every live trial has reached the current milestone."""
        milestone = self.milestone
        return all(entry[0] >= milestone for entry in self.live.values())

    def finished(self) -> bool:
        return self.stop_last_trials and self.halvings_left == 0 and self.iteration_done()

    def halve(self) -> tuple[list[str], list[str]]:
        """Keep the best ``ceil(n / eta)`` live trials and raise the milestone.

        Returns (kept, dropped) trial ids. Ties go to the trial that joined first;
        NaN scores rank last.
        """
        self.halvings_left -= 1
        self.n = math.ceil(self.n / self.eta)
        if self.halvings_left == 0:
            self.milestone = self.max_t
        else:
            self.milestone = min(self.milestone * self.eta, self.max_t)
        order = {trial_id: i for i, trial_id in enumerate(self.live)}

        def rank(trial_id: str) -> tuple[int, float, int]:
            score = self.live[trial_id][1]
            nan = math.isnan(score)
            return (1 if nan else 0, 0.0 if nan else -score, order[trial_id])

        ranked = sorted(self.live, key=rank)
        return ranked[: self.n], ranked[self.n :]

    def remove(self, trial_id: str) -> None:
        self.live.pop(trial_id, None)
        self.to_resume.discard(trial_id)

    def completion(self) -> float:
        if self.finished():
            return 1.0
        return min(self.progress / self.total_work, 1.0) if self.total_work else 1.0

    def describe(self, statuses: Counter) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
        return (
            f"Bracket(Max Size (n)={self.n}, Milestone (r)={self.milestone:g}, "
            f"completed={self.completion():.1%}): {{{counts}}}"
        )


class HyperBandScheduler(MetricScheduler):
    """Synchronous HyperBand, with Ray Tune's parameters and semantics.

    Trials are grouped into brackets. In a bracket every trial runs to the
    bracket's milestone and is then PAUSED (its resources go to other trials);
    once all of them are there, the best ``1 / reduction_factor`` are resumed
    from their checkpoints to the next milestone (``reduction_factor`` times
    later) and the others are stopped, until ``max_t``. Brackets differ in how
    early they start cutting: bracket ``s`` holds
    ``ceil(s_max / (s + 1) * eta**s)`` trials with first milestone
    ``max_t * eta**-s`` (``s_max = round(log(max_t) / log(eta)) + 1``); new
    trials fill bracket 0, then 1, ... and a new band of brackets after the
    last one. Paper: https://arxiv.org/abs/1603.06560.

    Use it when trials can checkpoint and resume (function trainables that
    report a checkpoint, class trainables with ``save_checkpoint``/
    ``load_checkpoint``): a paused trial continues from its latest checkpoint.
    Without checkpoints a resumed trial starts again from scratch. ASHA is
    usually the better choice: it does not wait for stragglers.

    Args:
        time_attr: the result field that measures progress (monotonically increasing).
            Results without it are skipped (no decision).
        metric: the result field to optimise (default: the one given to ``tunekit.run``).
        mode: ``"min"`` or ``"max"`` (default: the one given to ``tunekit.run``).
        max_t: the time (in ``time_attr`` units) a trial may run at most; the last
            milestone of every bracket.
        reduction_factor: ``eta``: one trial in ``eta`` goes on at each milestone.
        stop_last_trials: stop trials at ``max_t`` (False lets the survivors of the
            last halving run on until their own end).

    Ties are broken in favour of the trial that joined the bracket first; NaN
    scores rank last. Every result goes to the scheduler before the trial
    continues (``supports_buffered_results`` is False).
    """

    _supports_buffered_results = False

    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 81,
        reduction_factor: float = 3,
        stop_last_trials: bool = True,
    ) -> None:
        if not max_t > 0:
            raise ValueError(f"max_t must be > 0, got {max_t!r}.")
        if not reduction_factor > 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor!r}.")
        super().__init__(metric=metric, mode=mode)
        self._time_attr = time_attr
        self._max_t = max_t
        self._eta = reduction_factor
        self._s_max_1 = int(round(math.log(max_t) / math.log(reduction_factor))) + 1
        self._stop_last_trials = stop_last_trials
        self._bands: list[list[_Bracket | None]] = [[]]
        self._current: _Bracket | None = None
        self._trial_bracket: dict[str, _Bracket] = {}
        self._num_stopped = 0
        self._processing = False
        self._recheck = False  # after a restore: brackets may be ready to halve

    # -- bracket sizes -------------------------------------------------------------------
    def _bracket_size(self, s: int) -> int:
        return math.ceil(self._s_max_1 / (s + 1) * self._eta**s - 1e-9)

    def _first_milestone(self, s: int) -> int:
        return int(self._max_t * self._eta ** (-s) + 1e-9)

    def _next_s(self, band: list) -> int:
        """Which bracket a band opens next: 0, 1, ... (HyperBandForBOHB: largest first)."""
        return len(band)

    def _new_bracket(self) -> _Bracket:
        while True:
            band = self._bands[-1]
            if len(band) >= self._s_max_1:
                band = []
                self._bands.append(band)
            s = self._next_s(band)
            r0 = self._first_milestone(s)
            if r0 == 0:
                band.append(None)  # too small to run anything: skip it
                continue
            bracket = _Bracket(s, self._bracket_size(s), r0, self._max_t, self._eta,
                               self._stop_last_trials)
            band.append(bracket)
            return bracket

    def _brackets(self) -> list[_Bracket]:
        return [b for band in self._bands for b in band if b is not None]

    # -- events ----------------------------------------------------------------------------
    def on_trial_add(self, runner: Any, trial: Any) -> None:
        """Put the new trial into the current bracket, opening a new one when it is full."""
        self._check_metric_and_mode()
        if trial.trial_id in self._trial_bracket:
            return
        self._remember(trial)
        if self._current is None or self._current.filled():
            self._current = self._new_bracket()
        self._current.add(trial.trial_id)
        self._trial_bracket[trial.trial_id] = self._current

    def on_trial_result(self, runner: Any, trial: Any, result: dict) -> str:
        """CONTINUE below the milestone; at it, PAUSE until the bracket is there, then
        halve: the kept trials go on (CONTINUE/resumed), the others STOP."""
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
        if self._stop_last_trials and bracket.halvings_left == 0 and time >= self._max_t:
            # Past the last halving and at max_t: nothing is left to decide for it.
            bracket.remove(trial.trial_id)
            return STOP
        return self._process(runner, bracket, trial)

    def _bracket_of(self, runner: Any, trial: Any) -> _Bracket:
        bracket = self._trial_bracket.get(trial.trial_id)
        if bracket is None:  # a trial the saved state did not know yet
            self.on_trial_add(runner, trial)
            bracket = self._trial_bracket[trial.trial_id]
        self._remember(trial)
        return bracket

    def _process(self, runner: Any, bracket: _Bracket, current: Any = None) -> str:
        """Halve ``bracket`` if all its live trials reached the milestone.

        Returns the decision for ``current`` (the trial whose result triggered this,
        or None): PAUSE while others are still on their way.
        """
        if not bracket.iteration_done() or not bracket.live:
            return PAUSE
        current_id = current.trial_id if current is not None else None
        self._processing = True
        try:
            if bracket.finished():
                action = STOP
                for trial_id in list(bracket.live):
                    if trial_id == current_id:
                        bracket.remove(trial_id)
                    else:
                        self._stop(runner, bracket, trial_id)
                return action
            action = PAUSE
            kept, dropped = bracket.halve()
            for trial_id in dropped:
                self._num_stopped += 1
                if trial_id == current_id:
                    bracket.remove(trial_id)
                    action = STOP
                else:
                    self._stop(runner, bracket, trial_id)
            for trial_id in kept:
                if bracket.needs_to_run(trial_id):
                    if trial_id == current_id:
                        action = CONTINUE
                    else:
                        bracket.to_resume.add(trial_id)
                        self._on_promoted(runner, trial_id)
                elif bracket.finished():
                    # Already at max_t (it reported past the new milestone): done.
                    if trial_id == current_id:
                        bracket.remove(trial_id)
                        action = STOP
                    else:
                        self._stop(runner, bracket, trial_id)
            return action
        finally:
            self._processing = False

    def _on_promoted(self, runner: Any, trial_id: str) -> None:
        """A paused trial was kept and will be resumed (HyperBandForBOHB tells its searcher)."""

    def _stop(self, runner: Any, bracket: _Bracket, trial_id: str) -> None:
        bracket.remove(trial_id)
        self._trial_bracket.pop(trial_id, None)
        trial = self._lookup(runner, trial_id)
        if trial is not None and trial.status in (_PENDING, _PAUSED, _RUNNING):
            runner.stop_trial(trial)

    def on_trial_remove(self, runner: Any, trial: Any) -> None:
        """The trial left its bracket (stopped, finished or failed): the bracket may now halve."""
        bracket = self._trial_bracket.pop(trial.trial_id, None)
        if bracket is None:
            return
        bracket.remove(trial.trial_id)
        if not self._processing and not bracket.finished():
            self._process(runner, bracket)

    def on_trial_complete(self, runner: Any, trial: Any, result: dict | None) -> None:
        self.on_trial_remove(runner, trial)

    def on_trial_error(self, runner: Any, trial: Any) -> None:
        self.on_trial_remove(runner, trial)

    # -- choosing ------------------------------------------------------------------------
    def _runnable(self, bracket: _Bracket, trial_id: str, trial: Any) -> bool:
        if trial.status == _PAUSED:
            return trial_id in bracket.to_resume
        return trial.status == _PENDING and bracket.needs_to_run(trial_id)

    def _adopt_unknown_pending(self, runner: Any) -> None:
        for trial in runner.get_pending_trials():
            if trial.trial_id not in self._trial_bracket:
                self.on_trial_add(runner, trial)

    def _recheck_brackets(self, runner: Any) -> None:
        """After a restore: halve brackets whose trials all wait at the milestone."""
        self._recheck = False
        for bracket in self._brackets():
            if bracket.live and bracket.iteration_done():
                self._process(runner, bracket)

    def choose_trial_to_run(self, runner: Any) -> Any:
        """A PENDING trial, or a PAUSED one that was promoted, from the least complete
        bracket first; only trials that fit the free resources."""
        self._adopt_unknown_pending(runner)
        if self._recheck:
            self._recheck_brackets(runner)
        for band in self._bands:
            brackets = sorted((b for b in band if b is not None), key=lambda b: b.completion())
            for bracket in brackets:
                found = self._first_runnable(runner, bracket)
                if found is not None:
                    return found
        return None

    def _first_runnable(self, runner: Any, bracket: _Bracket) -> Any:
        for trial_id in list(bracket.live):
            trial = self._lookup(runner, trial_id)
            if trial is None or not self._runnable(bracket, trial_id, trial):
                continue
            if runner.has_resources_for_trial(trial):
                return trial
        return None

    # -- reporting and state ---------------------------------------------------------------
    def debug_string(self) -> str:
        total = sum(len(band) for band in self._bands)
        lines = [f"Using HyperBand: num_stopped={self._num_stopped} total_brackets={total}"]
        for index, band in enumerate(self._bands):
            lines.append(f"Round #{index}:")
            for bracket in band:
                if bracket is None:
                    continue
                statuses = Counter(
                    getattr(self._trials.get(t), "status", "UNKNOWN") for t in bracket.joined
                )
                lines.append("  " + bracket.describe(statuses))
        return "\n".join(lines)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._processing = False
        self._recheck = True
