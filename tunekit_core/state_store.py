"""The experiment state database: what a resumed run needs, saved as it changes.

``experiment_state-<timestamp>.db`` is an SQLite database beside the familiar
``experiment_state-<timestamp>.json`` snapshot. Why SQLite: a save writes only the
trials that changed since the previous save (an upsert per changed row), in one
transaction that is atomic on disk, so its cost does not grow with the number of
trials and a driver killed mid-save leaves the previous state intact. It ships
with Python, and any SQLite tool can read it.

Tables: ``trials(trial_id, seq, data, config)`` with ``data`` the trial's JSON
record and ``config`` its pickled config (rewritten only when the config object
changes), ``kv(key, value)`` for the run loop's counters and the searchers'
and scheduler's saved state, and ``searcher_log(source, seq, entry)``: for a searcher
served from its own process, each call it made after its saved state (a pickled
``(name, args, kwargs)``), written once, as it happens, and deleted when a newer state
holds it (see ``searcher_process``). A periodic online backup (``.db.bak``) is the
fallback if the database is ever unreadable.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sqlite3
import time
from typing import Any

from .experiment_state import to_json_safe

logger = logging.getLogger("tunekit")

DB_PREFIX = "experiment_state-"
DB_SUFFIX = ".db"
BACKUP_SUFFIX = ".bak"
FORMAT = "tunekit-experiment-db/1"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS trials ("
    " trial_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, data TEXT NOT NULL, config BLOB)",
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB)",
    "CREATE TABLE IF NOT EXISTS searcher_log ("
    " source INTEGER NOT NULL, seq INTEGER NOT NULL, entry BLOB NOT NULL,"
    " PRIMARY KEY (source, seq))",
)


def db_filename(timestamp_str: str) -> str:
    return f"{DB_PREFIX}{timestamp_str}{DB_SUFFIX}"


def _relative(path: str | None, experiment_dir: str) -> str | None:
    if not path:
        return None
    try:
        rel = os.path.relpath(path, experiment_dir)
    except ValueError:
        return path
    return path if rel.startswith(os.pardir) else rel


_PLAIN_TYPES = frozenset((str, int, float, bool, type(None)))


def _json_ready(value: Any) -> bool:
    """Whether ``json.dumps`` writes ``value`` exactly as it writes ``to_json_safe(value)``:
    only plain values, lists and tuples, and dicts with string keys (checked without copying)."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not (type(item) in _PLAIN_TYPES or _json_ready(item)):
                return False
        return True
    if kind is list or kind is tuple:
        return all(type(item) in _PLAIN_TYPES or _json_ready(item) for item in value)
    return False


def _json_safe(value: Any) -> Any:
    return value if _json_ready(value) else to_json_safe(value)


def trial_record(trial: Any, experiment_dir: str) -> dict[str, Any]:
    """The JSON record of ``trial`` (what a resume and ExperimentAnalysis need)."""
    pgf = trial.placement_group_factory
    record = {
        "trial_id": trial.trial_id,
        "trainable_name": trial.trainable_name,
        "experiment_name": trial.experiment_name,
        "experiment_tag": trial.experiment_tag,
        "evaluated_params": _json_safe(trial.evaluated_params),
        "config": _json_safe(trial.config),
        "status": trial.status,
        "status_history": [list(step) for step in trial.status_history],
        "local_path": trial.local_path,
        "relative_logdir": _relative(trial.local_path, experiment_dir),
        "last_result": _json_safe(trial.last_result),
        "results_seen": trial.results_seen,
        "error_file": _relative(trial.error_file, experiment_dir),
        "error_msg": trial.error_msg,
        "num_failures": trial.num_failures,
        "custom_trial_name": trial.custom_trial_name,
        "source_index": getattr(trial, "_source_index", 0),
        "restore_path": trial.restore_path,
        "resources": {"bundles": pgf.bundles, "strategy": pgf.strategy},
        "checkpoints": [
            {**entry, "path": _relative(entry["path"], experiment_dir)}
            for entry in trial.checkpoint_manager.to_state()
        ],
    }
    if getattr(getattr(trial, "_source", None), "added_to", None) is not None:
        record["added_by_api"] = True  # resumed with a no-op searcher, as it ran
    return record


