"""Exceptions shared by the engine and the public API."""

from __future__ import annotations


class TuneError(Exception):
    """A tuning run failed: trials errored, or the run could not proceed.

    ``TuneError("Trials did not complete", trials)`` keeps the failed trials in
    :attr:`trials` so callers can inspect their ``error_file``.
    """

    def __init__(self, message: str = "", trials: list | None = None):
        self.trials = list(trials or [])
        if self.trials:
            lines = [message, ""]
            for trial in self.trials:
                where = getattr(trial, "error_file", None) or getattr(trial, "local_path", "")
                lines.append(f"  {trial} ({trial.status}): {where}")
            message = "\n".join(lines)
        super().__init__(message)


class TrialStopped(BaseException):
    """Raised inside a trainable at its next ``report`` once the driver stops the trial.

    It derives from ``BaseException`` so that a user's ``except Exception`` does not
    swallow it; the worker catches it and ends the trial cleanly.
    """
