"""The median stopping rule (Google Vizier): Ray Tune's ``MedianStoppingRule``."""

from __future__ import annotations

import bisect
import math
import statistics
from typing import Any

from ._common import CONTINUE, PAUSE, STOP, MetricScheduler

__all__ = ["MedianStoppingRule"]


class _Curve:
    """A trial's (time, score) history with prefix sums, for running means in O(log n)."""

    __slots__ = ("times", "sums", "best")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.sums: list[float] = [0.0]  # sums[i] = sum of the first i scores
        self.best = -math.inf

    def add(self, time: float, score: float) -> None:
        if self.times and time <= self.times[-1]:
            if time == self.times[-1]:
                return  # the same result again (e.g. the final one, repeated at completion)
            self._truncate(time)  # restarted from an earlier point: its old future is void
        self.times.append(time)
        self.sums.append(self.sums[-1] + score)
        if score > self.best:  # NaN never is: a trial with only NaN scores has best -inf
            self.best = score

    def _truncate(self, time: float) -> None:
        keep = bisect.bisect_left(self.times, time)
        scores = [self.sums[i + 1] - self.sums[i] for i in range(keep)]
        self.times = self.times[:keep]
        self.sums = self.sums[: keep + 1]
        self.best = max((v for v in scores if not math.isnan(v)), default=-math.inf)

    @property
    def last_time(self) -> float:
        return self.times[-1] if self.times else -math.inf

    def running_mean(self, start: float, end: float) -> float:
        """Mean score over results with ``start <= time <= end`` (NaN if there are none)."""
        lo = bisect.bisect_left(self.times, start)
        hi = bisect.bisect_right(self.times, end)
        if hi <= lo:
            return math.nan
        return (self.sums[hi] - self.sums[lo]) / (hi - lo)


class MedianStoppingRule(MetricScheduler):
    """Stops a trial whose best result so far is worse than the median of the other
    trials' running averages at the same point in time (the Vizier median rule).

    At every result at time ``t >= grace_period`` the trial's best score so far
    is compared with the median, over all other trials that got at least as
    far as ``t``, of their mean score between ``grace_period`` and ``t``. A
    trial strictly worse than that median is stopped (or paused with
    ``hard_stop=False``). Use it for long trials where a cheap, robust rule is
    enough and no checkpoints are available; it needs no brackets.

    Args:
        time_attr: the result field that measures progress (default ``"time_total_s"``).
            Results without it are skipped (no decision).
        metric: the result field to optimise (default: the one given to ``tunekit.run``).
        mode: ``"min"`` or ``"max"`` (default: the one given to ``tunekit.run``).
        grace_period: no trial is stopped before this time, and means start there.
        min_samples_required: the fewest other trials the median is computed over;
            with fewer, the trial goes on (or yields, see ``min_time_slice``).
        min_time_slice: with too few samples and other trials waiting to run, a
            trial yields (PAUSE) at most once every ``min_time_slice`` time units.
        hard_stop: False pauses bad trials instead of stopping them; they are
            resumed (and never judged again) when nothing else waits to run.

    A best score equal to the median goes on; a trial with only NaN scores is
    stopped. Running means that are NaN or infinite are left out of the median. A result without the metric is an error naming it.
    """

    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        grace_period: float = 60.0,
        min_samples_required: int = 3,
        min_time_slice: float = 0,
        hard_stop: bool = True,
    ) -> None:
        if grace_period < 0:
            raise ValueError(f"grace_period must be >= 0, got {grace_period!r}.")
        if min_samples_required < 1:
            raise ValueError(f"min_samples_required must be >= 1, got {min_samples_required!r}.")
        super().__init__(metric=metric, mode=mode)
        self._time_attr = time_attr
        self._grace_period = grace_period
        self._min_samples_required = min_samples_required
        self._min_time_slice = min_time_slice
        self._hard_stop = hard_stop
        self._curves: dict[str, _Curve] = {}
        self._stopped: set[str] = set()
        self._last_pause: dict[str, float] = {}

    def on_trial_add(self, runner: Any, trial: Any) -> None:
        self._check_metric_and_mode()

    def on_trial_result(self, runner: Any, trial: Any, result: dict) -> str:
        """STOP (or PAUSE) the trial if its best is worse than the median of running means."""
        if self._time_attr not in result:
            return CONTINUE
        score = self._score(trial, result)
        if score is None:
            return CONTINUE
        trial_id = trial.trial_id
        if trial_id in self._stopped:
            return CONTINUE  # paused once by the rule (hard_stop=False): it runs on, FIFO
        time = result[self._time_attr]
        curve = self._curves.get(trial_id)
        if curve is None:
            curve = self._curves[trial_id] = _Curve()
        curve.add(time, score)
        if time < self._grace_period:
            return CONTINUE
        means = []
        for other_id, other in self._curves.items():
            if other_id == trial_id or other.last_time < time:
                continue
            mean = other.running_mean(self._grace_period, time)
            if math.isfinite(mean):
                means.append(mean)
        if len(means) < self._min_samples_required:
            return self._on_too_few_samples(runner, trial_id, time)
        median = statistics.median(means)
        best = curve.best
        if best < median:
            self._stopped.add(trial_id)
            return STOP if self._hard_stop else PAUSE
        return CONTINUE

    def _on_too_few_samples(self, runner: Any, trial_id: str, time: float) -> str:
        if time - self._last_pause.get(trial_id, -math.inf) <= self._min_time_slice:
            return CONTINUE
        waiting = bool(runner.get_pending_trials()) or bool(runner.get_paused_trials())
        if not waiting:
            return CONTINUE
        self._last_pause[trial_id] = time
        return PAUSE

    def on_trial_complete(self, runner: Any, trial: Any, result: dict | None) -> None:
        """Keep the final result in the trial's curve (it still counts for the others)."""
        if not result or self._time_attr not in result or self._metric not in result:
            return
        score = self._score(trial, result)
        if score is None:
            return
        curve = self._curves.get(trial.trial_id)
        if curve is None:
            curve = self._curves[trial.trial_id] = _Curve()
        curve.add(result[self._time_attr], score)

    def debug_string(self) -> str:
        return f"Using MedianStoppingRule: num_stopped={len(self._stopped)}."
