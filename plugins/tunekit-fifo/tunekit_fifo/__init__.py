"""tunekit's first-in-first-out trial scheduler, the default one (``scheduler="fifo"``)."""

from __future__ import annotations

from typing import Any

from tunekit_core.scheduler import TrialScheduler

__all__ = ["FIFOScheduler"]


class FIFOScheduler(TrialScheduler):
    """Runs trials in the order they were created and never stops or pauses them.

    Ray Tune's ``FIFOScheduler``: the next trial to run is the first PENDING
    trial the runner has resources for, else the first such PAUSED trial.
    """

    def choose_trial_to_run(self, runner: Any) -> Any:
        """The first PENDING trial that fits the free resources, else the first PAUSED one."""
        has_resources = runner.has_resources_for_trial
        for trials in (_pending(runner), _paused(runner)):
            # Trials asking for resources that already did not fit are skipped
            # without asking the runner again.
            no_fit: list[Any] = []
            for trial in trials:
                resources = getattr(trial, "resources", None)
                if resources is not None and no_fit and resources in no_fit:
                    continue
                if has_resources(trial):
                    return trial
                if resources is not None:
                    no_fit.append(resources)
        return None

    def on_trial_result(self, runner: Any, trial: Any, result: dict) -> str:
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return "Using FIFO scheduling algorithm."


def _pending(runner: Any) -> Any:
    get = getattr(runner, "get_pending_trials", None)
    if get is not None:
        return get()
    return (t for t in runner.get_trials() if t.status == "PENDING")


def _paused(runner: Any) -> Any:
    get = getattr(runner, "get_paused_trials", None)
    if get is not None:
        return get()
    return (t for t in runner.get_trials() if t.status == "PAUSED")
