"""The Trial: one configuration being trained, and its state machine."""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import Any

from .resources import PlacementGroupFactory

PENDING = "PENDING"
RUNNING = "RUNNING"
PAUSED = "PAUSED"
TERMINATED = "TERMINATED"
ERROR = "ERROR"

# The legal transitions. PENDING -> TERMINATED covers trials ended before they
# started (time budget, stop_all); ERROR -> PENDING is a retry.
_TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({RUNNING, TERMINATED, ERROR}),
    RUNNING: frozenset({PAUSED, TERMINATED, ERROR, PENDING}),
    PAUSED: frozenset({PENDING, RUNNING, TERMINATED, ERROR}),
    ERROR: frozenset({PENDING}),
    TERMINATED: frozenset(),
}


# One read-only empty mapping shared by every trial without stop criteria.
_NO_CRITERIA: Any = MappingProxyType({})


class IllegalTransition(RuntimeError):
    """A trial was asked to move between two states the state machine does not connect."""


class Trial:
    """A trial: a resolved config, its directory, status and latest result.

    The attribute names follow Ray Tune's ``Trial`` so that callbacks, schedulers and
    reporters written for Ray Tune read the same fields.
    """

    PENDING = PENDING
    RUNNING = RUNNING
    PAUSED = PAUSED
    TERMINATED = TERMINATED
    ERROR = ERROR

    def __init__(
        self,
        trainable_name: str,
        config: dict | None = None,
        trial_id: str = "",
        experiment_tag: str = "",
        evaluated_params: dict | None = None,
        resources: PlacementGroupFactory | None = None,
        stopping_criterion: dict | None = None,
        experiment_name: str = "",
        local_dir: str = "",
        max_failures: int = 0,
        log_to_file: tuple[str | None, str | None] = (None, None),
    ):
        self.trainable_name = trainable_name
        self.config = config if config is not None else {}
        self.trial_id = trial_id
        self.experiment_tag = experiment_tag
        self.evaluated_params = evaluated_params or {}
        self.placement_group_factory = resources or PlacementGroupFactory([{"CPU": 1.0}])
        self.stopping_criterion = stopping_criterion or _NO_CRITERIA
        self.experiment_name = experiment_name
        self.local_dir = local_dir  # the experiment directory
        self.max_failures = max_failures
        self.log_to_file = log_to_file
        self.status = PENDING
        # Transitions as one flat tuple (status, time, status, time, ...): a few objects per
        # trial instead of a list of pairs; `status_history` gives the pairs.
        self._history: tuple = (PENDING, time.time())
        self.last_result: dict[str, Any] = {}
        self.local_path: str | None = None
        self.error_file: str | None = None
        self.error_msg: str | None = None
        self.num_failures = 0
        self.start_time: float | None = None
        self.custom_trial_name: str | None = None
        self.results_seen = 0
        from .checkpoint import TrialCheckpoints

        self.checkpoint_manager = TrialCheckpoints()
        self.restore_path: str | None = None  # `restore=`: the checkpoint to start from
        self._resumed = False  # loaded from an experiment state: its files may run ahead
        self._state_sink = None  # the run loop's change tracker
        self._restore_override: str | None = None  # set by restore_from()
        # Set by the run loop. Declared here so every Trial shares one attribute layout
        # (key-sharing instance dicts: a fraction of the memory per trial). CPython shares
        # the keys of at most 30 attributes: past that every trial's dict is a full table
        # (twice the memory per trial); test_trial_attributes_stay_key_shared checks it.
        self._source = None
        self._source_index = 0
        self._location: tuple = (0, "", "")

    # -- Ray Tune compatible accessors ------------------------------------------------
    @property
    def logdir(self) -> str | None:
        """Older name of :attr:`local_path`."""
        return self.local_path

    @property
    def location(self) -> str | None:
        """``"node_ip:pid"`` of the process running (or that last ran) the trial."""
        pid, _, node_ip = self._location
        return f"{node_ip}:{pid}" if pid else None

    @property
    def resources(self) -> dict[str, float]:
        """The summed resource request of this trial, e.g. ``{'CPU': 1.0}``."""
        return self.placement_group_factory.required_resources

    def set_config(self, config: dict) -> None:
        """Replace the config (PBT's exploit); takes effect when the trial (re)starts."""
        self.config = config

    def set_experiment_tag(self, experiment_tag: str) -> None:
        self.experiment_tag = experiment_tag

    def restore_from(self, checkpoint_path: str | None) -> None:
        """Start from this checkpoint (e.g. another trial's) the next time the trial starts.

        Unlike a retry, the trial's own result rows are kept: its iteration count
        continues from the checkpoint's.
        """
        self._restore_override = checkpoint_path

    @property
    def checkpoint(self):
        """The latest persisted checkpoint (a :class:`Checkpoint`), or None."""
        latest = self.checkpoint_manager.latest
        if latest is None:
            return None
        from .checkpoint import Checkpoint

        return Checkpoint(latest["path"])

    @property
    def status_history(self) -> list[tuple[str, float]]:
        """Every status the trial has had, with the time it was entered, oldest first."""
        history = self._history
        return [(history[i], history[i + 1]) for i in range(0, len(history), 2)]

    @status_history.setter
    def status_history(self, steps) -> None:
        self._history = tuple(value for step in steps for value in step)

    @property
    def is_finished(self) -> bool:
        return self.status in (TERMINATED, ERROR)

    def set_status(self, status: str) -> None:
        """Move to ``status``; an illegal transition raises :class:`IllegalTransition`."""
        if status == self.status:
            return
        if status not in _TRANSITIONS[self.status]:
            raise IllegalTransition(
                f"Trial {self} cannot go from {self.status} to {status}; legal next states: "
                f"{', '.join(sorted(_TRANSITIONS[self.status])) or 'none (final state)'}."
            )
        self.status = status
        self._history += (status, time.time())
        if self._state_sink is not None:
            self._state_sink(self)

    def __str__(self) -> str:
        if self.custom_trial_name is not None:
            return self.custom_trial_name
        return f"{self.trainable_name}_{self.trial_id}"

    def __repr__(self) -> str:
        return str(self)
