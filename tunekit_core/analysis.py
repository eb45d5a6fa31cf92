"""ExperimentAnalysis: query the trials and results of an experiment.

``run`` returns an ``ExperimentAnalysis`` built from its in-memory trials; one
can also be built later from an experiment directory (or one of its
``experiment_state-*.json`` files), including a directory that was moved or
copied elsewhere. The API follows Ray Tune's ``ExperimentAnalysis``.

Result histories (for ``trial_dataframes``, ``dataframe(metric, mode)`` and the
non-``last`` scopes of ``get_best_trial``) are read from each trial's
``result.json`` (falling back to ``progress.csv``) lazily, the first time they
are needed. pandas is imported only by the methods that return DataFrames.

A directory is read without changing anything in it: the newest experiment
state database (``experiment_state-*.db``, the live state of a running or
killed run) when it is at least as new as the newest JSON snapshot, else the
snapshot. The checkpoint methods (``best_checkpoint``, ``get_best_checkpoint``,
``get_last_checkpoint``, ``get_trial_checkpoints_paths``) use the trials' kept
checkpoints: ``trial.checkpoint_manager`` for live trials, the state
database's records, or the ``checkpoint_<iteration>`` directories found in a
trial directory when the state does not list them.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import logging
import math
import os
import re
import sqlite3
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tunekit_core.checkpoint import METADATA_FILE, Checkpoint
from tunekit_core.experiment_state import (
    EXPERIMENT_STATE_GLOB,
    load_experiment_state,
)
from tunekit_core.space import lookup

if TYPE_CHECKING:  # pragma: no cover
    from pandas import DataFrame

__all__ = ["DEFAULT_METRIC", "ExperimentAnalysis", "TrialRecord"]

logger = logging.getLogger(__name__)

#: Metric name used when only a ``mode`` was given (as in Ray Tune).
DEFAULT_METRIC = "_metric"

RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.csv"
PARAMS_FILE = "params.json"
ERROR_FILE = "error.txt"

_SCOPES = ("all", "last", "avg", "last-5-avg", "last-10-avg")
_MISSING = object()
_TRAINING_ITERATION = "training_iteration"
_CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")


class TrialRecord:
    """A trial read back from disk: the Trial contract's data, without behaviour.

    ``ExperimentAnalysis`` builds these when it loads an experiment directory;
    they carry ``trial_id``, ``trainable_name``, ``experiment_tag``, ``config``,
    ``evaluated_params``, ``status``, ``last_result``, ``local_path`` (alias
    ``logdir``), ``error_file``, ``error_msg``, ``num_failures``,
    ``custom_trial_name`` and ``checkpoints`` (the kept checkpoints as
    ``{"path", "iteration", "score"}`` dicts with absolute paths, oldest first;
    ``None`` when the state did not list them: the trial directory is then
    searched for ``checkpoint_<iteration>`` directories). ``str(record)`` is the
    trial name.
    """

    #: Status of trials found by scanning a directory without an experiment state
    #: whose results do not say whether they finished.
    UNKNOWN = "UNKNOWN"

    def __init__(
        self,
        trial_id: str,
        trainable_name: str | None = None,
        experiment_tag: str | None = None,
        config: dict[str, Any] | None = None,
        evaluated_params: dict[str, Any] | None = None,
        status: str | None = None,
        last_result: dict[str, Any] | None = None,
        local_path: str | None = None,
        error_file: str | None = None,
        error_msg: str | None = None,
        num_failures: int = 0,
        custom_trial_name: str | None = None,
        checkpoints: list[dict[str, Any]] | None = None,
    ) -> None:
        self.trial_id = trial_id
        self.trainable_name = trainable_name
        self.experiment_tag = experiment_tag
        self.config = config if config is not None else {}
        self.evaluated_params = evaluated_params if evaluated_params is not None else {}
        self.status = status
        self.last_result = last_result if last_result is not None else {}
        self.local_path = local_path
        self.error_file = error_file
        self.error_msg = error_msg
        self.num_failures = num_failures
        self.custom_trial_name = custom_trial_name
        self.checkpoints = checkpoints

    @property
    def logdir(self) -> str | None:
        """The trial directory (alias of ``local_path``)."""
        return self.local_path

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The trial's latest kept checkpoint, or None (as ``Trial.checkpoint``)."""
        entries = _checkpoint_entries(self)
        return Checkpoint(entries[-1]["path"]) if entries else None

    def __str__(self) -> str:
        if self.custom_trial_name:
            return self.custom_trial_name
        if self.trainable_name:
            return f"{self.trainable_name}_{self.trial_id}"
        return str(self.trial_id)

    def __repr__(self) -> str:
        return f"TrialRecord({self!s}, status={self.status!r})"