class StateStore:
    """Writes the experiment state database of one run."""

    def __init__(self, experiment_dir: str, timestamp_str: str, path: str | None = None):
        self.experiment_dir = experiment_dir
        self.path = path or os.path.join(experiment_dir, db_filename(timestamp_str))
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        # Writes touch recent rows only: a small page cache keeps the driver's memory flat
        # as the experiment grows (SQLite's default would grow to ~2 MB).
        self._conn.execute("PRAGMA cache_size=-256")
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._conn.execute(
            "INSERT OR IGNORE INTO kv(key, value) VALUES ('format', ?)", (FORMAT,)
        )
        self._configs: dict[str, int] = {}  # trial_id -> id() of the config last written
        self._next_seq = 0
        self._last_backup = time.monotonic()

    def save(
        self,
        trials: list[Any],
        kv: dict[str, Any] | None = None,
        log_rows: list[tuple[int, int, bytes]] = (),
        log_trim: dict[int, int | None] | None = None,
    ) -> None:
        """Write ``trials`` (those that changed), ``kv`` entries and searcher-log rows in one
        transaction. ``log_trim`` (source -> seq, None for all) first deletes the log rows
        a new saved searcher state holds; ``log_rows`` are ``(source, seq, entry)``."""
        rows_full = []
        rows_data = []
        for trial in trials:
            data = json.dumps(trial_record(trial, self.experiment_dir))
            known = self._configs.get(trial.trial_id)
            if known != id(trial.config):
                if known is None:
                    self._next_seq += 1  # a new row: its position in the experiment
                rows_full.append((trial.trial_id, self._next_seq, data, _pickle(trial.config)))
                self._configs[trial.trial_id] = id(trial.config)
            else:
                rows_data.append((data, trial.trial_id))
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if rows_full:
                conn.executemany(
                    "INSERT INTO trials(trial_id, seq, data, config) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(trial_id) DO UPDATE SET data=excluded.data, config=excluded.config",
                    # (seq stays: an existing row keeps its position)
                    rows_full,
                )
            if rows_data:
                conn.executemany("UPDATE trials SET data=? WHERE trial_id=?", rows_data)
            if kv:
                conn.executemany(
                    "INSERT INTO kv(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    list(kv.items()),
                )
            for source, upto in (log_trim or {}).items():
                if upto is None:
                    conn.execute("DELETE FROM searcher_log WHERE source=?", (source,))
                else:
                    conn.execute("DELETE FROM searcher_log WHERE source=? AND seq<=?", (source, upto))
            if log_rows:
                conn.executemany("INSERT OR REPLACE INTO searcher_log VALUES (?, ?, ?)", log_rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def adopt(self, records: list[dict[str, Any]]) -> None:
        """Continue a resumed database: new rows go after the stored ones."""
        self._next_seq = max((r["seq"] for r in records), default=0)

    def remember_config(self, trial: Any) -> None:
        self._configs[trial.trial_id] = id(trial.config)

    def maybe_backup(self, period_s: float, force: bool = False) -> None:
        """Copy the database to ``.bak`` (an online backup) every ``period_s`` seconds."""
        now = time.monotonic()
        if not force and now - self._last_backup < period_s:
            return
        self._last_backup = now
        tmp = f"{self.path}{BACKUP_SUFFIX}.tmp"
        try:
            target = sqlite3.connect(tmp)
            target.execute("PRAGMA cache_size=-256")
            with target:
                self._conn.backup(target, pages=256)
            target.close()
            os.replace(tmp, self.path + BACKUP_SUFFIX)
        except (sqlite3.Error, OSError) as exc:
            logger.warning("Could not back up the experiment state to %s: %s", tmp, exc)

    def close(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._conn.close()


def _pickle(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def find_databases(experiment_dir: str) -> list[str]:
    """The state databases in ``experiment_dir``, newest first."""
    try:
        names = os.listdir(experiment_dir)
    except OSError:
        return []
    found = sorted(
        (n for n in names if n.startswith(DB_PREFIX) and n.endswith(DB_SUFFIX)), reverse=True
    )
    return [os.path.join(experiment_dir, n) for n in found]


def _read(path: str) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA quick_check").fetchone()
        kv = dict(conn.execute("SELECT key, value FROM kv").fetchall())
        if kv.get("format") != FORMAT:
            raise sqlite3.DatabaseError(f"not a tunekit state database (format {kv.get('format')!r})")
        records = []
        for seq, data, config in conn.execute("SELECT seq, data, config FROM trials ORDER BY seq"):
            record = json.loads(data)
            record["seq"] = seq
            record["config_blob"] = config
            records.append(record)
        logs: dict[int, list[bytes]] = {}
        has_log = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='searcher_log'"
        ).fetchone()
        if has_log:  # (a database written before the table existed has none)
            rows = conn.execute("SELECT source, entry FROM searcher_log ORDER BY source, seq")
            for source, entry in rows:
                logs.setdefault(source, []).append(entry)
    finally:
        conn.close()
    return {"path": path, "kv": kv, "trials": records, "searcher_logs": logs}


def load_database(experiment_dir: str) -> dict[str, Any] | None:
    """The newest readable state database of ``experiment_dir`` (or its backup), or None.

    An unreadable database falls back to its backup, then to an older database,
    each time with a warning naming what was skipped.
    """
    for path in find_databases(experiment_dir):
        for candidate in (path, path + BACKUP_SUFFIX):
            if not os.path.exists(candidate):
                continue
            try:
                state = _read(candidate)
            except (sqlite3.Error, ValueError, OSError) as exc:
                logger.warning(
                    "The experiment state %s is unreadable (%s); falling back to the previous good "
                    "copy.",
                    candidate,
                    exc,
                )
                continue
            if candidate != path:
                # Continue from the backup: it replaces the unreadable database, which is
                # kept aside for inspection.
                import shutil

                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(path + suffix):
                        os.replace(path + suffix, f"{path}.corrupt{suffix}")
                shutil.copyfile(candidate, path)
                state["path"] = path
                state["recovered_from"] = candidate
            return state
    return None


def analysis_document(state: dict[str, Any]) -> dict[str, Any]:
    """A database state in the shape of an ``experiment_state-*.json`` document."""
    kv = state["kv"]
    runner_data = {}
    if "runner_data" in kv:
        try:
            runner_data = json.loads(kv["runner_data"])
        except (TypeError, ValueError):
            runner_data = {}
    trials = []
    for record in state["trials"]:
        entry = {k: v for k, v in record.items() if k not in ("config_blob", "seq")}
        trials.append(entry)
    return {
        "format": "tunekit-experiment-state/1",
        "timestamp": os.path.getmtime(state["path"]) if os.path.exists(state["path"]) else time.time(),
        "runner_data": runner_data,
        "trials": trials,
    }
