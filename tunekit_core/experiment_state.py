"""The experiment-state file: a JSON snapshot of every trial of an experiment.

The run loop calls ``save_experiment_state`` every few seconds and at the end
of a run; it writes ``<experiment_dir>/experiment_state-<timestamp>.json``
atomically (temporary file in the same directory, fsync, ``os.replace``), so a
killed driver leaves either the previous snapshot or the new one, never a torn
file. ``load_experiment_state`` reads the newest snapshot back; resuming and
``ExperimentAnalysis`` build on it.

Layout (``format`` is ``"tunekit-experiment-state/1"``)::

    {"format": ..., "timestamp": <float epoch s>, "runner_data": {...},
     "trials": [{"trial_id", "trainable_name", "experiment_tag", "config",
                 "evaluated_params", "status", "relative_logdir", "local_path",
                 "last_result", "error_file", "error_msg", "num_failures",
                 "custom_trial_name"}, ...]}

``relative_logdir`` and ``error_file`` are relative to the experiment
directory (so a moved directory still loads); ``local_path`` is the absolute
trial directory at the time of writing. Values that JSON cannot represent
(numpy numbers and arrays, sets, arbitrary objects) are converted only when met:
numbers and arrays to their Python equivalents, other objects to their ``str``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "EXPERIMENT_STATE_FORMAT",
    "ExperimentStateWriter",
    "EXPERIMENT_STATE_GLOB",
    "experiment_state_filename",
    "find_latest_experiment_state",
    "load_experiment_state",
    "save_experiment_state",
    "to_json_safe",
]

EXPERIMENT_STATE_FORMAT = "tunekit-experiment-state/1"
EXPERIMENT_STATE_PREFIX = "experiment_state-"
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"

_MAX_FALLBACK_STR = 10_000


def experiment_state_filename(timestamp_str: str) -> str:
    """File name of the experiment state written for ``timestamp_str``."""
    return f"{EXPERIMENT_STATE_PREFIX}{timestamp_str}.json"


def _json_default(obj: Any) -> Any:
    """``json`` fallback, called only for objects JSON cannot encode natively."""
    module = type(obj).__module__
    if module == "numpy" or module.startswith("numpy."):
        tolist = getattr(obj, "tolist", None)
        if tolist is not None:
            return tolist()
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(obj)
        except TypeError:
            return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    isoformat = getattr(obj, "isoformat", None)
    if callable(isoformat) and module == "datetime":
        return isoformat()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    text = str(obj)
    if len(text) > _MAX_FALLBACK_STR:
        text = text[:_MAX_FALLBACK_STR] + "..."
    return text


def to_json_safe(value: Any) -> Any:
    """A deep copy of ``value`` that ``json.dumps`` accepts.

    Mapping keys become strings; tuples and sets become lists; numpy values
    become Python numbers/lists; other objects become their ``str``. NaN and
    infinity stay floats (Python's ``json`` writes them as ``NaN``/``Infinity``).
    This is the slow path: the writer uses it only for values the fast
    encoder rejects.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {(k if isinstance(k, str) else str(k)): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    converted = _json_default(value)
    if converted is value or isinstance(converted, str):
        return converted
    return to_json_safe(converted)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, allow_nan=True)


def _relative_to(path: str | None, experiment_dir: str, prefix: str) -> str | None:
    if not path:
        return None
    path = os.fspath(path)
    if path.startswith(prefix):
        return path[len(prefix) :]
    if path == experiment_dir:
        return "."
    try:
        return os.path.relpath(path, experiment_dir)
    except ValueError:  # different drive on Windows
        return None


def _custom_trial_name(trial: Any, trainable_name: str, trial_id: str) -> str | None:
    if hasattr(trial, "custom_trial_name"):
        return trial.custom_trial_name
    name = str(trial)
    return None if name == f"{trainable_name}_{trial_id}" else name


def _trial_entry(trial: Any, experiment_dir: str, prefix: str) -> dict[str, Any]:
    trial_id = trial.trial_id
    trainable_name = getattr(trial, "trainable_name", None)
    local_path = getattr(trial, "local_path", None)
    if local_path is not None:
        local_path = os.fspath(local_path)
    return {
        "trial_id": trial_id,
        "trainable_name": trainable_name,
        "experiment_tag": getattr(trial, "experiment_tag", None),
        "config": getattr(trial, "config", None),
        "evaluated_params": getattr(trial, "evaluated_params", None),
        "status": getattr(trial, "status", None),
        "relative_logdir": _relative_to(local_path, experiment_dir, prefix),
        "local_path": local_path,
        "last_result": getattr(trial, "last_result", None) or {},
        "error_file": _relative_to(getattr(trial, "error_file", None), experiment_dir, prefix),
        "error_msg": getattr(trial, "error_msg", None),
        "num_failures": getattr(trial, "num_failures", 0),
        "custom_trial_name": _custom_trial_name(trial, trainable_name, trial_id),
        # every state-machine transition, as [status, unix time] pairs
        "status_history": [list(step) for step in getattr(trial, "status_history", ())],
    }


def _encode_state(doc: dict[str, Any]) -> str:
    try:
        return _dumps(doc)
    except (TypeError, ValueError):
        # Rare: a non-string key JSON refuses (e.g. a tuple) or a reference
        # cycle. Convert only the fields that fail.
        pass
    try:
        runner_text = _dumps(doc["runner_data"])
    except (TypeError, ValueError):
        runner_text = _dumps(_safe_or_placeholder(doc["runner_data"]))
    return "".join(
        [
            '{"format": ',
            _dumps(doc["format"]),
            ', "timestamp": ',
            repr(doc["timestamp"]),
            ', "runner_data": ',
            runner_text,
            ', "trials": [',
            ", ".join([_encode_entry(e) for e in doc["trials"]]),
            "]}",
        ]
    )


def _safe_or_placeholder(value: Any) -> Any:
    try:
        return to_json_safe(value)
    except RecursionError:
        return str(value)[:_MAX_FALLBACK_STR]


def _write_atomically(experiment_dir: str, timestamp_str: str, text: str | Iterable[str]) -> str:
    path = os.path.join(experiment_dir, experiment_state_filename(timestamp_str))
    fd, tmp_path = tempfile.mkstemp(
        prefix="." + EXPERIMENT_STATE_PREFIX, suffix=".tmp", dir=experiment_dir
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if isinstance(text, str):
                f.write(text)
            else:
                for chunk in text:  # streamed: memory stays flat however many trials
                    f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    _fsync_dir(experiment_dir)
    return path


def save_experiment_state(
    experiment_dir: str | os.PathLike,
    trials: Iterable[Any],
    runner_data: dict[str, Any],
    timestamp_str: str,
) -> str:
    """Write the state of ``trials`` to ``experiment_state-<timestamp_str>.json``.

    ``trials`` are Trial objects (anything with the Trial contract attributes);
    ``runner_data`` is run-loop data to restore on resume (JSON-encodable;
    other values are converted as described in the module docstring). The file
    is replaced atomically and fsynced. Returns the path written.

    A run loop that saves repeatedly should use ``ExperimentStateWriter``, which
    reuses the encoding of finished trials between saves.
    """
    experiment_dir = os.path.abspath(os.fspath(experiment_dir))
    os.makedirs(experiment_dir, exist_ok=True)
    prefix = experiment_dir.rstrip(os.sep) + os.sep
    doc = {
        "format": EXPERIMENT_STATE_FORMAT,
        "timestamp": time.time(),
        "runner_data": runner_data if runner_data is not None else {},
        "trials": [_trial_entry(t, experiment_dir, prefix) for t in trials],
    }
    return _write_atomically(experiment_dir, timestamp_str, _encode_state(doc))


_FINAL_STATUSES = frozenset({"TERMINATED", "ERROR"})


class ExperimentStateWriter:
    """Repeated ``save_experiment_state`` for one experiment, with an encoding cache.

    Trials in a final state (TERMINATED, ERROR) rarely change, yet they are
    most of a large experiment. The writer keeps each such trial's encoded JSON
    and reuses it while the trial's status, ``last_result`` and ``config``
    objects (compared by identity: the run loop replaces them, it does not
    mutate them), error fields, paths and tag are unchanged. The file written
    is identical to ``save_experiment_state``'s.

    ``max_cached`` bounds how many trials' encodings are kept (the others are encoded
    at each save); :meth:`prime` encodes a finished trial ahead of the next save.
    """

    def __init__(
        self,
        experiment_dir: str | os.PathLike,
        timestamp_str: str,
        cache: bool = True,
        max_cached: int | None = None,
    ) -> None:
        self.experiment_dir = os.path.abspath(os.fspath(experiment_dir))
        self.timestamp_str = timestamp_str
        self._prefix = self.experiment_dir.rstrip(os.sep) + os.sep
        # trial_id -> (key tuple, encoded entry)
        self._cache: dict[str, tuple[tuple, str]] = {}
        self._use_cache = cache  # False for one-off snapshots: memory stays flat
        self._max_cached = max_cached

    def prime(self, trial: Any) -> None:
        """Encode ``trial`` now if it is finished and the cache has room, so that the next
        :meth:`save` reuses the encoding."""
        if getattr(trial, "status", None) in _FINAL_STATUSES and self._has_room():
            self._encode_trial(trial)

    def _has_room(self) -> bool:
        return self._max_cached is None or len(self._cache) < self._max_cached

    @property
    def path(self) -> str:
        """The experiment-state file this writer replaces on every save."""
        return os.path.join(self.experiment_dir, experiment_state_filename(self.timestamp_str))

    def _encode_trial(self, trial: Any) -> str:
        status = getattr(trial, "status", None)
        if status not in _FINAL_STATUSES:
            return _encode_entry(_trial_entry(trial, self.experiment_dir, self._prefix))
        key = (
            status,
            getattr(trial, "last_result", None),
            getattr(trial, "config", None),
            getattr(trial, "evaluated_params", None),
            getattr(trial, "local_path", None),
            getattr(trial, "error_file", None),
            getattr(trial, "error_msg", None),
            getattr(trial, "num_failures", 0),
            getattr(trial, "experiment_tag", None),
        )
        trial_id = trial.trial_id
        cached = self._cache.get(trial_id)
        if cached is not None and _same_key(cached[0], key):
            return cached[1]
        text = _encode_entry(_trial_entry(trial, self.experiment_dir, self._prefix))
        if self._use_cache and (cached is not None or self._has_room()):
            self._cache[trial_id] = (key, text)
        return text

    def save(self, trials: Iterable[Any], runner_data: dict[str, Any]) -> str:
        """Write the state of ``trials`` atomically; returns the path written."""
        os.makedirs(self.experiment_dir, exist_ok=True)
        try:
            runner_text = _dumps(runner_data if runner_data is not None else {})
        except (TypeError, ValueError):
            runner_text = _dumps(_safe_or_placeholder(runner_data))
        head = "".join(
            [
                '{"format": ',
                _dumps(EXPERIMENT_STATE_FORMAT),
                ', "timestamp": ',
                repr(time.time()),
                ', "runner_data": ',
                runner_text,
                ', "trials": [',
            ]
        )

        def chunks():
            yield head
            for index, trial in enumerate(trials):
                yield (", " if index else "") + self._encode_trial(trial)
            yield "]}"

        return _write_atomically(self.experiment_dir, self.timestamp_str, chunks())


def _same_key(old: tuple, new: tuple) -> bool:
    # status (str) by value; last_result, config, evaluated_params by identity;
    # the rest (paths, error fields, counters, tag) by value.
    return (
        old[0] == new[0]
        and old[1] is new[1]
        and old[2] is new[2]
        and old[3] is new[3]
        and old[4:] == new[4:]
    )


def _encode_entry(entry: dict[str, Any]) -> str:
    try:
        return _dumps(entry)
    except (TypeError, ValueError):
        fixed = dict(entry)
        for key in ("config", "evaluated_params", "last_result"):
            try:
                _dumps(fixed[key])
            except (TypeError, ValueError):
                fixed[key] = _safe_or_placeholder(fixed[key])
        return _dumps(fixed)


def _fsync_dir(directory: str) -> None:
    """Persist the rename itself (best effort; not supported everywhere)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def find_latest_experiment_state(experiment_dir: str | os.PathLike) -> str | None:
    """Path of the newest ``experiment_state-*.json`` in ``experiment_dir``, or None.

    "Newest" is the greatest file name: timestamps in the name
    (``YYYY-mm-dd_HH-MM-SS``) sort chronologically.
    """
    experiment_dir = os.fspath(experiment_dir)
    try:
        names = os.listdir(experiment_dir)
    except (FileNotFoundError, NotADirectoryError):
        return None
    candidates = fnmatch.filter(names, EXPERIMENT_STATE_GLOB)
    if not candidates:
        return None
    return os.path.join(experiment_dir, max(candidates))


def load_experiment_state(path_or_dir: str | os.PathLike) -> dict[str, Any]:
    """Read an experiment-state file, or the newest one in a directory.

    Raises ``FileNotFoundError`` if the path does not exist or the directory
    holds no ``experiment_state-*.json``, and ``ValueError`` if the file is not
    a tunekit experiment state.
    """
    path = os.path.expanduser(os.fspath(path_or_dir))
    if os.path.isdir(path):
        from .state_store import analysis_document, find_databases, load_database

        databases = find_databases(path)
        newest_json = find_latest_experiment_state(path)
        if databases and (
            newest_json is None
            or os.path.basename(databases[0])[:-3] >= os.path.basename(newest_json)[:-5]
        ):
            # the live state of a running (or killed) run is in its database
            state = load_database(path)
            if state is not None:
                return analysis_document(state)
        found = newest_json
        if found is None:
            raise FileNotFoundError(
                f"No experiment state file ({EXPERIMENT_STATE_GLOB}) in {path!r}. Pass the "
                "experiment directory of a tunekit run (<local_dir>/<name>) or the path of "
                "its experiment_state-*.json file."
            )
        # Newest first; a snapshot cut short by a crash falls back to the previous one.
        names = sorted(fnmatch.filter(os.listdir(path), EXPERIMENT_STATE_GLOB), reverse=True)
        for name in names:
            candidate = os.path.join(path, name)
            try:
                with open(candidate, encoding="utf-8") as f:
                    json.load(f)
            except (OSError, json.JSONDecodeError) as exc:
                import logging

                logging.getLogger("tunekit").warning(
                    "Experiment state %s is unreadable (%s); using the previous one.", candidate, exc
                )
                continue
            found = candidate
            break
        path = found
    elif not os.path.exists(path):
        raise FileNotFoundError(
            f"Experiment state path {path!r} does not exist. Pass an experiment directory "
            "or an experiment_state-*.json file."
        )
    with open(path, encoding="utf-8") as f:
        try:
            state = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Experiment state file {path!r} is not valid JSON: {exc}") from None
    fmt = state.get("format") if isinstance(state, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith("tunekit-experiment-state/"):
        raise ValueError(
            f"{path!r} is not a tunekit experiment state file (expected a JSON object with "
            f"format {EXPERIMENT_STATE_FORMAT!r}, found format {fmt!r})."
        )
    if fmt != EXPERIMENT_STATE_FORMAT:
        raise ValueError(
            f"{path!r} has experiment state format {fmt!r}; this tunekit reads "
            f"{EXPERIMENT_STATE_FORMAT!r}. Use the tunekit version that wrote it."
        )
    if not isinstance(state.get("trials"), list):
        raise ValueError(f"Experiment state file {path!r} has no 'trials' list.")
    return state