# --------------------------------------------------------------------------- helpers


def _as_number(value: Any) -> float | None:
    """``value`` as a float if it is a (non-bool) real number, else None."""
    if isinstance(value, bool) or value is None or value is _MISSING:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:  # numpy scalars and the like
        if hasattr(value, "__float__") and not isinstance(value, str):
            return float(value)
    except (TypeError, ValueError):
        return None
    return None


def _is_nan_or_inf(value: float) -> bool:
    return math.isnan(value) or math.isinf(value)


def _flatten(d: Mapping[str, Any], prefix: str = "", out: dict | None = None) -> dict[str, Any]:
    """Flatten nested dicts into ``"a/b"`` keys (lists and other values are kept)."""
    if out is None:
        out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            _flatten(value, name + "/", out)
        else:
            out[name] = value
    return out


def _reported_keys(trials: Iterable[Any], limit: int = 40) -> list[str]:
    keys: set[str] = set()
    for t in trials:
        result = getattr(t, "last_result", None) or {}
        for k in _flatten(result):
            if not k.startswith("config/") and k != "config":
                keys.add(k)
    ordered = sorted(keys)
    if len(ordered) > limit:
        ordered = ordered[:limit] + [f"... ({len(keys) - limit} more)"]
    return ordered


def _read_json_lines(path: str) -> list[dict[str, Any]]:
    """Results in a ``result.json`` file; malformed lines (a torn last write) are skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _read_last_json_line(path: str, chunk: int = 65536) -> dict[str, Any] | None:
    """The last complete result of a ``result.json`` file, reading only its tail."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        read = min(size, chunk)
        while True:
            f.seek(size - read)
            data = f.read(read)
            lines = data.split(b"\n")
            # The first piece may be a partial line unless we read from the start.
            candidates = lines if read == size else lines[1:]
            for raw in reversed(candidates):
                raw = raw.strip()
                if not raw:
                    continue
                try:
                    row = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(row, dict):
                    return row
            if read == size:
                return None
            read = min(size, read * 4)


def _parse_csv_value(text: str) -> Any:
    if text == "":
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text == "True":
        return True
    if text == "False":
        return False
    return text


