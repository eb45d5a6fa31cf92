"""tunekit's TensorBoard logger: one event file per trial, scalars per result, hparams at the end.

:class:`TBXLoggerCallback` writes what Ray Tune's logger of the same name writes,
in TensorBoard's event-file format, into each trial's directory:

* every numeric field of every result (nested dicts flattened with "/") as a
  scalar tagged ``ray/tune/<field>`` (Ray Tune's tags, so existing TensorBoard
  layouts and filters keep working), at step ``timesteps_total`` when the result
  has a non-zero one, else ``training_iteration``; ``config``, ``pid``,
  ``timestamp``, ``time_total_s`` and ``training_iteration`` are left out (as in
  Ray Tune) and NaN values are skipped;
* non-empty lists, tuples and arrays of numbers as histograms;
* when the trial ends, its hyperparameters (the flattened config) with the
  scalar tags of its last result as the HParams dashboard's metrics.

Events are framed and checksummed with tensorboardX's record helpers and
protocol buffers, but written synchronously into one buffered file per trial:
no writer thread or queue per trial, one event per result (holding all of its
scalars) instead of one per scalar, and no ``fsync`` per result. Files are
flushed by :meth:`flush` (before each experiment-state save), at most every
``flush_interval_s`` seconds, and closed when the trial ends. A trial that
restarts in the same driver process appends to the file it had; at a restart's
first result a ``SessionLog.START`` event tells TensorBoard to drop what the
earlier attempt logged from that step on (what tensorboardX's ``purge_step``
does), so replayed iterations are not drawn twice.
"""

from __future__ import annotations

import logging
import numbers
import os
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

from tunekit_core.callback import LoggerCallback

__all__ = ["TAG_PREFIX", "TBXLoggerCallback"]

logger = logging.getLogger(__name__)

#: Every scalar and histogram tag starts with this (as in Ray Tune).
TAG_PREFIX = "ray/tune/"

# Top-level result fields that are not logged (Ray Tune leaves out the same ones).
_NOT_LOGGED = frozenset({"config", "pid", "timestamp", "time_total_s", "training_iteration"})

_FILE_BUFFER = 256 << 10
_MAX_HPARAM_STRING = 1000
_HPARAMS_PLUGIN = "hparams"
_SESSION_END_TAG = "_hparams_/session_end_info"
_pack_length = struct.Struct("<Q").pack
_pack_crc = struct.Struct("<I").pack


def _load_tensorboardx() -> dict[str, Any]:
    """The parts of tensorboardX the logger uses (importing it takes about a second)."""
    try:
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.record_writer import masked_crc32c
    except ImportError as error:
        raise ImportError(
            "TBXLoggerCallback needs tensorboardX, which is not installed. Install it with "
            "`pip install tensorboardX` (or `pip install tunekit[tensorboard]`)."
        ) from error
    return {
        "Event": Event,
        "SessionLog": SessionLog,
        "Summary": Summary,
        "masked_crc32c": masked_crc32c,
    }


class _EventFile:
    """One trial's event file: records appended to a buffered file."""

    __slots__ = ("path", "file", "last_result", "crc", "restarted")

    def __init__(self, path: str, crc: Any) -> None:
        self.path = path
        self.file = open(path, "ab", buffering=_FILE_BUFFER)  # noqa: SIM115 - closed by close()
        self.last_result: Mapping[str, Any] | None = None
        self.crc = crc
        # The trial restarted: its next result's step is where TensorBoard should
        # forget what the earlier attempt logged (a SessionLog START event says so).
        self.restarted = False

    def write(self, event: Any) -> None:
        data = event.SerializeToString()
        header = _pack_length(len(data))
        crc = self.crc
        self.file.write(b"".join((header, _pack_crc(crc(header)), data, _pack_crc(crc(data)))))

    def close(self) -> None:
        self.file.close()


