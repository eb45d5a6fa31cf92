"""The class-based trainable API (Ray Tune's ``Trainable``) and result auto-filling."""

from __future__ import annotations

import copy
import os
import socket
import time
from typing import Any

from .resources import PlacementGroupFactory

_DATE_FMT = "%Y-%m-%d_%H-%M-%S"
_date_cache: list = [-1, ""]


def date_str(now: float | None = None) -> str:
    """Local time as ``YYYY-mm-dd_HH-MM-SS`` (cached per second: called per result)."""
    now = time.time() if now is None else now
    sec = int(now)
    if sec != _date_cache[0]:
        _date_cache[0] = sec
        _date_cache[1] = time.strftime(_DATE_FMT, time.localtime(sec))
    return _date_cache[1]


class IterationClock:
    """Counts iterations and times of one trial and fills the automatic result fields."""

    __slots__ = ("iteration", "start", "last", "restored_iteration", "restored_time")

    def __init__(self, restored_iteration: int = 0, restored_time: float = 0.0):
        now = time.time()
        self.iteration = restored_iteration
        self.start = now
        self.last = now
        self.restored_iteration = restored_iteration
        self.restored_time = restored_time

    def time_total(self) -> float:
        """Training time up to the last result, restored time included."""
        return self.last - self.start + self.restored_time

    def fill(self, result: dict, now: float | None = None) -> dict:
        """Add ``training_iteration``, the timing fields, ``timestamp``, ``date``, ``done``."""
        if now is None:
            now = time.time()
        self.iteration += 1
        if "time_this_iter_s" not in result:
            result["time_this_iter_s"] = now - self.last
        self.last = now
        if "done" not in result:
            result["done"] = False
        result["training_iteration"] = self.iteration
        result["time_total_s"] = now - self.start + self.restored_time
        result["timestamp"] = int(now)
        result["date"] = date_str(now)
        result["time_since_restore"] = now - self.start
        result["iterations_since_restore"] = self.iteration - self.restored_iteration
        return result


def _temp_logdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="tunekit-trainable-")


# Set by the worker around the construction of a Trainable so that __init__ knows the
# trial it belongs to without changing Ray Tune's constructor signature.
_trial_context: dict[str, Any] = {}


