"""Schedulers the tests share.

Plugin classes are imported when a scheduler is made, not when this module is: importing
them at collection time would cache them in the lazy facades that test_registry.py checks.
"""

from __future__ import annotations


def pause_once_at_two():
    """A FIFO scheduler that pauses every trial once, at its iteration 2; the trial resumes
    from its checkpoint when the scheduler picks it again."""
    from tunekit.schedulers import FIFOScheduler

    class PauseOnceAtTwo(FIFOScheduler):
        supports_buffered_results = False

        def __init__(self):
            super().__init__()
            self.paused = set()

        def on_trial_result(self, runner, trial, result):
            if result["training_iteration"] == 2 and trial.trial_id not in self.paused:
                self.paused.add(trial.trial_id)
                return self.PAUSE
            return self.CONTINUE

    return PauseOnceAtTwo()
