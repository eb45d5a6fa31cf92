"""An example tunekit plugin: per-trial early stopping with patience.

:class:`PatienceScheduler` runs trials first-in-first-out and stops a trial

* as soon as its metric is NaN or infinite (a diverged run), or
* once its metric has not improved on the trial's own best value by more than
  ``min_delta`` for ``patience`` consecutive results.

It is registered under the ``tunekit.schedulers`` entry-point group as
``patience``, so ``tunekit.run(..., scheduler="patience", metric=..., mode=...)``
finds it by name.
"""

from __future__ import annotations

import math
from typing import Any

from tunekit.schedulers import TrialScheduler

__all__ = ["PatienceScheduler"]


class PatienceScheduler(TrialScheduler):
    """Stop each trial when its metric stops improving (or diverges).

    Args:
        metric: The result key to watch. None: take ``tunekit.run(metric=...)``.
        mode: ``"min"`` or ``"max"``. None: take ``tunekit.run(mode=...)``.
        patience: How many results in a row without improvement a trial may
            report before it is stopped.
        min_delta: An improvement smaller than this does not count.
        grace_period: Never stop a trial for lack of improvement before it has
            reported this many results (diverged trials stop at once).
    """

    def __init__(
        self,
        metric: str | None = None,
        mode: str | None = None,
        patience: int = 5,
        min_delta: float = 0.0,
        grace_period: int = 1,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {patience!r}.")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}.")
        if isinstance(grace_period, bool) or not isinstance(grace_period, int) or grace_period < 0:
            raise ValueError(f"grace_period must be an int >= 0, got {grace_period!r}.")
        self.patience = patience
        self.min_delta = min_delta
        self.grace_period = grace_period
        self._best: dict[str, float] = {}  # trial_id -> best value so far
        self._stale: dict[str, int] = {}  # trial_id -> results since the last improvement
        self._seen: dict[str, int] = {}  # trial_id -> results seen
        self.num_stopped = 0

    def on_trial_add(self, runner: Any, trial: Any) -> None:
        # Called in the driver before the trial starts: a missing metric/mode fails
        # the run at once, with a message, instead of failing every trial.
        if self.metric is None or self.mode is None:
            raise ValueError(
                "PatienceScheduler needs a metric and a mode: pass metric=... and "
                "mode='min'|'max' to tunekit.run() or to PatienceScheduler()."
            )

    def choose_trial_to_run(self, runner: Any) -> Any:
        """The first pending (then paused) trial that fits the free resources."""
        for trials in (runner.get_pending_trials(), runner.get_paused_trials()):
            for trial in trials:
                if runner.has_resources_for_trial(trial):
                    return trial
        return None

    def on_trial_result(self, runner: Any, trial: Any, result: dict) -> str:
        value = result.get(self.metric)
        if value is None:
            return self.CONTINUE
        value = float(value)
        if not math.isfinite(value):
            self.num_stopped += 1
            return self.STOP
        key = trial.trial_id
        if result.get("training_iteration") == 1:
            self._forget(key)  # a retried trial starts again from scratch
        seen = self._seen[key] = self._seen.get(key, 0) + 1
        score = value if self.mode == "max" else -value  # higher is better
        best = self._best.get(key)
        if best is None or score > best + self.min_delta:
            self._best[key] = score
            self._stale[key] = 0
            return self.CONTINUE
        stale = self._stale[key] = self._stale[key] + 1
        if seen >= self.grace_period and stale >= self.patience:
            self.num_stopped += 1
            return self.STOP
        return self.CONTINUE

    def on_trial_complete(self, runner: Any, trial: Any, result: dict | None) -> None:
        self._forget(trial.trial_id)

    def on_trial_error(self, runner: Any, trial: Any) -> None:
        self._forget(trial.trial_id)

    def on_trial_remove(self, runner: Any, trial: Any) -> None:
        self._forget(trial.trial_id)

    def _forget(self, trial_id: str) -> None:
        for state in (self._best, self._stale, self._seen):
            state.pop(trial_id, None)

    def debug_string(self) -> str:
        return (
            f"Using PatienceScheduler (patience={self.patience}, min_delta={self.min_delta}): "
            f"{self.num_stopped} trials stopped early."
        )