class Trainable:
    """Base class for class-based trainables (Ray Tune's ``Trainable``).

    Override :meth:`setup` (once, with the config), :meth:`step` (one iteration,
    returns a dict of metrics; include ``done: True`` to finish), and optionally
    :meth:`cleanup`, :meth:`reset_config` (enables reuse with ``reuse_actors=True``)
    and :meth:`default_resource_request`.
    """

    def __init__(self, config: dict | None = None, logger_creator=None, **kwargs: Any):
        self.config = config if config is not None else {}
        ctx = _trial_context
        self._trial_id = ctx.get("trial_id", "default")
        self._trial_name = ctx.get("trial_name", "default")
        self._logdir = ctx.get("logdir") or _temp_logdir()
        self._clock = IterationClock()
        self._hostname = socket.gethostname()
        self.setup(copy.deepcopy(self.config))

    # -- the API users override ------------------------------------------------------
    @classmethod
    def default_resource_request(cls, config: dict) -> PlacementGroupFactory | dict | None:
        """Resources a trial of this class needs; ``None`` uses ``resources_per_trial``."""
        return None

    @classmethod
    def resource_help(cls, config: dict) -> str:
        return ""

    def setup(self, config: dict) -> None:
        """Called once with the trial's config before the first :meth:`step`."""

    def step(self) -> dict:
        """Run one training iteration and return its metrics."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement step(), returning a dict of metrics."
        )

    def cleanup(self) -> None:
        """Release resources; called when the trial ends."""

    def reset_config(self, new_config: dict) -> bool:
        """Reconfigure for a new trial in place; return True if that worked.

        Only used with ``reuse_actors=True``; returning False makes tunekit build a
        fresh instance instead.
        """
        return False

    def save_checkpoint(self, checkpoint_dir: str) -> Any:
        """Write this trainable's state into ``checkpoint_dir``.

        Return ``None`` (or ``checkpoint_dir``) after writing files, the path of a
        file you wrote inside ``checkpoint_dir``, or a dict of small state that
        tunekit stores for you.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot be checkpointed: implement save_checkpoint(dir) and "
            "load_checkpoint(checkpoint) to use checkpoint_freq, checkpoint_at_end, retries "
            "from checkpoints, or schedulers that pause trials."
        )

    def load_checkpoint(self, checkpoint: Any) -> None:
        """Restore the state written by :meth:`save_checkpoint`.

        Receives what was saved: the checkpoint directory, the file path you
        returned, or the dict you returned.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot restore checkpoints: implement load_checkpoint()."
        )

    def _export_model(self, export_formats: list[str], export_dir: str) -> dict:
        """Override to export the model in ``export_formats``; return {format: path}."""
        import logging

        logging.getLogger("tunekit").warning(
            "%s was asked to export %s but does not implement _export_model(); nothing exported.",
            type(self).__name__,
            export_formats,
        )
        return {}

    def export_model(self, export_formats: Any, export_dir: str | None = None) -> dict:
        """Export the model in the given formats (``export_formats`` of ``run``)."""
        formats = [export_formats] if isinstance(export_formats, str) else list(export_formats)
        return self._export_model(formats, export_dir or self.logdir)

    def save(self, parent_dir: str | None = None) -> str:
        """Save a checkpoint under ``parent_dir`` (the trial directory); returns its path."""
        import pickle
        import uuid

        from .checkpoint import _DICT_FILE, TMP_PREFIX, persist_checkpoint

        parent_dir = parent_dir or self.logdir
        tmp = os.path.join(parent_dir, f"{TMP_PREFIX}save_{uuid.uuid4().hex[:8]}")
        os.makedirs(tmp)
        returned = self.save_checkpoint(tmp)
        metadata: dict[str, Any] = {
            "iteration": self.iteration,
            "time_total_s": self._clock.time_total(),
            "timestamp": time.time(),
        }
        if isinstance(returned, dict):
            with open(os.path.join(tmp, _DICT_FILE), "wb") as f:
                pickle.dump(returned, f, protocol=pickle.HIGHEST_PROTOCOL)
            metadata["kind"] = "dict"
        elif isinstance(returned, (str, os.PathLike)) and os.path.abspath(returned) != os.path.abspath(tmp):
            relative = os.path.relpath(os.fspath(returned), tmp)
            if relative.startswith(os.pardir):
                raise ValueError(
                    f"{type(self).__name__}.save_checkpoint returned {returned!r}, which is outside "
                    f"the checkpoint directory {tmp}; write inside the directory it is given."
                )
            metadata["file"] = relative
        return persist_checkpoint(tmp, parent_dir, self.iteration, metadata, move=True)

    def restore(self, checkpoint_path: str) -> None:
        """Load a checkpoint made by :meth:`save` and continue its iteration count."""
        import pickle

        from .checkpoint import _DICT_FILE, Checkpoint

        metadata = Checkpoint(checkpoint_path).get_metadata()
        if metadata.get("kind") == "dict":
            with open(os.path.join(checkpoint_path, _DICT_FILE), "rb") as f:
                self.load_checkpoint(pickle.load(f))
        elif metadata.get("file"):
            self.load_checkpoint(os.path.join(checkpoint_path, metadata["file"]))
        else:
            self.load_checkpoint(checkpoint_path)
        self._clock = IterationClock(metadata.get("iteration", 0), metadata.get("time_total_s", 0.0))

    # -- driven by tunekit -----------------------------------------------------------
    def train(self) -> dict:
        """Run :meth:`step` once and return its result with the automatic fields added."""
        start = time.time()
        result = self.step()
        if not isinstance(result, dict):
            raise TypeError(
                f"{type(self).__name__}.step() must return a dict of metrics, got "
                f"{type(result).__name__}."
            )
        result = dict(result)
        now = time.time()
        result.setdefault("time_this_iter_s", now - start)
        return self._clock.fill(result, now)

    def stop(self) -> None:
        """End this trainable: calls :meth:`cleanup`."""
        self.cleanup()

    def reset(self, new_config: dict, trial_id: str = "", trial_name: str = "", logdir: str = "") -> bool:
        """Reuse this instance for another trial (``reuse_actors=True``)."""
        if not self.reset_config(new_config):
            return False
        self.config = new_config
        self._trial_id = trial_id or self._trial_id
        self._trial_name = trial_name or self._trial_name
        self._logdir = logdir or self._logdir
        self._clock = IterationClock()
        return True

    def get_config(self) -> dict:
        return self.config

    @property
    def iteration(self) -> int:
        return self._clock.iteration

    @property
    def training_iteration(self) -> int:
        return self._clock.iteration

    @property
    def logdir(self) -> str:
        return self._logdir

    @property
    def trial_id(self) -> str:
        return self._trial_id

    @property
    def trial_name(self) -> str:
        return self._trial_name

    def get_current_ip(self) -> str:
        return os.environ.get("TUNEKIT_NODE_IP", "127.0.0.1")
