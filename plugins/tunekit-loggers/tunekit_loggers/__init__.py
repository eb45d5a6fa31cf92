"""tunekit's default result loggers: ``result.json`` (JSON lines) and ``progress.csv``.

Both write into the trial directory (``trial.local_path``), in Ray Tune's formats:

* :class:`JsonLoggerCallback` writes ``params.json`` (the config, indented,
  keys sorted) and ``params.pkl`` (cloudpickle of the config) when a trial
  starts, and appends every result to ``result.json`` as one JSON line;
* :class:`CSVLoggerCallback` appends every result to ``progress.csv``, nested
  dicts flattened with "/" and ``config`` left out; the columns are those of the
  trial's first result (keys that appear later are ignored, as in Ray Tune).

They are built for drivers handling tens of thousands of results per second:
each trial's file is opened once with a large buffer, results are not flushed
one by one but at most every ``flush_interval_s`` seconds (from ``on_step_end``,
``flush()`` and result arrival) and when a trial ends. A trial that restarts
(retry, resume, unpause) appends to its files.
"""

from __future__ import annotations

import csv
import json
import numbers
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any, TextIO

from tunekit_core.callback import LoggerCallback

__all__ = [
    "CSVLoggerCallback",
    "EXPR_PARAM_FILE",
    "EXPR_PARAM_PICKLE_FILE",
    "EXPR_PROGRESS_FILE",
    "EXPR_RESULT_FILE",
    "JsonLoggerCallback",
    "flatten_dict",
    "safe_json_value",
]

EXPR_PARAM_FILE = "params.json"
EXPR_PARAM_PICKLE_FILE = "params.pkl"
EXPR_RESULT_FILE = "result.json"
EXPR_PROGRESS_FILE = "progress.csv"

_LARGE_BUFFER = 1 << 20
_SMALL_BUFFER = 64 << 10
# Beyond this many open trial files per logger, new files get the small buffer.
_LARGE_BUFFER_FILES = 64