def _read_csv_rows(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = []
        for row in reader:
            parsed = {
                k: (v if k == "trial_id" else _parse_csv_value(v))
                for k, v in row.items()
                if k is not None
            }
            rows.append(parsed)
    return rows


def _validate_mode_value(mode: str | None) -> None:
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(f"`mode` must be 'min' or 'max' (got {mode!r}).")


# --------------------------------------------------------------------------- checkpoints


def _scan_checkpoints(trial_dir: str | None) -> list[dict[str, Any]]:
    """The ``checkpoint_<iteration>`` directories in ``trial_dir``, oldest first.

    Only complete checkpoints have that name (they are written under a temporary
    name and renamed), so half-written ones are never listed.
    """
    if not trial_dir:
        return []
    try:
        names = os.listdir(trial_dir)
    except OSError:
        return []
    entries = []
    for name in names:
        match = _CHECKPOINT_DIR.fullmatch(name)
        path = os.path.join(trial_dir, name)
        if match is None or not os.path.isdir(path):
            continue
        iteration = int(match.group(1))
        try:
            with open(os.path.join(path, METADATA_FILE), encoding="utf-8") as f:
                iteration = int(json.load(f).get("iteration", iteration))
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        entries.append({"path": path, "iteration": iteration, "score": None})
    entries.sort(key=lambda e: e["iteration"])
    return entries


def _checkpoint_entries(trial: Any) -> list[dict[str, Any]]:
    """``trial``'s kept checkpoints that exist on disk, oldest first.

    A live trial's come from its ``checkpoint_manager``, a trial read from an
    experiment state from its ``checkpoints`` record; a trial without either is
    searched for checkpoint directories.
    """
    manager = getattr(trial, "checkpoint_manager", None)
    if manager is not None:
        entries = list(manager.entries)
    else:
        recorded = getattr(trial, "checkpoints", None)
        if recorded is None:
            return _scan_checkpoints(getattr(trial, "local_path", None))
        entries = list(recorded)
    kept = []
    for entry in entries:
        if os.path.isdir(entry["path"]):
            kept.append(entry)
        else:
            logger.debug("Checkpoint %s of trial %s is gone; skipped.", entry["path"], trial)
    kept.sort(key=lambda e: e["iteration"])
    return kept


# --------------------------------------------------------------------------- state files


def _read_database(path: str) -> dict[str, Any]:
    """A state database as an experiment-state document, read without changing it."""
    from tunekit_core.state_store import _read, analysis_document

    state = _read(path)
    state["path"] = path
    return analysis_document(state)


def _load_directory_state(directory: str) -> tuple[dict[str, Any] | None, str | None]:
    """The newest readable experiment state of ``directory`` and its path, or (None, None).

    The same choice as ``load_experiment_state(directory)`` (the newest database
    when it is at least as new as the newest JSON snapshot; an unreadable file
    falls back to the database's backup, then to older files), except that
    nothing is renamed or repaired: an analysis may look at a live experiment.
    """
    from tunekit_core.state_store import BACKUP_SUFFIX, find_databases

    databases = find_databases(directory)
    try:
        snapshots = sorted(
            fnmatch.filter(os.listdir(directory), EXPERIMENT_STATE_GLOB), reverse=True
        )
    except OSError:
        snapshots = []
    if databases and (
        not snapshots
        or os.path.basename(databases[0])[: -len(".db")] >= snapshots[0][: -len(".json")]
    ):
        for database in databases:
            for candidate in (database, database + BACKUP_SUFFIX):
                if not os.path.exists(candidate):
                    continue
                try:
                    return _read_database(candidate), candidate
                except (sqlite3.Error, ValueError, OSError) as exc:
                    logger.warning(
                        "The experiment state %s is unreadable (%s); trying the previous copy.",
                        candidate,
                        exc,
                    )
    for name in snapshots:
        candidate = os.path.join(directory, name)
        try:
            return load_experiment_state(candidate), candidate
        except (ValueError, OSError) as exc:
            logger.warning(
                "Experiment state %s is unreadable (%s); using the previous one.", candidate, exc
            )
    return None, None


def _load_state_file(path: str) -> dict[str, Any]:
    """An ``experiment_state-*.json`` file, or a state database (``.db`` / ``.db.bak``)."""
    if path.endswith((".db", ".db.bak")):
        try:
            return _read_database(path)
        except sqlite3.Error as exc:
            raise ValueError(
                f"{path!r} is not a readable tunekit experiment state database ({exc}). Pass the "
                "experiment directory instead: its backup or JSON snapshot is then used."
            ) from None
    return load_experiment_state(path)


# --------------------------------------------------------------------------- analysis


class ExperimentAnalysis:
    """Analyse the trials and results of one experiment.

    Args:
        experiment_checkpoint_path: the experiment directory
            (``<local_dir>/<name>``) or one of its ``experiment_state-*.json``
            files.
        trials: the in-memory trials of a run that just finished (``run``
            passes them). When given, no state file is read.
        default_metric: metric used by the properties (``best_trial`` ...) and
            by methods called without ``metric``.
        default_mode: ``"min"`` or ``"max"``, the default for ``mode``.

    Without ``trials``, the newest ``experiment_state-*.json`` is loaded; if
    the directory has none, every subdirectory holding a ``params.json`` is
    taken as a trial. Trial directories are resolved relative to the given
    directory, so a moved or copied experiment still loads.
    """

    def __init__(
        self,
        experiment_checkpoint_path: str | os.PathLike,
        trials: list[Any] | None = None,
        default_metric: str | None = None,
        default_mode: str | None = None,
    ) -> None:
        if default_mode is not None and default_mode not in ("min", "max"):
            raise ValueError(f"`default_mode` must be None, 'min' or 'max' (got {default_mode!r}).")
        self.default_metric = default_metric
        self.default_mode = default_mode
        if self.default_metric is None and self.default_mode is not None:
            # Only a mode was given: the anonymous metric, as in Ray Tune.
            self.default_metric = DEFAULT_METRIC

        path = os.path.abspath(os.path.expanduser(os.fspath(experiment_checkpoint_path)))
        self._state: dict[str, Any] | None = None
        self._state_path: str | None = None
        if os.path.isdir(path):
            self._experiment_dir = path
        else:
            self._experiment_dir = os.path.dirname(path)
            if path.endswith(".json"):
                self._state_path = path

        if trials is not None:
            self.trials: list[Any] = list(trials)
        else:
            self.trials = self._load_trials(path)

        self._histories: dict[str, list[dict[str, Any]]] = {}
        self._trial_dataframes: dict[str, DataFrame] | None = None

    # ----------------------------------------------------------------- loading

    def _load_trials(self, path: str) -> list[TrialRecord]:
        if os.path.isdir(path):
            state, state_path = _load_directory_state(path)
            if state is None:
                records = self._scan_trial_dirs(path)
                if not records:
                    raise ValueError(
                        f"No trials found in {path!r}: it has no experiment state "
                        "(experiment_state-*.db or .json) and no trial directories with "
                        f"{PARAMS_FILE}. Pass the experiment directory of a tunekit run "
                        "(<local_dir>/<name>)."
                    )
                return records
        elif os.path.isfile(path):
            state_path = path
            state = _load_state_file(path)
        else:
            raise FileNotFoundError(
                f"Experiment path {path!r} does not exist. Pass an experiment directory or "
                "an experiment_state-*.json file."
            )
        self._state_path = state_path
        self._state = state
        return [self._record_from_state(entry) for entry in self._state["trials"]]

    def _resolve(self, relative: str | None, fallback: str | None) -> str | None:
        if relative:
            return os.path.normpath(os.path.join(self._experiment_dir, relative))
        return fallback

    def _record_from_state(self, entry: dict[str, Any]) -> TrialRecord:
        return TrialRecord(
            trial_id=entry.get("trial_id"),
            trainable_name=entry.get("trainable_name"),
            experiment_tag=entry.get("experiment_tag"),
            config=entry.get("config"),
            evaluated_params=entry.get("evaluated_params"),
            status=entry.get("status"),
            last_result=entry.get("last_result"),
            local_path=self._resolve(entry.get("relative_logdir"), entry.get("local_path")),
            error_file=self._resolve(entry.get("error_file"), None),
            error_msg=entry.get("error_msg"),
            num_failures=entry.get("num_failures") or 0,
            custom_trial_name=entry.get("custom_trial_name"),
            checkpoints=self._resolve_checkpoints(entry.get("checkpoints")),
        )

    def _resolve_checkpoints(self, recorded: Any) -> list[dict[str, Any]] | None:
        """A record's checkpoints with paths resolved against this experiment directory."""
        if not isinstance(recorded, list):
            return None  # a JSON snapshot does not list them: the trial directory is searched
        entries = []
        for entry in recorded:
            if not isinstance(entry, dict) or not entry.get("path"):
                continue
            entries.append({**entry, "path": self._resolve(entry["path"], None)})
        return entries

    def _scan_trial_dirs(self, root: str) -> list[TrialRecord]:
        records = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            if PARAMS_FILE not in filenames or dirpath == root:
                continue
            dirnames[:] = []  # a trial directory holds no further trials
            records.append(self._record_from_dir(dirpath, set(filenames)))
        return records

    def _record_from_dir(self, trial_dir: str, filenames: set[str]) -> TrialRecord:
        try:
            with open(os.path.join(trial_dir, PARAMS_FILE), encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("Could not read %s in %s: %s", PARAMS_FILE, trial_dir, exc)
            config = {}
        last_result: dict[str, Any] | None = None
        if RESULT_FILE in filenames:
            last_result = _read_last_json_line(os.path.join(trial_dir, RESULT_FILE))
        if last_result is None and PROGRESS_FILE in filenames:
            rows = _read_csv_rows(os.path.join(trial_dir, PROGRESS_FILE))
            last_result = rows[-1] if rows else None
        last_result = last_result or {}
        name = os.path.basename(trial_dir)
        trial_id = last_result.get("trial_id") or name
        error_file = None
        if ERROR_FILE in filenames:
            error_file = os.path.join(trial_dir, ERROR_FILE)
            status = "ERROR"
        elif last_result.get("done"):
            status = "TERMINATED"
        else:
            status = TrialRecord.UNKNOWN
        return TrialRecord(
            trial_id=str(trial_id),
            experiment_tag=last_result.get("experiment_tag"),
            config=config if isinstance(config, dict) else {},
            status=status,
            last_result=last_result,
            local_path=trial_dir,
            error_file=error_file,
            custom_trial_name=name,
        )

    # ----------------------------------------------------------------- basics

    @property
    def experiment_path(self) -> str:
        """The experiment directory."""
        return self._experiment_dir

    @property
    def experiment_state_path(self) -> str | None:
        """The experiment-state file this analysis refers to, if any."""
        return self._state_path

    def runner_data(self) -> dict[str, Any]:
        """The run loop's data saved in the experiment state (``{}`` if there is none)."""
        if self._state is None:
            if self._state_path is not None and os.path.exists(self._state_path):
                self._state = _load_state_file(self._state_path)
            else:
                state, _ = _load_directory_state(self._experiment_dir)
                if state is None:
                    return {}
                self._state = state
        return dict(self._state.get("runner_data") or {})

    def _validate_metric(self, metric: str | None) -> str:
        if not metric and not self.default_metric:
            raise ValueError(
                "No `metric` was passed and no `default_metric` is set. Pass `metric=...` "
                "here, or pass `metric` to `run()`."
            )
        return metric or self.default_metric

    def _validate_mode(self, mode: str | None) -> str:
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max' (got {mode!r}).")
        if not mode and not self.default_mode:
            raise ValueError(
                "No `mode` was passed and no `default_mode` is set. Pass `mode='min'` or "
                "`mode='max'` here, or pass `mode` to `run()`."
            )
        return mode or self.default_mode

    def _require_defaults(self, what: str, alternative: str) -> None:
        if not self.default_metric or not self.default_mode:
            raise ValueError(
                f"To fetch `{what}`, pass `metric` and `mode` to `run()` (or "
                f"`default_metric`/`default_mode` to ExperimentAnalysis). Alternatively call "
                f"`{alternative}` with the metric and mode explicitly."
            )

    # ----------------------------------------------------------------- histories

    def _history(self, trial: Any) -> list[dict[str, Any]]:
        """All results of ``trial`` (raw dicts), read lazily from its directory."""
        key = trial.trial_id
        rows = self._histories.get(key)
        if rows is not None:
            return rows
        rows = []
        logdir = getattr(trial, "local_path", None)
        source = None
        if logdir:
            json_path = os.path.join(logdir, RESULT_FILE)
            csv_path = os.path.join(logdir, PROGRESS_FILE)
            try:
                rows = _read_json_lines(json_path)
                source = json_path
            except FileNotFoundError:
                try:
                    rows = _read_csv_rows(csv_path)
                    source = csv_path
                except FileNotFoundError:
                    pass
        if source is None:
            last = getattr(trial, "last_result", None)
            if last:
                logger.warning(
                    "No %s or %s for trial %s in %r; using only its last result.",
                    RESULT_FILE,
                    PROGRESS_FILE,
                    trial,
                    logdir,
                )
                rows = [last]
        self._histories[key] = rows
        return rows

    def _metric_values(self, trial: Any, metric: str) -> list[float]:
        values = []
        for row in self._history(trial):
            number = _as_number(lookup(row, metric, _MISSING))
            if number is not None:
                values.append(number)
        return values

    def _score(self, trial: Any, metric: str, mode: str, scope: str) -> float | None:
        """The trial's score for ``metric`` in ``scope``; None if it never reported it."""
        if scope == "last":
            last = getattr(trial, "last_result", None) or {}
            number = _as_number(lookup(last, metric, _MISSING))
            if number is not None:
                return number
            values = self._metric_values(trial, metric) if last else []
            return values[-1] if values else None
        values = self._metric_values(trial, metric)
        if not values:
            return None
        if scope == "all":
            finite = [v for v in values if not math.isnan(v)]
            if not finite:
                return math.nan
            return max(finite) if mode == "max" else min(finite)
        if scope == "avg":
            window = values
        elif scope == "last-5-avg":
            window = values[-5:]
        else:  # last-10-avg
            window = values[-10:]
        return math.fsum(window) / len(window)

    # ----------------------------------------------------------------- best trial

    def get_best_trial(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> Any | None:
        """The best trial by ``metric`` and ``mode``.

        ``scope`` says which of each trial's values of ``metric`` is compared:
        ``"last"`` (the last reported value), ``"avg"`` (mean of all values),
        ``"last-5-avg"``/``"last-10-avg"`` (mean of the last 5 / 10 values), or
        ``"all"`` (the best value ever reported: max for ``mode="max"``, min
        for ``"min"``). Trials whose score is NaN or infinite are skipped
        unless ``filter_nan_and_inf`` is False. Returns None (with a warning)
        when every score was filtered out.

        Raises ``ValueError`` for a missing metric/mode, a mode other than
        ``"min"``/``"max"``, an unknown scope, or a metric no trial reported.
        """
        metric = self._validate_metric(metric)
        mode = self._validate_mode(mode)
        if scope not in _SCOPES:
            raise ValueError(f"`scope` must be one of {list(_SCOPES)} (got {scope!r}).")
        best_trial = None
        best_score: float | None = None
        reported = False
        for trial in self.trials:
            score = self._score(trial, metric, mode, scope)
            if score is None:
                continue
            reported = True
            if filter_nan_and_inf and _is_nan_or_inf(score):
                continue
            if best_score is None or math.isnan(best_score):
                best_score, best_trial = score, trial
            elif mode == "max" and score > best_score:
                best_score, best_trial = score, trial
            elif mode == "min" and score < best_score:
                best_score, best_trial = score, trial
        if not reported:
            raise ValueError(
                f"No trial reported the metric {metric!r}. Reported result keys: "
                f"{_reported_keys(self.trials)}. Pass one of these as `metric`."
            )
        if best_trial is None:
            logger.warning(
                "Could not find a best trial for metric %r: every trial's %s score is NaN or "
                "infinite. Pass filter_nan_and_inf=False to compare them anyway.",
                metric,
                scope,
            )
        return best_trial

    def get_best_config(
        self, metric: str | None = None, mode: str | None = None, scope: str = "last"
    ) -> dict[str, Any] | None:
        """The config of ``get_best_trial(metric, mode, scope)`` (None if there is none)."""
        trial = self.get_best_trial(metric, mode, scope)
        return trial.config if trial is not None else None

    def get_best_logdir(
        self, metric: str | None = None, mode: str | None = None, scope: str = "last"
    ) -> str | None:
        """The directory of ``get_best_trial(metric, mode, scope)`` (None if there is none)."""
        trial = self.get_best_trial(metric, mode, scope)
        return trial.local_path if trial is not None else None

    @property
    def best_trial(self) -> Any:
        """The best trial by the last results, using ``default_metric``/``default_mode``."""
        self._require_defaults("best_trial", "get_best_trial(metric, mode)")
        return self.get_best_trial(self.default_metric, self.default_mode)

    @property
    def best_config(self) -> dict[str, Any] | None:
        """The config of ``best_trial``."""
        self._require_defaults("best_config", "get_best_config(metric, mode)")
        return self.get_best_config(self.default_metric, self.default_mode)

    @property
    def best_logdir(self) -> str | None:
        """The directory of ``best_trial``."""
        self._require_defaults("best_logdir", "get_best_logdir(metric, mode)")
        return self.get_best_logdir(self.default_metric, self.default_mode)

    @property
    def best_result(self) -> dict[str, Any]:
        """The last result of ``best_trial``."""
        self._require_defaults("best_result", "get_best_trial(metric, mode).last_result")
        trial = self.best_trial
        return trial.last_result if trial is not None else None

    @property
    def best_result_df(self) -> DataFrame:
        """``best_result`` flattened into a one-row DataFrame indexed by trial_id."""
        import pandas as pd

        self._require_defaults("best_result_df", "get_best_trial(metric, mode).last_result")
        trial = self.best_trial
        row = _flatten(trial.last_result or {}) if trial is not None else {}
        if trial is not None:
            row.setdefault("trial_id", trial.trial_id)
        return pd.DataFrame.from_records([row], index="trial_id")

    @property
    def best_dataframe(self) -> DataFrame:
        """The full result history (DataFrame) of ``best_trial``."""
        self._require_defaults("best_dataframe", "get_best_trial(metric, mode)")
        trial = self.best_trial
        if trial is None:
            raise ValueError(
                f"No best trial for metric {self.default_metric!r}: every score is NaN or infinite."
            )
        return self._trial_dataframe(trial)

    # ----------------------------------------------------------------- checkpoints

    def _trial_of(self, trial: Any) -> Any:
        """``trial`` itself, or the trial whose directory ``trial`` names."""
        if isinstance(trial, (str, os.PathLike)):
            path = os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(trial))))
            for candidate in self.trials:
                local = getattr(candidate, "local_path", None)
                if local and os.path.normpath(os.path.abspath(local)) == path:
                    return candidate
            if os.path.isdir(path):
                return self._record_from_dir(path, set(os.listdir(path)))
            raise ValueError(
                f"{path!r} is not a trial directory of this experiment ({self._experiment_dir}) "
                "and does not exist. Pass a trial from `analysis.trials` or an existing trial "
                "directory."
            )
        if trial is None or not hasattr(trial, "trial_id"):
            raise ValueError(
                f"`trial` must be a trial (e.g. from `analysis.trials` or `get_best_trial()`) or "
                f"the path of a trial directory; got {trial!r}."
            )
        return trial

    def _rows_by_iteration(self, trial: Any) -> dict[int, Mapping[str, Any]]:
        rows: dict[int, Mapping[str, Any]] = {}
        for row in self._history(trial):
            iteration = _as_number(row.get(_TRAINING_ITERATION))
            if iteration is not None:
                rows[int(iteration)] = row  # a repeated iteration: the later row wins
        last = getattr(trial, "last_result", None) or {}
        iteration = _as_number(last.get(_TRAINING_ITERATION))
        if iteration is not None:
            rows.setdefault(int(iteration), last)
        return rows

    def get_trial_checkpoints_paths(
        self, trial: Any, metric: str | None = None
    ) -> list[tuple[str, Any]]:
        """The kept checkpoints of ``trial`` as ``(path, value of metric)`` pairs, oldest first.

        ``trial`` is a trial of this analysis or the path of a trial directory.
        The value is the one ``trial`` reported at the checkpoint's iteration
        (its row in ``result.json``, else ``progress.csv``, read lazily); ``None``
        when that row is unknown or lacks ``metric``. ``metric`` defaults to
        ``default_metric``, then ``"training_iteration"``; nested keys are
        written ``"a/b"``. A trial without checkpoints gives ``[]``.
        """
        trial = self._trial_of(trial)
        metric = metric or self.default_metric or _TRAINING_ITERATION
        entries = _checkpoint_entries(trial)
        if not entries:
            return []
        rows = self._rows_by_iteration(trial)
        pairs = []
        for entry in entries:
            row = rows.get(entry["iteration"])
            value = lookup(row, metric, _MISSING) if row is not None else _MISSING
            pairs.append((entry["path"], None if value is _MISSING else value))
        return pairs

    def get_best_checkpoint(
        self, trial: Any, metric: str | None = None, mode: str | None = None
    ) -> Checkpoint | None:
        """The checkpoint of ``trial`` with the best ``metric`` value, or None.

        Compares the values of :meth:`get_trial_checkpoints_paths`: the highest
        for ``mode="max"``, the lowest for ``"min"`` (the earliest checkpoint on a
        tie); NaN values are skipped. ``metric`` defaults to ``default_metric``,
        then ``"training_iteration"``; ``mode`` to ``default_mode`` (one of them
        is required). Returns a :class:`tunekit.Checkpoint`, which is
        ``os.PathLike``: ``os.path.join(checkpoint, "model.pt")`` works. Returns
        None, with a warning, when the trial has no checkpoint or none with a
        value. Raises ``ValueError`` when the trial did not report ``metric`` at
        any of its checkpoints' iterations.
        """
        trial = self._trial_of(trial)
        metric = metric or self.default_metric or _TRAINING_ITERATION
        mode = self._validate_mode(mode)
        pairs = self.get_trial_checkpoints_paths(trial, metric)
        if not pairs:
            logger.warning("Trial %s has no checkpoints.", trial)
            return None
        scored = []
        for path, value in pairs:
            number = _as_number(value)
            if number is not None and not math.isnan(number):
                scored.append((path, number))
        if not scored:
            rows = self._rows_by_iteration(trial)
            at_checkpoints = [
                rows[e["iteration"]] for e in _checkpoint_entries(trial) if e["iteration"] in rows
            ]
            if at_checkpoints and all(lookup(r, metric, _MISSING) is _MISSING for r in at_checkpoints):
                raise ValueError(
                    f"Trial {trial} did not report the metric {metric!r} at any of its "
                    f"checkpoints' iterations. Reported keys: {_reported_keys([trial])}. Pass one "
                    "of these as `metric`."
                )
            logger.warning(
                "Trial %s has %d checkpoint(s), but none with a numeric, non-NaN %r in its "
                "results; no best checkpoint.",
                trial,
                len(pairs),
                metric,
            )
            return None
        best_path, best_value = scored[0]
        for path, value in scored[1:]:
            if (mode == "max" and value > best_value) or (mode == "min" and value < best_value):
                best_path, best_value = path, value
        return Checkpoint(best_path)

    def get_last_checkpoint(
        self, trial: Any = None, metric: str = _TRAINING_ITERATION, mode: str = "max"
    ) -> Checkpoint | None:
        """The latest kept checkpoint (highest training iteration) of a trial, or None.

        Of ``trial`` if given; otherwise of ``get_best_trial(metric, mode)``,
        which by default is the trial that trained longest. Returns a
        :class:`tunekit.Checkpoint`, or None when that trial has no checkpoint.
        """
        if trial is None:
            trial = self.get_best_trial(metric, mode)
            if trial is None:
                return None
        trial = self._trial_of(trial)
        entries = _checkpoint_entries(trial)
        if not entries:
            logger.warning("Trial %s has no checkpoints.", trial)
            return None
        return Checkpoint(entries[-1]["path"])

    @property
    def best_checkpoint(self) -> Checkpoint | None:
        """The best checkpoint of ``best_trial`` by ``default_metric``/``default_mode``.

        That is ``get_best_checkpoint(best_trial, default_metric, default_mode)``;
        None if the best trial has no checkpoint.
        """
        self._require_defaults("best_checkpoint", "get_best_checkpoint(trial, metric, mode)")
        trial = self.best_trial
        if trial is None:
            return None
        return self.get_best_checkpoint(trial, self.default_metric, self.default_mode)

    # ----------------------------------------------------------------- results

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        """The last result of every trial, by trial_id."""
        return {t.trial_id: t.last_result for t in self.trials}

    @property
    def results_df(self) -> DataFrame:
        """The last results as a DataFrame: one row per trial, flattened with "/",
        indexed by trial_id."""
        import pandas as pd

        rows = []
        for t in self.trials:
            row = _flatten(t.last_result or {})
            row["trial_id"] = t.trial_id
            rows.append(row)
        if not rows:
            return pd.DataFrame(index=pd.Index([], name="trial_id"))
        return pd.DataFrame.from_records(rows, index="trial_id")

    def get_all_configs(self, prefix: bool = False) -> dict[str, dict[str, Any]]:
        """Every trial's config, by trial directory.

        With ``prefix=True`` each config is flattened with "/" and its keys
        start with ``"config/"`` (the column names of ``dataframe()``).
        """
        configs = {}
        for t in self.trials:
            if not getattr(t, "local_path", None):
                continue  # never started: no directory
            config = t.config or {}
            configs[t.local_path] = _flatten(config, "config/") if prefix else config
        return configs

    def dataframe(self, metric: str | None = None, mode: str | None = None) -> DataFrame:
        """One row per trial, with its config (``config/...``) and ``logdir`` columns.

        Without ``mode`` each row is the trial's last result. With ``metric``
        and ``mode`` it is the trial's best result: the row of its history with
        the highest (``"max"``) or lowest (``"min"``) value of ``metric``.
        ``default_metric``/``default_mode`` are deliberately not used here: the
        best row is not the last one. Trials that reported nothing are left out.
        """
        import pandas as pd

        _validate_mode_value(mode)
        if mode and not metric:
            raise ValueError(
                "`dataframe()` got a `mode` but no `metric`. Pass the metric to pick the "
                "best result by, e.g. dataframe(metric='loss', mode='min')."
            )
        rows = []
        if mode:
            if not any(self._metric_values(t, metric) for t in self.trials):
                raise ValueError(
                    f"No trial reported the metric {metric!r}. Reported result keys: "
                    f"{_reported_keys(self.trials)}."
                )
        for t in self.trials:
            if mode:
                chosen = None
                chosen_value = None
                for row in self._history(t):
                    value = _as_number(lookup(row, metric, _MISSING))
                    if value is None or math.isnan(value):
                        continue
                    if (
                        chosen_value is None
                        or (mode == "max" and value > chosen_value)
                        or (mode == "min" and value < chosen_value)
                    ):
                        chosen, chosen_value = row, value
                if chosen is None:
                    continue
            else:
                chosen = t.last_result
                if not chosen:
                    continue
            flat = _flatten(chosen)
            flat.update(_flatten(t.config or {}, "config/"))
            flat["logdir"] = t.local_path
            rows.append(flat)
        return pd.DataFrame(rows)

    # ----------------------------------------------------------------- dataframes

    def _trial_dataframe(self, trial: Any) -> DataFrame:
        frames = self.trial_dataframes
        frame = frames.get(trial.local_path)
        if frame is None:
            frame = self._load_dataframe(trial)
        return frame

    def _load_dataframe(self, trial: Any) -> DataFrame:
        import pandas as pd

        logdir = getattr(trial, "local_path", None)
        if not logdir:
            return pd.DataFrame()
        json_path = os.path.join(logdir, RESULT_FILE)
        if os.path.exists(json_path):
            rows = self._histories.get(trial.trial_id)
            if rows is None:
                rows = _read_json_lines(json_path)
                self._histories[trial.trial_id] = rows
            return pd.DataFrame([_flatten(r) for r in rows])
        csv_path = os.path.join(logdir, PROGRESS_FILE)
        if os.path.exists(csv_path):
            try:
                return pd.read_csv(csv_path, dtype={"trial_id": str})
            except pd.errors.EmptyDataError:
                return pd.DataFrame()
        if getattr(trial, "last_result", None):
            logger.warning(
                "No %s or %s for trial %s in %r.", RESULT_FILE, PROGRESS_FILE, trial, logdir
            )
        return pd.DataFrame()

    def fetch_trial_dataframes(self) -> dict[str, DataFrame]:
        """(Re-)read every trial's result history: ``{trial directory: DataFrame}``.

        Each DataFrame has one row per result, nested keys flattened with "/",
        read from ``result.json`` (or ``progress.csv`` when there is no
        ``result.json``). Trials without results get an empty DataFrame.
        """
        self._histories.clear()
        frames = {}
        for t in self.trials:
            if getattr(t, "local_path", None):
                frames[t.local_path] = self._load_dataframe(t)
        self._trial_dataframes = frames
        return frames

    @property
    def trial_dataframes(self) -> dict[str, DataFrame]:
        """Every trial's result history, ``{trial directory: DataFrame}`` (read once)."""
        if self._trial_dataframes is None:
            frames = {}
            for t in self.trials:
                if getattr(t, "local_path", None):
                    frames[t.local_path] = self._load_dataframe(t)
            self._trial_dataframes = frames
        return self._trial_dataframes

    def get_trial_dataframes(self) -> dict[str, DataFrame]:
        """Same as ``trial_dataframes``."""
        return self.trial_dataframes

    def __repr__(self) -> str:
        return (
            f"ExperimentAnalysis({self._experiment_dir!r}, {len(self.trials)} trials, "
            f"default_metric={self.default_metric!r}, default_mode={self.default_mode!r})"
        )
