"""The executor protocol: how the run loop starts, stops and hears from trials.

An executor owns the processes (or actors) that run trials and the resources they
hold. The run loop calls it from one thread and blocks in :meth:`Executor.wait`
for the next events; it never polls with sleeps.

Events returned by :meth:`Executor.wait` are tuples:

``("results", trial, [result, ...])``
    results reported by the trial, in order, with the per-iteration fields filled.
``("done", trial, info)``
    the trainable returned (``info`` is ``None``) or ended at a stop request
    (``info["stopped"]`` is true); ``info`` may carry a last ``checkpoint`` path and
    its ``iteration`` (a class trainable's ``checkpoint_at_end``).
``("error", trial, traceback_text, exception_or_None)``
    the trainable raised, or its process died (``exception`` is then ``None``).

Resources a trial holds are released by the executor once the trial's process is
free again, which can be after the run loop marked the trial terminated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainableRef:
    """A trainable serialised once per experiment and shipped to workers on demand."""

    key: str
    kind: str  # "function" or "class"
    name: str
    blob: bytes | None = None
    path: str | None = None  # set when the blob is large and lives in a file


@dataclass
class TrialLaunch:
    """Everything a worker needs to run one trial."""

    trainable: TrainableRef
    config: dict
    stop: dict | None = None
    window: int = 10_000
    log_to_file: tuple[str, str] | None = None
    reuse_actors: bool = False
    # {"path", "iteration", "time_total_s"} of the checkpoint to start from, or None
    restore: dict | None = None
    # {"freq": int, "at_end": bool} for class trainables
    checkpoint: dict | None = None
    export_formats: list | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Executor:
    """Base class of executors (the ``tunekit.executors`` entry-point group)."""

    def setup(self, experiment_dir: str) -> None:
        """Called once before the first trial starts."""

    def total_resources(self) -> dict[str, float]:
        raise NotImplementedError

    def has_gpus(self) -> bool:
        return self.total_resources().get("GPU", 0) > 0

    def has_resources_for_trial(self, trial) -> bool:
        raise NotImplementedError

    def start_trial(self, trial, launch: TrialLaunch) -> None:
        raise NotImplementedError

    def stop_trial(self, trial) -> None:
        raise NotImplementedError

    def pause_trial(self, trial) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} cannot pause trials in this tunekit version."
        )

    def ack(self, trial, count: int) -> None:
        """The run loop processed ``count`` results of ``trial``."""

    def num_busy(self) -> int:
        """How many trial processes are still running (stopped ones included)."""
        raise NotImplementedError

    def trial_location(self, trial) -> tuple[int, str, str]:
        """``(pid, hostname, node_ip)`` of the process running ``trial``."""
        raise NotImplementedError

    def wait(self, timeout: float | None) -> list[tuple]:
        raise NotImplementedError

    def wakeup(self) -> None:
        """Make a blocked :meth:`wait` return early; safe to call from a signal handler."""

    def retire_idle(self) -> None:
        """No trial will start any more: idle workers may go now, while the driver saves its
        final state (:meth:`shutdown` still follows). Nothing by default."""

    def shutdown(self) -> None:
        """Stop every process; called once at the end of a run, also on errors."""