def safe_json_value(value: Any) -> Any:
    """A JSON-encodable stand-in for ``value`` (the ``default`` of the encoders).

    Arrays, tensors and numpy scalars become lists or Python scalars through
    their ``tolist()``/``item()`` (duck typing: numpy is never imported); other
    numbers, mappings, sets and sequences become their JSON counterparts;
    classes and functions their qualified name; anything else its ``repr``.
    """
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return tolist()
        except Exception:
            pass
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except Exception:
            pass
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, str) else k: v for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if isinstance(value, (list, tuple, range)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        module = getattr(value, "__module__", None)
        qualname = getattr(value, "__qualname__", type(value).__name__)
        return f"{module}.{qualname}" if module else qualname
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _sanitize(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` that plain ``json`` can encode (after an encoding error)."""
    if depth > 100:
        return "<too deeply nested>"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {
            (k if isinstance(k, str) else str(k)): _sanitize(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_sanitize(v, depth + 1) for v in value]
    converted = safe_json_value(value)
    if isinstance(converted, (str, int, float, bool)) or converted is None:
        return converted
    if converted is value:
        return repr(value)
    return _sanitize(converted, depth + 1)


_encode_line = json.JSONEncoder(default=safe_json_value).encode
_encode_params = json.JSONEncoder(default=safe_json_value, indent=2, sort_keys=True).encode


def _open_in_trial_dir(path: str, mode: str, **kwargs: Any):
    """``open``, creating the trial directory only when it is missing (the run loop has
    made it already: no extra system call per file in the usual case)."""
    try:
        return open(path, mode, **kwargs)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return open(path, mode, **kwargs)


def _to_json_line(result: Any) -> str:
    try:
        return _encode_line(result)
    except (TypeError, ValueError, RecursionError):
        return _encode_line(_sanitize(result))


def _to_params_json(config: Any) -> str:
    try:
        return _encode_params(config)
    except (TypeError, ValueError, RecursionError):
        return _encode_params(_sanitize(config))


def flatten_dict(
    data: Mapping[str, Any], delimiter: str = "/", exclude: str | None = None
) -> dict[str, Any]:
    """Flatten nested dicts, joining keys with ``delimiter`` (as Ray Tune's progress.csv).

    Empty nested dicts disappear; other values, lists included, stay as they are.
    The top-level key ``exclude`` (if given) is left out.
    """
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == exclude:
            continue
        if isinstance(value, dict):
            _flatten_into(flat, f"{key}{delimiter}", value, delimiter)
        else:
            flat[key] = value
    return flat


def _flatten_into(flat: dict[str, Any], prefix: str, data: Mapping, delimiter: str) -> None:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten_into(flat, f"{name}{delimiter}", value, delimiter)
        else:
            flat[name] = value


class _TrialFile:
    """One open output file of one trial."""

    __slots__ = ("file", "write", "trial", "fieldnames", "writerow", "nested")

    def __init__(self, file: TextIO, trial: Any) -> None:
        self.file = file
        self.write = file.write
        self.trial = trial
        self.fieldnames: list[str] | None = None
        self.writerow: Any = None
        self.nested = False


class _BufferedTrialLogger(LoggerCallback):
    """Keeps one buffered append-mode file per trial and flushes them periodically."""

    #: Wall-clock seconds between flushes of all open files.
    flush_interval_s: float = 5.0
    #: At most this many files stay open; beyond it, files of trials that are
    #: not running (then the oldest) are closed and reopened on their next result.
    max_open_files: int = 512
    _file_name: str = ""
    _newline: str | None = None

    def __init__(self) -> None:
        self._files: dict[str, _TrialFile] = {}
        self._started: set[str] = set()
        self._last_flush = time.monotonic()

    # -- file management ---------------------------------------------------------

    def _open(self, trial: Any) -> _TrialFile:
        trial_id = trial.trial_id
        old = self._files.pop(trial_id, None)
        if old is not None:
            old.file.close()
        if len(self._files) >= self.max_open_files:
            self._close_idle()
        path = os.path.join(trial.local_path, self._file_name)
        buffering = _LARGE_BUFFER if len(self._files) < _LARGE_BUFFER_FILES else _SMALL_BUFFER
        file = _open_in_trial_dir(path, "a", buffering=buffering, encoding="utf-8", newline=self._newline)
        entry = _TrialFile(file, trial)
        self._prepare(entry, path)
        self._files[trial_id] = entry
        return entry

    def _prepare(self, entry: _TrialFile, path: str) -> None:
        """Called after a trial's file was opened for appending."""

    def _close_idle(self) -> None:
        for trial_id, entry in list(self._files.items()):
            if getattr(entry.trial, "status", None) != "RUNNING":
                self._close(trial_id)
        while len(self._files) >= self.max_open_files:
            self._close(next(iter(self._files)))

    def _close(self, trial_id: str) -> None:
        entry = self._files.pop(trial_id, None)
        if entry is not None:
            entry.file.close()

    def _entry_for_result(self, trial: Any) -> _TrialFile:
        if trial.trial_id in self._started:
            return self._open(trial)
        self.log_trial_start(trial)
        return self._files[trial.trial_id]

    def _flush_all(self) -> None:
        for entry in self._files.values():
            entry.file.flush()
        self._last_flush = time.monotonic()

    # -- LoggerCallback ------------------------------------------------------------

    def log_trial_start(self, trial: Any) -> None:
        self._started.add(trial.trial_id)
        self._open(trial)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        self._close(trial.trial_id)

    def flush(self) -> None:
        """Write every open file's buffer to disk."""
        self._flush_all()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self._flush_all()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial_id in list(self._files):
            self._close(trial_id)

    def close(self) -> None:
        """Flush and close every open file."""
        for trial_id in list(self._files):
            self._close(trial_id)

    def __getstate__(self) -> dict[str, Any]:
        # Open files cannot be pickled: flush them and leave them out; after
        # unpickling, trials reopen their files (in append mode) on their next result.
        self._flush_all()
        state = self.__dict__.copy()
        state["_files"] = {}
        return state


class JsonLoggerCallback(_BufferedTrialLogger):
    """Writes ``params.json``/``params.pkl`` at trial start and ``result.json`` lines.

    Values JSON cannot encode are made safe with :func:`safe_json_value`.
    """

    _file_name = EXPR_RESULT_FILE

    def log_trial_start(self, trial: Any) -> None:
        self._write_params(trial)
        super().log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        entry = self._files.get(trial.trial_id)
        if entry is None:
            entry = self._entry_for_result(trial)
        entry.write(_to_json_line(result) + "\n")
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self._flush_all()

    def _write_params(self, trial: Any) -> None:
        directory = trial.local_path
        config = trial.config
        with _open_in_trial_dir(os.path.join(directory, EXPR_PARAM_FILE), "w", encoding="utf-8") as f:
            f.write(_to_params_json(config))
        import cloudpickle

        pickle_path = os.path.join(directory, EXPR_PARAM_PICKLE_FILE)
        try:
            with open(pickle_path, "wb") as f:
                cloudpickle.dump(config, f)
        except Exception as error:
            warnings.warn(
                f"Could not pickle the config of trial {trial} into {pickle_path}: "
                f"{type(error).__name__}: {error}. params.json was written; params.pkl "
                f"is missing. Make the config values picklable to get it.",
                RuntimeWarning,
                stacklevel=2,
            )
            try:
                os.remove(pickle_path)
            except OSError:
                pass


class CSVLoggerCallback(_BufferedTrialLogger):
    """Appends results to ``progress.csv``, flattened with "/" and without ``config``.

    The header is the first result's keys; when a trial restarts and the file
    already has a header, that header is kept and new rows follow its columns.
    """

    _file_name = EXPR_PROGRESS_FILE
    _newline = ""

    def _prepare(self, entry: _TrialFile, path: str) -> None:
        header = None
        if entry.file.tell() > 0:
            with open(path, newline="", encoding="utf-8") as existing:
                header = next(csv.reader(existing), None)
        if header:
            entry.fieldnames = header
            # Unknown whether a column came from a nested dict: flatten when it may have.
            entry.nested = any("/" in name for name in header)
        entry.writerow = csv.writer(entry.file).writerow

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        entry = self._files.get(trial.trial_id)
        if entry is None:
            entry = self._entry_for_result(trial)
        fieldnames = entry.fieldnames
        if fieldnames is None:
            flat = flatten_dict(result, exclude="config")
            entry.fieldnames = list(flat)
            # Rows can be read straight from the result unless a column is nested.
            entry.nested = any(isinstance(v, dict) for k, v in result.items() if k != "config")
            entry.writerow(entry.fieldnames)
            entry.writerow(flat.values())
        elif entry.nested:
            entry.writerow(map(flatten_dict(result, exclude="config").get, fieldnames))
        else:
            entry.writerow(map(result.get, fieldnames))
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self._flush_all()
