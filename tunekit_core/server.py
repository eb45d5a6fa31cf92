"""The control server: a JSON API over a run's trials, and the live dashboard.

``run(server_port=PORT)`` starts one beside the run loop (:func:`start_run_server`);
``tunekit dashboard DIR`` serves a read-only one over an experiment directory
(:func:`serve_directory`). Both are a stdlib ``ThreadingHTTPServer`` in a daemon
thread.

The API has the shape of Ray Tune's ``TuneServer`` (``GET /trials``, ``GET
/trials/<id>``, ``POST /trials``, ``PUT /trials/<id>``, ``PUT /stop_experiment``),
with plain JSON configs and results instead of hex-encoded cloudpickle. The
dashboard page reads ``/api/experiment``, ``/api/trials/<id>/history`` and
``/api/best``.

Changes to the run (add, stop, stop the experiment) never touch the run loop's
state from an HTTP thread: they go through a :class:`CommandQueue` that the loop
drains at the start of each step (woken with ``executor.wakeup()``), and the
request waits, bounded, for the outcome. Reads take a snapshot of trial fields.

Security: the default host is 127.0.0.1. Any other address needs a token
(``Authorization: Bearer <token>``, or ``?token=`` on GET requests such as the page
itself); without one the server refuses to start. A loopback server without a
token accepts only requests whose ``Host`` names a loopback address (no DNS
rebinding) and, for changes, no foreign ``Origin`` and a JSON body (no
cross-site form posts).
"""

from __future__ import annotations

import collections
import gzip
import hmac
import html
import ipaddress
import json
import logging
import math
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .space import lookup

logger = logging.getLogger("tunekit")

__all__ = [
    "ApiError",
    "CommandQueue",
    "ControlServer",
    "DirectoryBackend",
    "RunBackend",
    "check_server_settings",
    "is_loopback",
    "serve_directory",
    "start_run_server",
]

DEFAULT_HOST = "127.0.0.1"
HOST_ENV = "TUNEKIT_SERVER_HOST"
TOKEN_ENV = "TUNEKIT_SERVER_TOKEN"

_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard")
_STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_MAX_BODY = 1 << 20
_COMMAND_TIMEOUT_S = 30.0
_FINISHED = ("TERMINATED", "ERROR")
_AUTO_KEYS = frozenset(
    {"training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "pid",
     "iterations_since_restore", "time_since_restore", "timesteps_since_restore"}
)
_NOT_METRICS = frozenset({"pid", "timestamp"})
_HISTORY_AXES = ("training_iteration", "time_total_s", "timestamp")
_INSTALL_HINT = (
    "The dashboard's charts need plotly: pip install tunekit[dashboard] (or pip install "
    "plotly)."
)


class ApiError(Exception):
    """A request the server answers with ``status`` and a JSON ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- settings


def is_loopback(host: str) -> bool:
    """True if ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_server_settings(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a token."""
    if not host:
        raise ValueError("The control server's host is empty; leave it unset for 127.0.0.1.")
    if not is_loopback(host) and not token:
        raise ValueError(
            f"The tunekit control server would listen on {host!r}, which other machines can "
            f"reach, without a token. Set {TOKEN_ENV} (or pass --token) to a secret that "
            f"every request must carry, or listen on 127.0.0.1 (unset {HOST_ENV})."
        )


def settings_from_env() -> tuple[str, str | None]:
    """``(host, token)`` from ``TUNEKIT_SERVER_HOST`` and ``TUNEKIT_SERVER_TOKEN``."""
    host = os.environ.get(HOST_ENV) or DEFAULT_HOST
    token = os.environ.get(TOKEN_ENV) or None
    check_server_settings(host, token)
    return host, token


# --------------------------------------------------------------------------- JSON


def plain(value: Any) -> Any:
    """``value`` as strict JSON data: NaN and infinities become null, numpy values
    Python numbers, tuples lists, other objects their ``str``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in list(value.items())}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in list(value)]
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if tolist is not None and type(value).__module__.startswith("numpy"):
        return plain(tolist())
    return str(value)