class TBXLoggerCallback(LoggerCallback):
    """Writes TensorBoard event files into each trial's directory (Ray Tune's ``TBXLoggerCallback``).

    Each trial gets one ``events.out.tfevents.*`` file in its directory, so
    ``tensorboard --logdir <experiment directory>`` shows one run per trial.
    Results become scalars tagged ``ray/tune/<field>`` (nested dicts flattened
    with "/") at step ``timesteps_total`` or, when that is missing or zero,
    ``training_iteration``; lists and arrays of numbers become histograms;
    strings and other values are skipped. When a trial ends, its config
    (flattened; ints, floats, strings and bools as they are, None left out,
    anything else as a string) is written as HParams with the last result's
    scalar tags as metrics, and the session status says whether it failed.

    Not on by default (unlike Ray Tune, which adds it when tensorboardX is
    installed): pass ``callbacks=["tensorboard"]`` or an instance.
    """

    #: Wall-clock seconds between flushes of all open files while results arrive.
    flush_interval_s: float = 5.0

    def __init__(self) -> None:
        tbx = _load_tensorboardx()
        self._Event = tbx["Event"]
        self._SessionLog = tbx["SessionLog"]
        self._Summary = tbx["Summary"]
        self._Value = tbx["Summary"].Value
        self._crc = tbx["masked_crc32c"]
        self._files: dict[str, _EventFile] = {}
        # trial id -> the event file it wrote in this process (a restart appends to it)
        self._paths: dict[str, str] = {}
        self._last_flush = time.monotonic()
        self._warned: set[str] = set()

    # -- files ---------------------------------------------------------------------------

    def _open(self, trial: Any) -> _EventFile:
        trial_id = trial.trial_id
        entry = self._files.get(trial_id)
        if entry is not None:
            return entry
        path = self._paths.get(trial_id)
        if path is None:
            # TensorBoard reads every file with "tfevents" in its name, in name order.
            name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
            path = os.path.join(trial.local_path, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        new = not os.path.exists(path)
        entry = self._files[trial_id] = _EventFile(path, self._crc)
        self._paths[trial_id] = path
        if new:
            entry.write(self._Event(wall_time=time.time(), file_version="brain.Event:2"))
        return entry

    def _close(self, trial_id: str) -> None:
        entry = self._files.pop(trial_id, None)
        if entry is not None:
            entry.close()

    # -- LoggerCallback --------------------------------------------------------------------

    def log_trial_start(self, trial: Any) -> None:
        entry = self._open(trial)
        if getattr(trial, "last_result", None):
            entry.restarted = True  # a retry, an unpause or a resumed experiment

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        entry = self._files.get(trial.trial_id)
        if entry is None:
            entry = self._open(trial)
        step = result.get("timesteps_total") or result.get("training_iteration") or 0
        values: list[Any] = []
        self._collect(result, TAG_PREFIX, values, top=True)
        entry.last_result = result
        if entry.restarted:
            entry.restarted = False
            entry.write(
                self._Event(
                    wall_time=time.time(),
                    step=int(step),
                    session_log=self._SessionLog(status=self._SessionLog.START),
                )
            )
        if values:
            entry.write(
                self._Event(
                    wall_time=time.time(), step=int(step), summary=self._Summary(value=values)
                )
            )
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        entry = self._files.get(trial.trial_id)
        if entry is None:
            if trial.trial_id not in self._paths:
                return  # never logged anything for this trial
            entry = self._open(trial)
        try:
            if entry.last_result is not None:
                self._write_hparams(entry, trial, failed)
        finally:
            self._close(trial.trial_id)

    def flush(self) -> None:
        """Write every open event file's buffer to the operating system."""
        for entry in self._files.values():
            entry.file.flush()
        self._last_flush = time.monotonic()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close every open event file."""
        for trial_id in list(self._files):
            self._close(trial_id)

    def __getstate__(self) -> dict[str, Any]:
        # Files and protobuf classes are not picklable: they are set up again on load.
        self.flush()
        return {"flush_interval_s": self.flush_interval_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()
        self.__dict__.update(state)

    # -- results ---------------------------------------------------------------------------

    def _collect(self, data: Mapping, prefix: str, values: list, top: bool = False) -> None:
        """Append a summary value for every loggable field of ``data`` to ``values``."""
        Value = self._Value
        for key, value in data.items():
            if top and key in _NOT_LOGGED:
                continue
            cls = type(value)
            if cls is float:
                if value == value:  # NaN is skipped, as in Ray Tune
                    values.append(Value(tag=f"{prefix}{key}", simple_value=value))
            elif cls is int or cls is bool:
                values.append(Value(tag=f"{prefix}{key}", simple_value=value))
            elif cls is dict:
                self._collect(value, f"{prefix}{key}/", values)
            elif cls is str or value is None:
                continue
            else:
                self._collect_other(f"{prefix}{key}", value, values)

    def _collect_other(self, tag: str, value: Any, values: list) -> None:
        """Numpy scalars, other mappings, and lists or arrays (histograms)."""
        if isinstance(value, numbers.Real):
            number = float(value)
            if number == number:
                values.append(self._Value(tag=tag, simple_value=number))
        elif isinstance(value, Mapping):
            self._collect(value, f"{tag}/", values)
        elif isinstance(value, (list, tuple)) or hasattr(value, "__array__"):
            histogram = self._histogram(tag, value)
            if histogram is not None:
                values.append(self._Value(tag=tag, histo=histogram))

    def _histogram(self, tag: str, value: Any) -> Any:
        import numpy as np
        from tensorboardX.summary import make_histogram

        try:
            array = np.asarray(value, dtype=float).reshape(-1)
            if array.size == 0:
                return None
            return make_histogram(array, bins="auto", max_bins=64)
        except (ValueError, TypeError) as error:
            if tag not in self._warned:
                self._warned.add(tag)
                logger.warning(
                    "TBXLoggerCallback: not logging %s as a histogram (%s); histograms need "
                    "finite numbers.",
                    tag,
                    error,
                )
            return None

    # -- hparams ---------------------------------------------------------------------------

    def _write_hparams(self, entry: _EventFile, trial: Any, failed: bool) -> None:
        params = hparams_of(getattr(trial, "config", None) or {})
        if not params:
            return
        scalars: list[Any] = []
        self._collect(entry.last_result or {}, TAG_PREFIX, scalars, top=True)
        metrics = {value.tag: None for value in scalars if value.HasField("simple_value")}
        from tensorboardX.summary import hparams

        experiment, session_start, session_end = hparams(params, metrics)
        if failed:
            session_end = self._failed_session_end()
        wall_time = time.time()
        for summary in (experiment, session_start, session_end):
            entry.write(self._Event(wall_time=wall_time, summary=summary))

    def _failed_session_end(self) -> Any:
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
        from tensorboardX.proto.summary_pb2 import SummaryMetadata

        content = HParamsPluginData(
            session_end_info=SessionEndInfo(
                status=Status.Value("STATUS_FAILURE"), end_time_secs=time.time()
            ),
            version=0,
        )
        metadata = SummaryMetadata(
            plugin_data=SummaryMetadata.PluginData(
                plugin_name=_HPARAMS_PLUGIN, content=content.SerializeToString()
            )
        )
        return self._Summary(value=[self._Value(tag=_SESSION_END_TAG, metadata=metadata)])


def hparams_of(config: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The HParams of a trial: ``config`` flattened with "/", values TensorBoard can show.

    ints, floats, strings and bools stay as they are (numpy scalars become
    Python ones), None is left out, functions and classes become their
    qualified name and anything else its ``str()`` (at most 1000 characters).
    """
    flat: dict[str, bool | int | float | str] = {}
    _flatten_hparams(config, "", flat)
    return flat


def _flatten_hparams(data: Mapping, prefix: str, flat: dict) -> None:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten_hparams(value, f"{name}/", flat)
        elif value is None:
            continue
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif isinstance(value, numbers.Number) and hasattr(value, "item"):
            flat[name] = value.item()
        elif isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
            module = getattr(value, "__module__", None)
            flat[name] = f"{module}.{value.__qualname__}" if module else value.__qualname__
        else:
            text = str(value)
            flat[name] = (
                text if len(text) <= _MAX_HPARAM_STRING else text[:_MAX_HPARAM_STRING] + "..."
            )