def _snapshot(value: Any) -> Any:
    """:func:`plain` of a structure another thread may be changing (retried)."""
    for _ in range(5):
        try:
            return plain(value)
        except RuntimeError:  # "dictionary changed size during iteration"
            time.sleep(0.001)
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if type(value).__module__.startswith("numpy"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None
    return None


def numeric_fields(result: dict, prefix: str = "", out: dict | None = None) -> dict:
    """The finite numbers of a result, nested dicts flattened to ``"a/b"``; no config."""
    if out is None:
        out = {}
    for key, value in list(result.items()):
        if not prefix and key == "config":
            continue
        if isinstance(value, dict):
            numeric_fields(value, f"{prefix}{key}/", out)
            continue
        number = _number(value)
        if number is not None:
            out[f"{prefix}{key}"] = number
    return out


def _flat_params(trial: Any) -> dict:
    """The searched parameters of a trial (its whole flattened config if none were)."""
    params = getattr(trial, "evaluated_params", None) or {}
    if not params:
        params = {}
        _flatten_config(getattr(trial, "config", None) or {}, "", params)
    return {str(k): plain(v) if isinstance(v, (str, bool, int, float)) or v is None else str(v)
            for k, v in list(params.items())}


def _flatten_config(config: dict, prefix: str, out: dict) -> None:
    for key, value in list(config.items()):
        if isinstance(value, dict):
            _flatten_config(value, f"{prefix}{key}/", out)
        elif isinstance(value, (str, bool, int, float)) or value is None:
            out[f"{prefix}{key}"] = value


def trial_info(trial: Any) -> dict:
    """The API's description of one trial (a live ``Trial`` or a ``TrialRecord``)."""
    last = getattr(trial, "last_result", None)
    return {
        "id": trial.trial_id,
        "name": str(trial),
        "trainable_name": getattr(trial, "trainable_name", None),
        "experiment_tag": getattr(trial, "experiment_tag", None),
        "status": trial.status,
        "config": _snapshot(getattr(trial, "config", None) or {}),
        "evaluated_params": _snapshot(getattr(trial, "evaluated_params", None) or {}),
        "result": _snapshot(dict(last)) if last else None,
        "local_path": getattr(trial, "local_path", None),
        "num_failures": getattr(trial, "num_failures", 0) or 0,
        "error_msg": getattr(trial, "error_msg", None),
    }


# --------------------------------------------------------------------------- histories


class _ResultFile:
    __slots__ = ("inode", "offset", "rows")

    def __init__(self, inode: int):
        self.inode = inode
        self.offset = 0
        self.rows: list[dict] = []


class HistoryCache:
    """Trial histories read from ``result.json``, incrementally: each poll reads only
    the bytes appended since the last one (a file that shrank or was replaced, as on
    a restart, is read again). Rows keep their finite numbers only."""

    def __init__(self) -> None:
        self._files: dict[str, _ResultFile] = {}
        self._lock = threading.Lock()

    def rows(self, trial_dir: str | None) -> list[dict]:
        if not trial_dir:
            return []
        path = os.path.join(trial_dir, "result.json")
        try:
            stat = os.stat(path)
        except OSError:
            return self._csv_rows(trial_dir)
        with self._lock:
            entry = self._files.get(path)
            if entry is None or entry.inode != stat.st_ino or stat.st_size < entry.offset:
                entry = self._files[path] = _ResultFile(stat.st_ino)
            if stat.st_size > entry.offset:
                self._read_tail(path, entry, stat.st_size)
            return entry.rows

    @staticmethod
    def _read_tail(path: str, entry: _ResultFile, size: int) -> None:
        try:
            with open(path, "rb") as f:
                f.seek(entry.offset)
                data = f.read(size - entry.offset)
        except OSError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return  # a line still being written
        for line in data[:end].split(b"\n"):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(row, dict):
                entry.rows.append(numeric_fields(row))
        entry.offset += end + 1

    def _csv_rows(self, trial_dir: str) -> list[dict]:
        path = os.path.join(trial_dir, "progress.csv")
        try:
            stat = os.stat(path)
        except OSError:
            return []
        key = f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
        with self._lock:
            entry = self._files.get(key)
            if entry is None:
                from .analysis import _read_csv_rows

                entry = self._files[key] = _ResultFile(stat.st_ino)
                try:
                    entry.rows = [numeric_fields(row) for row in _read_csv_rows(path)]
                except (OSError, ValueError):
                    entry.rows = []
            return entry.rows


# --------------------------------------------------------------------------- commands


class _Command:
    __slots__ = ("fn", "done", "result", "error")

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class CommandQueue:
    """Requests from HTTP threads, run on the run-loop thread.

    :meth:`call` queues a function, wakes the loop and waits for its outcome; the
    loop calls :meth:`run_pending` at the start of each step (checking
    :attr:`pending` costs it one attribute read per step, nothing per result).
    """

    def __init__(self, wakeup: Callable[[], None]):
        self._wakeup = wakeup
        self._items: collections.deque[_Command] = collections.deque()
        self._lock = threading.Lock()
        self._closed: str | None = None

    @property
    def pending(self) -> bool:
        return bool(self._items)

    def call(self, fn: Callable[[], Any], timeout: float = _COMMAND_TIMEOUT_S) -> Any:
        command = _Command(fn)
        with self._lock:
            if self._closed is not None:
                raise ApiError(409, self._closed)
            self._items.append(command)
        self._wakeup()
        if not command.done.wait(timeout):
            with self._lock:
                try:
                    self._items.remove(command)
                    dropped = True
                except ValueError:
                    dropped = False
            if dropped:
                raise ApiError(
                    503, f"The run loop did not take the request within {timeout:g} s; it was "
                    "dropped. Try again."
                )
            command.done.wait()  # already running: its outcome follows shortly
        if command.error is not None:
            raise command.error
        return command.result

    def run_pending(self) -> None:
        """Run the queued requests (on the run-loop thread)."""
        while True:
            try:
                command = self._items.popleft()
            except IndexError:
                return
            try:
                command.result = command.fn()
            except ApiError as exc:
                command.error = exc
            except ValueError as exc:
                command.error = ApiError(400, str(exc))
            except Exception as exc:  # noqa: BLE001 - reported to the client, the run goes on
                logger.exception("A control-server request failed")
                command.error = ApiError(500, f"{type(exc).__name__}: {exc}")
            finally:
                command.done.set()

    def close(self, reason: str) -> None:
        """Refuse further requests, and answer the queued ones with ``reason``."""
        with self._lock:
            self._closed = reason
            items, self._items = list(self._items), collections.deque()
        for command in items:
            command.error = ApiError(409, reason)
            command.done.set()


# --------------------------------------------------------------------------- backends


class _Backend:
    """What a server serves: trials to read and, for a live run, to change."""

    can_control = False

    def __init__(self, metric: str | None, mode: str | None):
        self.metric = metric
        self.mode = mode
        self.histories = HistoryCache()
        # (trial id, metric, mode) -> [rows list, rows seen, best, [(timestamp, value, id)]]
        self._improvements: dict[tuple, list] = {}
        self._improvements_lock = threading.Lock()

    def improvements(self, trial: Any, metric: str, mode: str) -> list[tuple]:
        """The results at which ``trial`` improved its own best ``metric``."""
        rows = self.histories.rows(getattr(trial, "local_path", None))
        key = (trial.trial_id, metric, mode)
        with self._improvements_lock:
            cached = self._improvements.get(key)
            if cached is None or cached[0] is not rows:  # new, or its file was rewritten
                cached = self._improvements[key] = [rows, 0, None, []]
            _, seen, best, points = cached
            for row in rows[seen:]:
                value = row.get(metric)
                stamp = row.get("timestamp")
                if value is None or stamp is None:
                    continue
                if best is None or (value < best if mode == "min" else value > best):
                    best = value
                    points.append((stamp, value, trial.trial_id))
            cached[1], cached[2] = len(rows), best
            return list(points)

    def trials(self) -> list[Any]:
        raise NotImplementedError

    def find(self, trial_id: str) -> Any:
        for trial in self.trials():
            if trial.trial_id == trial_id:
                return trial
        raise ApiError(404, f"No trial with id {trial_id!r} in this experiment.")

    def describe(self) -> dict:
        raise NotImplementedError

    def history(self, trial: Any) -> list[dict]:
        return self.histories.rows(getattr(trial, "local_path", None))

    def add(self, name: str | None, spec: dict) -> list[Any]:
        raise ApiError(405, self._read_only())

    def stop(self, trial: Any) -> None:
        raise ApiError(405, self._read_only())

    def stop_experiment(self) -> None:
        raise ApiError(405, self._read_only())

    @staticmethod
    def _read_only() -> str:
        return (
            "This dashboard serves an experiment directory read-only; trials can be added "
            "or stopped through the server of a live run (run(server_port=...))."
        )


class RunBackend(_Backend):
    """The trials of a running ``RunLoop``; changes go through its command queue."""

    can_control = True

    def __init__(self, loop: Any, commands: CommandQueue, metric: str | None, mode: str | None):
        super().__init__(metric, mode)
        self.loop = loop
        self.commands = commands
        self.running = True
        self._index: dict[str, Any] = {}
        self._index_lock = threading.Lock()

    def trials(self) -> list[Any]:
        return list(self.loop.get_trials())

    def find(self, trial_id: str) -> Any:
        with self._index_lock:
            trial = self._index.get(trial_id)
            if trial is None:
                trials = self.trials()  # trials are only ever appended
                for trial in trials[len(self._index):]:
                    self._index[trial.trial_id] = trial
                trial = self._index.get(trial_id)
        if trial is None:
            raise ApiError(404, f"No trial with id {trial_id!r} in this run.")
        return trial

    def describe(self) -> dict:
        return {
            "name": os.path.basename(self.loop.experiment_dir),
            "path": self.loop.experiment_dir,
            "source": "run",
            "live": self.running,
            "can_control": self.running,
        }

    def history(self, trial: Any) -> list[dict]:
        rows = super().history(trial)
        # Result files are flushed every few seconds: the newest result comes from memory.
        last = getattr(trial, "last_result", None)
        if last:
            last = numeric_fields(dict(last))
            iteration = last.get("training_iteration")
            if iteration is not None and (
                not rows or rows[-1].get("training_iteration", -1) < iteration
            ):
                rows = [*rows, last]
        return rows

    def improvements(self, trial: Any, metric: str, mode: str) -> list[tuple]:
        points = super().improvements(trial, metric, mode)
        last = getattr(trial, "last_result", None)  # not yet in the result file, maybe
        if last:
            value = _number(lookup(last, metric))
            stamp = _number(last.get("timestamp"))
            if value is not None and stamp is not None and (
                not points or (value < points[-1][1] if mode == "min" else value > points[-1][1])
            ):
                points.append((stamp, value, trial.trial_id))
        return points

    def add(self, name: str | None, spec: dict) -> list[Any]:
        names = self.loop.experiment_names()
        if name is not None and name not in names:
            raise ApiError(
                404, f"This run has no experiment named {name!r}; its experiments: "
                f"{', '.join(repr(n) for n in names)}. Leave the name empty for the first."
            )
        config, num_samples = _parse_spec(spec, self.loop, name)
        return self.commands.call(
            lambda: self.loop.add_trials(config, experiment=name, num_samples=num_samples)
        )

    def stop(self, trial: Any) -> None:
        def stop() -> None:
            if trial.status not in _FINISHED:
                self.loop.stop_trial(trial)

        self.commands.call(stop)

    def stop_experiment(self) -> None:
        self.commands.call(self.loop.stop_experiment)


_SPEC_KEYS = ("config", "num_samples", "run")


def _parse_spec(spec: Any, loop: Any, name: str | None) -> tuple[dict, int]:
    if not isinstance(spec, dict):
        raise ApiError(400, 'The trial "spec" must be a JSON object such as {"config": {...}}.')
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ApiError(
            400, f"Unsupported spec keys: {', '.join(unknown)}. A spec may set "
            f"{', '.join(_SPEC_KEYS)}; the trial uses its experiment's other settings."
        )
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise ApiError(400, '"config" must be a JSON object.')
    bad = _eval_paths(config)
    if bad:
        raise ApiError(
            400, f'{{"eval": ...}} at {", ".join(bad)}: the control API does not evaluate '
            "expressions from requests. Send the values (grid_search lists expand)."
        )
    num_samples = spec.get("num_samples", 1)
    run = spec.get("run")
    if run is not None:
        index = loop.experiment_names().index(name) if name is not None else 0
        trainable = loop._sources[index].experiment.trainable_name
        if run != trainable:
            raise ApiError(
                400, f'"run" is {run!r}, but the experiment runs {trainable!r}: an added trial '
                "runs its experiment's trainable. Leave \"run\" out."
            )
    return config, num_samples


def _eval_paths(node: Any, path: str = "config") -> list[str]:
    found = []
    if isinstance(node, dict):
        if set(node) == {"eval"}:
            return [path]
        for key, value in node.items():
            found += _eval_paths(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _eval_paths(value, f"{path}/{i}")
    return found


class DirectoryBackend(_Backend):
    """The trials of an experiment directory (running or finished), read-only.

    The directory is read again (with :class:`ExperimentAnalysis`) when its
    experiment-state files change, and at most twice a second.
    """

    def __init__(self, path: str, metric: str | None = None, mode: str | None = None):
        super().__init__(metric, mode)
        self.path = os.path.abspath(os.path.expanduser(path))
        self._lock = threading.Lock()
        self._signature: Any = None
        self._checked = 0.0
        self._trials: list[Any] = []
        self._error: str | None = None

    def _state_signature(self) -> Any:
        signature = []
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    if entry.name.startswith("experiment_state-"):
                        stat = entry.stat()
                        signature.append((entry.name, stat.st_mtime_ns, stat.st_size))
        except OSError:
            return None
        if not signature:
            return ("scan", int(time.time() / 2))  # no state: look again every 2 s
        return tuple(sorted(signature))

    def trials(self) -> list[Any]:
        with self._lock:
            now = time.monotonic()
            if now - self._checked < 0.5:
                return self._trials
            self._checked = now
            signature = self._state_signature()
            if signature is not None and signature == self._signature:
                return self._trials
            from .analysis import ExperimentAnalysis

            try:
                analysis = ExperimentAnalysis(self.path)
            except (ValueError, OSError) as exc:
                self._error = str(exc)
                self._trials = []
            else:
                self._error = None
                self._trials = list(analysis.trials)
            self._signature = signature
            return self._trials

    def describe(self) -> dict:
        trials = self.trials()
        live = not trials or any(t.status not in _FINISHED for t in trials)
        info = {
            "name": os.path.basename(self.path),
            "path": self.path,
            "source": "directory",
            "live": live,
            "can_control": False,
        }
        if self._error:
            info["note"] = self._error
        return info


# --------------------------------------------------------------------------- pages


def best_so_far(backend: _Backend, metric: str, mode: str) -> list[list]:
    """``[[timestamp, best value, trial id], ...]``: each improvement of the best ``metric``.

    Only a point that improves its own trial's best can improve the best of all, so
    each trial contributes its improvements (kept per trial, extended as its result
    file grows): a poll costs little more than the rows that are new since the last.
    """
    points = []
    for trial in backend.trials():
        points.extend(backend.improvements(trial, metric, mode))
    points.sort(key=lambda p: p[0])
    out = []
    best = None
    for stamp, value, trial_id in points:
        if best is None or (value < best if mode == "min" else value > best):
            best = value
            out.append([stamp, value, trial_id])
    return out


def experiment_document(backend: _Backend) -> dict:
    """What the dashboard page shows: the experiment, its trials, metrics and params."""
    trials = backend.trials()
    doc = backend.describe()
    metrics: set[str] = set()
    params: dict[str, None] = {}
    counts: dict[str, int] = {}
    rows = []
    for trial in trials:
        last = getattr(trial, "last_result", None) or {}
        numbers = numeric_fields(dict(last)) if last else {}
        metrics.update(numbers)
        trial_params = _flat_params(trial)
        for key in trial_params:
            params[key] = None
        status = trial.status
        counts[status] = counts.get(status, 0) + 1
        rows.append(
            {
                "id": trial.trial_id,
                "name": str(trial),
                "status": status,
                "iteration": numbers.get("training_iteration"),
                "params": trial_params,
                "last": numbers,
                "error_msg": getattr(trial, "error_msg", None),
            }
        )
    metrics -= _NOT_METRICS
    ordered = sorted(m for m in metrics if m not in _AUTO_KEYS)
    ordered += sorted(m for m in metrics if m in _AUTO_KEYS)
    doc.update(
        metric=backend.metric,
        mode=backend.mode,
        metrics=ordered,
        params=list(params),
        counts=counts,
        trials=rows,
        updated=time.time(),
    )
    return doc


def _plotly_path() -> str | None:
    try:
        import plotly
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")
    return path if os.path.exists(path) else None


class _Assets:
    """The page's static files, read once (plotly.js also gzip-compressed once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}

    def get(self, name: str, compressed: bool = False) -> bytes | None:
        key = f"{name}.gz" if compressed else name
        with self._lock:
            data = self._cache.get(key)
            if data is not None:
                return data
            if name == "plotly.min.js":
                path = _plotly_path()
            elif name in _STATIC_TYPES or name == "index.html":
                path = os.path.join(_STATIC_DIR, name)
            else:
                return None
            if path is None:
                return None
            with open(path, "rb") as f:
                data = f.read()
            if compressed:
                data = gzip.compress(data, 6)
            self._cache[key] = data
            return data


_ASSETS = _Assets()


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    server_version = "tunekit"
    timeout = 60  # seconds a client may take to send its request

    # ---- plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        logger.debug("control server: %s - %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict | None = None) -> None:
        body = json.dumps(data, allow_nan=False, separators=(",", ":")).encode()
        self._send(status, body, "application/json", {"Cache-Control": "no-store", **(headers or {})})

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "status": status})

    @property
    def control(self) -> ControlServer:
        return self.server.control  # type: ignore[attr-defined]

    def _dispatch(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        self._query = urllib.parse.parse_qs(parsed.query)
        parts = [urllib.parse.unquote(p) for p in parsed.path.split("/") if p]
        if parts == ["favicon.ico"]:  # browsers ask for it, without the token
            return self._send(204, b"", "image/x-icon")
        try:
            self._authorise()
            self._route(parts)
        except ApiError as exc:
            self._error(exc.status, exc.message)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # noqa: BLE001 - a failed request must not end the server
            logger.exception("control server: %s %s failed", self.command, self.path)
            self._error(500, f"{type(exc).__name__}: {exc}")

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    # ---- security
    def _authorise(self) -> None:
        token = self.control.token
        changes = self.command not in ("GET", "HEAD")
        if token:
            given = None
            header = self.headers.get("Authorization", "")
            if header.startswith("Bearer "):
                given = header[len("Bearer "):].strip()
            elif not changes:
                given = (self._query.get("token") or [None])[0]
            if given is None or not hmac.compare_digest(given.encode(), token.encode()):
                raise ApiError(
                    401, "This tunekit server requires its token: send the header "
                    "'Authorization: Bearer <token>' (or ?token=<token> on a GET)."
                )
            return
        # No token: a loopback server. Refuse requests a web page elsewhere could make.
        host = self.headers.get("Host", "")
        hostname = urllib.parse.urlsplit(f"//{host}").hostname or ""
        if not is_loopback(hostname):
            raise ApiError(403, f"Host {host!r} is not a loopback address; refused.")
        if changes:
            origin = self.headers.get("Origin")
            if origin and urllib.parse.urlsplit(origin).netloc != host:
                raise ApiError(403, f"Cross-origin request from {origin!r} refused.")

    def _body(self) -> Any:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(415, "Send the request body as JSON (Content-Type: application/json).")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "Bad Content-Length.") from None
        if length > _MAX_BODY:
            raise ApiError(413, f"The request body is larger than {_MAX_BODY} bytes.")
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError as exc:
            raise ApiError(400, f"The request body is not valid JSON: {exc}.") from None

    # ---- routes
    def _route(self, parts: list[str]) -> None:
        method = "GET" if self.command == "HEAD" else self.command
        backend = self.control.backend
        route = (method, *parts[:1])
        if method == "GET" and (not parts or parts == ["index.html"]):
            return self._page()
        if method == "GET" and len(parts) == 2 and parts[0] == "static":
            return self._static(parts[1])
        if route == ("GET", "trials") and len(parts) == 1:
            return self._json(200, {"trials": [trial_info(t) for t in backend.trials()]})
        if route == ("GET", "trials") and len(parts) == 2:
            return self._json(200, {"trial": trial_info(backend.find(parts[1]))})
        if route == ("POST", "trials") and len(parts) == 1:
            body = self._body()
            if not isinstance(body, dict):
                raise ApiError(400, 'Send {"name": ..., "spec": {"config": {...}}}.')
            name = body.get("name") or None
            if name is not None and not isinstance(name, str):
                raise ApiError(400, '"name" must be an experiment name (a string) or null.')
            added = backend.add(name, body.get("spec", {}))
            return self._json(
                201, {"trials": [trial_info(t) for t in added]}, {"Location": "/trials/"}
            )
        if route == ("PUT", "trials") and len(parts) == 2:
            trial = backend.find(parts[1])
            backend.stop(trial)
            return self._json(200, {"trials": [trial_info(trial)]})
        if route == ("PUT", "stop_experiment") and len(parts) == 1:
            backend.stop_experiment()
            return self._json(200, {"trials": [trial_info(t) for t in backend.trials()]})
        if method == "GET" and parts[:1] == ["api"]:
            return self._api(backend, parts[1:])
        if parts[:1] in (["trials"], ["stop_experiment"], ["api"]):
            raise ApiError(405, f"{self.command} is not supported on {'/'.join(parts)}.")
        raise ApiError(404, f"Nothing at /{'/'.join(parts)}. The API: /trials, /trials/<id>.")

    def _api(self, backend: _Backend, parts: list[str]) -> None:
        if parts == ["experiment"]:
            doc = experiment_document(backend)
            doc["plotly"] = _plotly_path() is not None
            return self._json(200, _snapshot(doc))
        if len(parts) == 3 and parts[0] == "trials" and parts[2] == "history":
            trial = backend.find(parts[1])
            rows = backend.history(trial)
            wanted = [k for k in ",".join(self._query.get("keys", [])).split(",") if k]
            keys = list(dict.fromkeys([*_HISTORY_AXES, *wanted])) if wanted else None
            if keys is None:
                keys = sorted({k for row in rows for k in row})
            columns = {key: [row.get(key) for row in rows] for key in keys}
            return self._json(200, {"id": trial.trial_id, "columns": columns})
        if parts == ["best"]:
            metric = (self._query.get("metric") or [backend.metric])[0]
            mode = (self._query.get("mode") or [backend.mode or "min"])[0]
            if not metric:
                raise ApiError(400, "Pass ?metric=<name> (and &mode=min or max).")
            if mode not in ("min", "max"):
                raise ApiError(400, f"mode must be 'min' or 'max', got {mode!r}.")
            points = best_so_far(backend, metric, mode)
            return self._json(200, {"metric": metric, "mode": mode, "points": points})
        raise ApiError(404, f"No dashboard endpoint /api/{'/'.join(parts)}.")

    def _page(self) -> None:
        page = _ASSETS.get("index.html")
        auth = ""
        if self.control.token:
            auth = "?token=" + urllib.parse.quote(self.control.token, safe="")
        body = page.decode().replace("{{auth}}", html.escape(auth, quote=True)).encode()
        self._send(200, body, "text/html; charset=utf-8", {"Cache-Control": "no-store"})

    def _static(self, name: str) -> None:
        if name == "plotly.min.js":
            gz = "gzip" in self.headers.get("Accept-Encoding", "")
            data = _ASSETS.get(name, compressed=gz)
            if data is None:
                body = f"console.error({json.dumps(_INSTALL_HINT)});".encode()
                return self._send(200, body, "text/javascript; charset=utf-8")
            headers = {"Cache-Control": "max-age=86400"}
            if gz:
                headers["Content-Encoding"] = "gzip"
            return self._send(200, data, "text/javascript; charset=utf-8", headers)
        data = _ASSETS.get(name)
        if data is None:
            raise ApiError(404, f"No static file {name!r}.")
        self._send(200, data, _STATIC_TYPES[name], {"Cache-Control": "no-cache"})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], control: ControlServer):
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.control = control
        super().__init__(address, _Handler)


class ControlServer:
    """An HTTP server in a daemon thread serving a backend's API and the dashboard."""

    def __init__(self, backend: _Backend, host: str = DEFAULT_HOST, port: int = 0,
                 token: str | None = None):
        check_server_settings(host, token)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"The server port must be an integer from 0 to 65535, got {port!r}.")
        self.backend = backend
        self.host = host.strip("[]")
        self.token = token or None
        try:
            self._httpd = _HTTPServer((self.host, port), self)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"Cannot start the tunekit control server on {host}:{port}: "
                f"{exc.strerror or exc}. Choose another port (0 picks a free one).",
            ) from exc
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The dashboard's address (without the token)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def address(self) -> str:
        """``host:port``, as ``TuneClient`` and ``tunekit trials --address`` take it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> ControlServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
            name="tunekit-control-server", daemon=True,
        )
        self._thread.start()
        if _plotly_path() is None:
            logger.warning("%s The page still lists the trials.", _INSTALL_HINT)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (``tunekit dashboard``)."""
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._httpd.server_close()

    def stop(self) -> None:
        """Stop listening (requests in flight finish)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()


def start_run_server(loop: Any, port: int, host: str, token: str | None,
                     metric: str | None = None, mode: str | None = None) -> ControlServer:
    """Serve ``loop``'s trials, with changes queued onto its thread; started at once."""
    commands = CommandQueue(loop.trial_executor.wakeup)
    backend = RunBackend(loop, commands, metric, mode)
    server = ControlServer(backend, host=host, port=port, token=token)
    loop.commands = commands
    return server.start()


def finish_run_server(server: ControlServer) -> None:
    """The run is over: refuse changes, keep nothing listening."""
    backend = server.backend
    if isinstance(backend, RunBackend):
        backend.running = False
        backend.commands.close("The run has ended; it accepts no more changes.")
    server.stop()


def serve_directory(path: str, host: str = DEFAULT_HOST, port: int = 0,
                    token: str | None = None, metric: str | None = None,
                    mode: str | None = None) -> ControlServer:
    """A (not yet started) read-only dashboard server over an experiment directory."""
    if not os.path.isdir(os.path.expanduser(path)):
        raise FileNotFoundError(
            f"{path!r} is not a directory. Pass an experiment directory (<local_dir>/<name>)."
        )
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
    return ControlServer(DirectoryBackend(path, metric, mode), host=host, port=port, token=token)
