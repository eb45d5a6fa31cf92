"""Progress reporting: the status of a run, and per-result lines.

``CLIReporter`` shows, at most every ``max_report_frequency`` seconds and once
more when the run ends, the status of the run: time, resources in use, trial
counts by status, the best trial so far and a table of trials (with their
searched parameters and metrics) plus a table of failed trials. In a terminal
it is a live table rendered with ``rich`` and updated in place; otherwise a
plain-text "== Status ==" block. ``JupyterNotebookReporter`` shows the same as
one HTML output updated in place, and :func:`detect_reporter` picks it inside
a notebook. The parameters follow Ray Tune's reporters.

``format_trial_result_brief``/``format_trial_result_detailed`` (and
``TrialResultPrinter``, which rate-limits them per trial) format the lines the
run loop prints for each result at verbosity 2 and 3.
"""

from __future__ import annotations

import datetime
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .space import lookup as _lookup

__all__ = [
    "AUTO_RESULT_KEYS",
    "CLIReporter",
    "JupyterNotebookReporter",
    "ProgressReporter",
    "TrialResultPrinter",
    "TuneReporterBase",
    "detect_reporter",
    "format_table",
    "format_trial_error",
    "format_trial_result_brief",
    "format_trial_result_detailed",
]

#: Result fields filled in by tunekit itself; never inferred as user metrics.
AUTO_RESULT_KEYS = frozenset(
    {
        "training_iteration",
        "time_this_iter_s",
        "time_total_s",
        "timestamp",
        "date",
        "done",
        "trial_id",
        "experiment_id",
        "experiment_tag",
        "pid",
        "hostname",
        "node_ip",
        "config",
        "iterations_since_restore",
        "time_since_restore",
        "timesteps_since_restore",
        "timesteps_total",
        "timesteps_this_iter",
        "episodes_total",
        "episodes_this_iter",
        "should_checkpoint",
        "warmup_time",
        "hist_stats",
    }
)

#: Column headers for well-known result fields (as in Ray Tune's reporter).
_DEFAULT_REPRESENTATIONS = {
    "training_iteration": "iter",
    "time_total_s": "total time (s)",
    "timesteps_total": "ts",
    "episode_reward_mean": "reward",
    "mean_accuracy": "acc",
    "mean_loss": "loss",
}

_STATE_ORDER = ("RUNNING", "PAUSED", "PENDING", "TERMINATED", "ERROR")


# --------------------------------------------------------------------------- helpers


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    module = type(value).__module__
    return module == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iuf"


def _format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, "g")
    if _is_number(value) and not isinstance(value, int):
        try:
            return format(float(value), "g")
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _truncate(text: str, max_len: int | None) -> str:
    if max_len is None or max_len <= 0 or len(text) <= max_len:
        return text
    if max_len <= 3:
        return text[:max_len]
    return text[: max_len - 3] + "..."


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Format ``rows`` under ``headers`` as a plain-text table (psql style).

    Numbers are right-aligned, everything else left-aligned; ``None`` is an
    empty cell. Floats use the ``g`` format (6 significant digits).
    """
    ncols = len(headers)
    numeric = [True] * ncols
    text_rows = []
    for row in rows:
        cells = []
        for i in range(ncols):
            value = row[i] if i < len(row) else None
            if value is not None and not _is_number(value):
                numeric[i] = False
            cells.append(_format_value(value))
        text_rows.append(cells)
    for i in range(ncols):
        if not any(r[i] for r in text_rows):
            numeric[i] = False
    widths = [len(str(h)) for h in headers]
    for cells in text_rows:
        for i, cell in enumerate(cells):
            if len(cell) > widths[i]:
                widths[i] = len(cell)

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            parts.append(cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i]))
        return "| " + " | ".join(parts) + " |"

    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    separator = "|" + "+".join("-" * (w + 2) for w in widths) + "|"
    out = [border, line([str(h) for h in headers]), separator]
    out.extend(line(cells) for cells in text_rows)
    out.append(border)
    return "\n".join(out)


def _elapsed_str(seconds: float) -> str:
    seconds = max(0.0, seconds)
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:05.2f}"


def _trial_location(trial: Any) -> str:
    result = getattr(trial, "last_result", None) or {}
    ip = result.get("node_ip")
    pid = result.get("pid")
    if ip is not None or pid is not None:
        if ip is not None and pid is not None:
            return f"{ip}:{pid}"
        return str(ip if ip is not None else pid)
    location = getattr(trial, "location", None)
    return "" if location is None else str(location)


def _experiment_dir_of(trial: Any) -> str | None:
    local_dir = getattr(trial, "local_dir", None)
    if local_dir:
        return os.fspath(local_dir)
    local_path = getattr(trial, "local_path", None)
    return os.path.dirname(os.fspath(local_path)) if local_path else None


def _trials_by_state(trials: Iterable[Any]) -> dict[str, list[Any]]:
    by_state: dict[str, list[Any]] = {}
    for t in trials:
        by_state.setdefault(str(t.status), []).append(t)
    return by_state


def _fair_share(counts: dict[str, int], max_rows: int) -> dict[str, int]:
    """Split ``max_rows`` over states round-robin (alphabetical), capped by each count."""
    share = dict.fromkeys(counts, 0)
    remaining = max_rows
    states = sorted(counts)
    while remaining > 0:
        progressed = False
        for state in states:
            if remaining == 0:
                break
            if share[state] < counts[state]:
                share[state] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            break
    return share


# --------------------------------------------------------------------------- reporters


class ProgressReporter:
    """Base class for experiment progress reporters.

    The run loop calls ``should_report(trials, done)`` after every step and,
    when it returns True, ``report(trials, done, *sys_info)``; ``sys_info``
    are extra status lines (scheduler and resource summaries).
    """

    def should_report(self, trials: list[Any], done: bool = False) -> bool:
        """Return True if a progress report should be printed now."""
        raise NotImplementedError

    def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
        """Report progress for ``trials``; ``done`` is True for the final report."""
        raise NotImplementedError

    def set_search_properties(self, metric: str | None, mode: str | None) -> bool:
        """Receive ``run``'s metric and mode; return False to refuse them."""
        return True

    def set_total_samples(self, total_samples: int | None) -> None:
        """Receive the total number of trials the search will create (None: unknown)."""

    def set_start_time(self, timestamp: float | None = None) -> None:
        """Receive the time the tuning loop started (epoch seconds)."""


class TuneReporterBase(ProgressReporter):
    """The status block shared by text reporters; see ``CLIReporter`` for the arguments."""

    def __init__(
        self,
        metric_columns: Sequence[str] | Mapping[str, str] | None = None,
        parameter_columns: Sequence[str] | Mapping[str, str] | None = None,
        total_samples: int | None = None,
        max_progress_rows: int = 20,
        max_error_rows: int = 20,
        max_column_length: int = 20,
        max_report_frequency: float = 5,
        infer_limit: int = 3,
        print_intermediate_tables: bool | None = None,
        metric: str | None = None,
        mode: str | None = None,
        sort_by_metric: bool = False,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"`mode` must be None, 'min' or 'max' (got {mode!r}).")
        self._metrics_override = metric_columns is not None
        self._metric_columns: dict[str, str] = self._columns_dict(metric_columns)
        self._parameter_columns: dict[str, str] | None = (
            None if parameter_columns is None else self._columns_dict(parameter_columns)
        )
        self._inferred_metrics: dict[str, str] = {}
        self._total_samples = total_samples
        self._max_progress_rows = max_progress_rows
        self._max_error_rows = max_error_rows
        self._max_column_length = max_column_length
        self._max_report_frequency = max_report_frequency
        self._infer_limit = infer_limit
        self._print_intermediate_tables_arg = print_intermediate_tables
        self._verbose = 3
        self._metric = metric
        self._mode = mode
        self._sort_by_metric = sort_by_metric
        self._clock = clock or time.time
        self._start_time = self._clock()
        self._last_report_time: float | None = None

    @staticmethod
    def _columns_dict(columns: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
        if columns is None:
            return {}
        if isinstance(columns, Mapping):
            return {str(k): str(v) for k, v in columns.items()}
        if isinstance(columns, str):
            return {columns: columns}
        return {str(k): str(k) for k in columns}

    # ---------------------------------------------------------------- configuration

    def add_metric_column(self, metric: str, representation: str | None = None) -> None:
        """Show ``metric`` as a column, headed ``representation`` (default: the name)."""
        if metric in self._metric_columns:
            raise ValueError(f"Column {metric!r} is already a metric column.")
        self._metrics_override = True
        self._metric_columns[metric] = representation or metric

    def add_parameter_column(self, parameter: str, representation: str | None = None) -> None:
        """Show config ``parameter`` (``"a/b"`` for nested keys) as a column."""
        if self._parameter_columns is None:
            self._parameter_columns = {}
        if parameter in self._parameter_columns:
            raise ValueError(f"Column {parameter!r} is already a parameter column.")
        self._parameter_columns[parameter] = representation or parameter

    def set_search_properties(self, metric: str | None, mode: str | None) -> bool:
        """Take ``run``'s metric/mode; False if this reporter already has different ones."""
        if (self._metric and metric and metric != self._metric) or (
            self._mode and mode and mode != self._mode
        ):
            return False
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"`mode` must be None, 'min' or 'max' (got {mode!r}).")
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def set_total_samples(self, total_samples: int | None) -> None:
        self._total_samples = total_samples

    def set_start_time(self, timestamp: float | None = None) -> None:
        self._start_time = self._clock() if timestamp is None else timestamp

    def set_verbosity(self, verbose: int) -> None:
        """Receive ``run``'s verbosity: with ``print_intermediate_tables=None``, trial
        tables are printed with every report at 3 and only in the final report at 2."""
        self._verbose = int(verbose)

    @property
    def _print_intermediate_tables(self) -> bool:
        if self._print_intermediate_tables_arg is None:
            return self._verbose >= 3
        return bool(self._print_intermediate_tables_arg)

    # ---------------------------------------------------------------- reporting

    def should_report(self, trials: list[Any], done: bool = False) -> bool:
        """True at most every ``max_report_frequency`` seconds, and always when done."""
        now = self._clock()
        if self._last_report_time is None or now - self._last_report_time >= (
            self._max_report_frequency
        ):
            self._last_report_time = now
            return True
        return bool(done)

    def _infer_user_metrics(self, trials: Sequence[Any]) -> None:
        if self._metrics_override or len(self._inferred_metrics) >= self._infer_limit:
            return
        for t in trials:
            result = getattr(t, "last_result", None)
            if not result:
                continue
            for key, value in result.items():
                if (
                    key in AUTO_RESULT_KEYS
                    or key in self._inferred_metrics
                    or key == self._metric
                    or key in _DEFAULT_REPRESENTATIONS
                    or not (_is_number(value) or value is None)
                ):
                    continue
                self._inferred_metrics[key] = key
                if len(self._inferred_metrics) >= self._infer_limit:
                    return

    def _metric_column_map(self) -> dict[str, str]:
        if self._metrics_override:
            return dict(self._metric_columns)
        columns = {
            "training_iteration": "iter",
            "time_total_s": "total time (s)",
        }
        if self._metric:
            columns.setdefault(
                self._metric, _DEFAULT_REPRESENTATIONS.get(self._metric, self._metric)
            )
        for key in ("mean_accuracy", "mean_loss", "episode_reward_mean", "timesteps_total"):
            columns.setdefault(key, _DEFAULT_REPRESENTATIONS[key])
        for key, rep in self._inferred_metrics.items():
            columns.setdefault(key, rep)
        return columns

    def _current_best_trial(self, trials: Sequence[Any]) -> tuple[Any | None, str | None]:
        metric, mode = self._metric, self._mode
        if not metric and len(self._inferred_metrics) == 1:
            metric = next(iter(self._inferred_metrics))
        if not metric or not mode:
            return None, metric
        best_trial = None
        best_value = None
        for t in trials:
            value = _lookup(getattr(t, "last_result", None), metric)
            if not _is_number(value):
                continue
            value = float(value)
            if math.isnan(value):
                continue
            if (
                best_value is None
                or (mode == "max" and value > best_value)
                or (mode == "min" and value < best_value)
            ):
                best_value, best_trial = value, t
        return best_trial, metric

    def _best_trial_str(self, trial: Any, metric: str) -> str:
        value = _lookup(trial.last_result, metric)
        if self._parameter_columns:
            params = {k: self._param_value(trial, k) for k in self._parameter_columns}
        elif getattr(trial, "evaluated_params", None):
            params = dict(trial.evaluated_params)
        else:
            params = dict(getattr(trial, "config", None) or {})
        return f"Current best trial: {trial.trial_id} with {metric}={value} and parameters={params}"

    @staticmethod
    def _param_value(trial: Any, key: str) -> Any:
        params = getattr(trial, "evaluated_params", None) or {}
        if key in params:
            return params[key]
        return _lookup(getattr(trial, "config", None), key)

    def _trial_table_data(
        self, trials: Sequence[Any], max_rows: int | None
    ) -> tuple[list[str], list[list[Any]], str | None]:
        """Headers, rows (status order, at most ``max_rows`` shared fairly between
        statuses) and the "... N more trials not shown" line (None if all are shown)."""
        by_state = _trials_by_state(trials)
        order = list(_STATE_ORDER)
        order += sorted(s for s in by_state if s not in _STATE_ORDER)
        if self._sort_by_metric and self._metric and self._mode and "TERMINATED" in by_state:
            metric, reverse = self._metric, self._mode == "max"

            def sort_key(t: Any) -> tuple[int, float]:
                value = _lookup(getattr(t, "last_result", None), metric)
                if not _is_number(value) or math.isnan(float(value)):
                    return (1, 0.0)
                value = float(value)
                return (0, -value if reverse else value)

            by_state["TERMINATED"] = sorted(by_state["TERMINATED"], key=sort_key)
            order.remove("TERMINATED")
            order.insert(0, "TERMINATED")

        total = len(trials)
        overflow_str = ""
        overflow = 0
        shown: list[Any] = []
        if max_rows is not None and total > max_rows:
            share = _fair_share({s: len(v) for s, v in by_state.items()}, max_rows)
            hidden = []
            for state in order:
                if state not in by_state:
                    continue
                rows = by_state[state]
                shown.extend(rows[: share[state]])
                if len(rows) > share[state]:
                    hidden.append(f"{len(rows) - share[state]} {state}")
            overflow = total - len(shown)
            overflow_str = ", ".join(hidden)
        else:
            for state in order:
                shown.extend(by_state.get(state, ()))

        metric_map = self._metric_column_map()
        metric_keys = [
            k
            for k in metric_map
            if any(_lookup(getattr(t, "last_result", None), k) is not None for t in shown)
        ]
        if self._parameter_columns:
            param_map = self._parameter_columns
        else:
            keys: set[str] = set()
            for t in shown:
                keys.update(getattr(t, "evaluated_params", None) or ())
            param_map = {k: k for k in sorted(keys)}
        param_keys = list(param_map)

        max_len = self._max_column_length
        headers = (
            ["Trial name", "status", "loc"]
            + [_truncate(param_map[k], max_len) for k in param_keys]
            + [_truncate(metric_map[k], max_len) for k in metric_keys]
        )
        rows = []
        for t in shown:
            row: list[Any] = [str(t), str(t.status), _trial_location(t)]
            for k in param_keys:
                value = self._param_value(t, k)
                row.append(value if _is_number(value) else _cell(value, max_len))
            result = getattr(t, "last_result", None)
            for k in metric_keys:
                value = _lookup(result, k)
                row.append(value if _is_number(value) else _cell(value, max_len))
            rows.append(row)
        overflow_line = f"... {overflow} more trials not shown ({overflow_str})" if overflow else None
        return headers, rows, overflow_line

    def _trial_table(self, trials: Sequence[Any], max_rows: int | None) -> list[str]:
        headers, rows, overflow_line = self._trial_table_data(trials, max_rows)
        lines = [format_table(headers, rows)]
        if overflow_line:
            lines.append(overflow_line)
        return lines

    def _error_table_data(
        self, trials: Sequence[Any], max_rows: int | None
    ) -> tuple[list[str], list[str], list[list[Any]]]:
        """Lines above the failed-trials table, its headers and its rows (no rows: no table)."""
        failed = [t for t in trials if getattr(t, "error_file", None)]
        if not failed:
            return [], [], []
        lines = [f"Number of errored trials: {len(failed)}"]
        if max_rows is not None and len(failed) > max_rows:
            lines.append(f"Table truncated to {max_rows} rows ({len(failed) - max_rows} overflow)")
            failed = failed[:max_rows]
        rows = [[str(t), getattr(t, "num_failures", 0), t.error_file] for t in failed]
        return lines, ["Trial name", "# failures", "error file"], rows

    def _error_table(self, trials: Sequence[Any], max_rows: int | None) -> list[str]:
        lines, headers, rows = self._error_table_data(trials, max_rows)
        if rows:
            lines.append(format_table(headers, rows))
        return lines

    def _status_lines(self, trials: Sequence[Any], *sys_info: str) -> list[str]:
        """The lines of the status header: time, system info, best trial, logdirs, counts."""
        self._infer_user_metrics(trials)
        now = self._clock()
        lines = [
            f"Current time: {datetime.datetime.now():%Y-%m-%d %H:%M:%S} "
            f"(running for {_elapsed_str(now - self._start_time)})",
        ]
        lines.extend(str(s) for s in sys_info if s)
        best, metric = self._current_best_trial(trials)
        if best is not None:
            lines.append(self._best_trial_str(best, metric))
        if trials:
            for logdir in sorted({d for d in map(_experiment_dir_of, trials) if d}):
                lines.append(f"Result logdir: {logdir}")
            lines.append(self._trial_counts_str(trials))
        return lines

    def _trial_counts_str(self, trials: Sequence[Any]) -> str:
        counts = {s: len(v) for s, v in _trials_by_state(trials).items()}
        total = self._total_samples
        if total is not None and total >= sys.maxsize:
            total_str = "/infinite"
        elif total:
            total_str = f"/{total}"
        else:
            total_str = ""
        by_state = ", ".join(f"{counts[s]} {s}" for s in sorted(counts))
        return f"Number of trials: {len(trials)}{total_str} ({by_state})"

    def _progress_str(self, trials: Sequence[Any], done: bool, *sys_info: str) -> str:
        trials = list(trials)
        lines = ["== Status ==", *self._status_lines(trials, *sys_info)]
        if trials:
            show_table = self._print_intermediate_tables or (done and self._verbose >= 2)
            if show_table:
                lines.extend(self._trial_table(trials, None if done else self._max_progress_rows))
            lines.extend(self._error_table(trials, None if done else self._max_error_rows))
        return "\n".join(lines) + "\n"


def _cell(value: Any, max_len: int | None) -> Any:
    if value is None:
        return None
    return _truncate(_format_value(value), max_len)


#: Colours of trial statuses in the live table.
_STATUS_STYLES = {
    "RUNNING": "green",
    "PENDING": "yellow",
    "PAUSED": "magenta",
    "TERMINATED": "blue",
    "ERROR": "bold red",
}
#: Seconds between updates of an in-place display (terminal or notebook) by default.
_LIVE_REPORT_FREQUENCY = 1.0
#: Seconds between plain-text status blocks by default (Ray Tune's default).
_PLAIN_REPORT_FREQUENCY = 5.0


def _stdout_is_terminal() -> bool:
    """True when progress goes to an interactive terminal (and plain text is not forced)."""
    from .env import env_flag

    if env_flag("TUNEKIT_PLAIN_PROGRESS"):
        return False
    isatty = getattr(sys.stdout, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def _in_notebook() -> bool:
    """True inside a Jupyter (or Colab) kernel. IPython is never imported here."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - an odd IPython: not a notebook
        return False
    if shell is None:
        return False
    return type(shell).__name__ == "ZMQInteractiveShell" or "google.colab" in sys.modules


def _numeric_columns(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[bool]:
    """Columns whose non-empty cells are all numbers (right-aligned)."""
    numeric = []
    for i in range(len(headers)):
        values = [row[i] for row in rows if i < len(row) and row[i] is not None]
        numeric.append(bool(values) and all(_is_number(v) for v in values))
    return numeric


class CLIReporter(TuneReporterBase):
    """Report experiment progress in the terminal (Ray Tune's ``CLIReporter``).

    In an interactive terminal the report is a live table rendered with
    ``rich`` and updated in place: a header (time and elapsed time, resources
    in use, the best trial so far, trials by status) above a table of trials
    (status, parameters, metrics, iterations, time) and a table of failed
    trials. When output is not a terminal (a file, a pipe, a CI log) or
    ``TUNEKIT_PLAIN_PROGRESS=1`` is set, it prints the plain-text
    "== Status ==" block instead, at most every ``max_report_frequency``
    seconds, so logs stay readable.

    Args:
        metric_columns: result fields to show, as a list or as a dict
            ``{field: header}``. Default: ``training_iteration``,
            ``time_total_s``, the run's metric and up to ``infer_limit``
            numeric fields the trials report.
        parameter_columns: config keys to show (``"a/b"`` for nested keys),
            as a list or a dict ``{key: header}``. Default: the searched
            parameters (``trial.evaluated_params``).
        total_samples: total number of trials, shown as ``N/total``.
        max_progress_rows: most trial rows in intermediate tables; the rows are
            shared fairly between statuses and the rest is summarised as
            "... N more trials not shown". The final report shows every trial.
        max_error_rows: most rows of the failed-trials table (intermediate).
        max_column_length: longer headers and values are cut with "...".
        max_report_frequency: seconds between reports. Default: 1 for the
            live table, 5 (Ray Tune's default) for plain text.
        infer_limit: how many reported metrics to add as columns when
            ``metric_columns`` is not given.
        print_intermediate_tables: plain text only: print the trial table with
            every report; None: only at verbosity 3 (at 2 the table is printed at
            the end). The live table always shows the trials.
        metric, mode: the metric/mode of the "Current best trial" line (and
            of ``sort_by_metric``); ``run``'s are used when these are None.
        sort_by_metric: list terminated trials first, best first.
        writer: where plain text goes (default ``sys.stdout.write``); tunekit
            extra. Given a writer, the reporter prints plain text.
        clock: time source for rate limiting and elapsed time (default
            ``time.time``); tunekit extra, for tests.
        live: True for the live table, False for plain text; None (default)
            decides by whether stdout is a terminal. tunekit extra.
        console: the ``rich.console.Console`` the live table renders to
            (default: one on stdout); tunekit extra.
    """

    def __init__(
        self,
        metric_columns: Sequence[str] | Mapping[str, str] | None = None,
        parameter_columns: Sequence[str] | Mapping[str, str] | None = None,
        total_samples: int | None = None,
        max_progress_rows: int = 20,
        max_error_rows: int = 20,
        max_column_length: int = 20,
        max_report_frequency: float | None = None,
        infer_limit: int = 3,
        print_intermediate_tables: bool | None = None,
        metric: str | None = None,
        mode: str | None = None,
        sort_by_metric: bool = False,
        *,
        writer: Callable[[str], Any] | None = None,
        clock: Callable[[], float] | None = None,
        live: bool | None = None,
        console: Any = None,
    ) -> None:
        if live is None:
            live = writer is None and (console is not None or _stdout_is_terminal())
        self._live_mode = bool(live)
        if max_report_frequency is None:
            max_report_frequency = (
                _LIVE_REPORT_FREQUENCY if self._live_mode else _PLAIN_REPORT_FREQUENCY
            )
        super().__init__(
            metric_columns=metric_columns,
            parameter_columns=parameter_columns,
            total_samples=total_samples,
            max_progress_rows=max_progress_rows,
            max_error_rows=max_error_rows,
            max_column_length=max_column_length,
            max_report_frequency=max_report_frequency,
            infer_limit=infer_limit,
            print_intermediate_tables=print_intermediate_tables,
            metric=metric,
            mode=mode,
            sort_by_metric=sort_by_metric,
            clock=clock,
        )
        self._writer = writer
        self._console = console
        self._live: Any = None

    def _write(self, text: str) -> None:
        if self._writer is not None:
            self._writer(text)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
        """Show the status of ``trials``: update the live table, or print the block."""
        if not self._live_mode:
            self._write(self._progress_str(trials, done, *sys_info) + "\n")
            return
        renderable = self._rich_status(list(trials), done, *sys_info)
        if self._live is None:
            from rich.live import Live

            # Lines printed meanwhile (per-result lines, log records) appear above the table.
            self._live = Live(
                renderable,
                console=self._console,
                auto_refresh=False,
                transient=False,
                redirect_stdout=True,
                redirect_stderr=True,
                vertical_overflow="ellipsis",
            )
            self._live.start(refresh=True)
        if done:
            self._live.vertical_overflow = "visible"  # the final table stays on screen whole
        self._live.update(renderable, refresh=True)
        if done:
            self.close()

    def close(self) -> None:
        """End the live display (the last table stays on screen). Safe to call twice."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def _rich_status(self, trials: list[Any], done: bool, *sys_info: str) -> Any:
        from rich.console import Group
        from rich.text import Text

        parts: list[Any] = [Text("tunekit status", style="bold underline")]
        for line in self._status_lines(trials, *sys_info):
            if line.startswith("Number of trials: "):
                parts.append(self._rich_counts(trials))
            elif line.startswith("Current best trial: "):
                parts.append(Text(line, style="bold"))
            else:
                parts.append(Text(line))
        if trials:
            headers, rows, overflow_line = self._trial_table_data(
                trials, None if done else self._max_progress_rows
            )
            parts.append(self._rich_table(headers, rows, status_column=1))
            if overflow_line:
                parts.append(Text(overflow_line, style="dim"))
            lines, headers, rows = self._error_table_data(
                trials, None if done else self._max_error_rows
            )
            if rows:
                parts.extend(Text(line, style="red") for line in lines)
                parts.append(self._rich_table(headers, rows, status_column=None))
        return Group(*parts)

    def _rich_counts(self, trials: Sequence[Any]) -> Any:
        from rich.text import Text

        counts = {s: len(v) for s, v in _trials_by_state(trials).items()}
        text = Text(self._trial_counts_str(trials).split(" (")[0] + " (")
        for i, state in enumerate(sorted(counts)):
            if i:
                text.append(", ")
            text.append(f"{counts[state]} {state}", style=_STATUS_STYLES.get(state, ""))
        text.append(")")
        return text

    @staticmethod
    def _rich_table(
        headers: Sequence[str], rows: Sequence[Sequence[Any]], status_column: int | None
    ) -> Any:
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for header, numeric in zip(headers, _numeric_columns(headers, rows)):
            table.add_column(str(header), justify="right" if numeric else "left", no_wrap=True)
        for row in rows:
            cells = [_format_value(value) for value in row]
            if status_column is not None:
                status = cells[status_column]
                cells[status_column] = f"[{_STATUS_STYLES.get(status, 'default')}]{status}[/]"
            table.add_row(*cells)
        return table


class JupyterNotebookReporter(TuneReporterBase):
    """Report progress in a Jupyter notebook as one HTML table (Ray Tune's name).

    The first report displays the status (header and trials table, as the
    ``CLIReporter``'s live table has them) and later reports update that same
    output in place; with ``overwrite=False`` every report is a new output
    instead. :func:`detect_reporter` picks this reporter inside a notebook.
    The other arguments are ``CLIReporter``'s; ``max_report_frequency``
    defaults to 1 second.
    """

    def __init__(
        self,
        overwrite: bool = True,
        metric_columns: Sequence[str] | Mapping[str, str] | None = None,
        parameter_columns: Sequence[str] | Mapping[str, str] | None = None,
        total_samples: int | None = None,
        max_progress_rows: int = 20,
        max_error_rows: int = 20,
        max_column_length: int = 20,
        max_report_frequency: float = _LIVE_REPORT_FREQUENCY,
        infer_limit: int = 3,
        print_intermediate_tables: bool | None = None,
        metric: str | None = None,
        mode: str | None = None,
        sort_by_metric: bool = False,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(
            metric_columns=metric_columns,
            parameter_columns=parameter_columns,
            total_samples=total_samples,
            max_progress_rows=max_progress_rows,
            max_error_rows=max_error_rows,
            max_column_length=max_column_length,
            max_report_frequency=max_report_frequency,
            infer_limit=infer_limit,
            print_intermediate_tables=print_intermediate_tables,
            metric=metric,
            mode=mode,
            sort_by_metric=sort_by_metric,
            clock=clock,
        )
        self._overwrite = overwrite
        self._handle: Any = None

    def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
        """Display the status of ``trials`` as HTML, replacing the previous display."""
        from IPython.display import HTML, display

        html = HTML(self._html_status(list(trials), done, *sys_info))
        if self._overwrite and self._handle is not None:
            self._handle.update(html)
        else:
            self._handle = display(html, display_id=True)

    def _html_status(self, trials: list[Any], done: bool, *sys_info: str) -> str:
        import html

        parts = ['<div class="tunekit-status">', "<h3>tunekit status</h3>"]
        for line in self._status_lines(trials, *sys_info):
            weight = "font-weight:bold;" if line.startswith("Current best trial: ") else ""
            parts.append(f'<div style="{weight}">{html.escape(line)}</div>')
        if trials:
            headers, rows, overflow_line = self._trial_table_data(
                trials, None if done else self._max_progress_rows
            )
            parts.append(_html_table(headers, rows, "tunekit-trials", status_column=1))
            if overflow_line:
                parts.append(f"<div><em>{html.escape(overflow_line)}</em></div>")
            lines, headers, rows = self._error_table_data(
                trials, None if done else self._max_error_rows
            )
            if rows:
                parts.extend(f"<div>{html.escape(line)}</div>" for line in lines)
                parts.append(_html_table(headers, rows, "tunekit-errors", status_column=None))
        parts.append("</div>")
        return "\n".join(parts)


_HTML_STATUS_COLOURS = {
    "RUNNING": "#2e7d32",
    "PENDING": "#b58900",
    "PAUSED": "#8e24aa",
    "TERMINATED": "#1565c0",
    "ERROR": "#c62828",
}


def _html_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], css_class: str, status_column: int | None
) -> str:
    import html

    numeric = _numeric_columns(headers, rows)

    def cell(tag: str, text: str, right: bool, colour: str | None = None) -> str:
        style = "text-align:right;" if right else "text-align:left;"
        if colour:
            style += f"color:{colour};"
        return f'<{tag} style="{style}">{html.escape(text)}</{tag}>'

    out = [f'<table class="{css_class}">', "<thead><tr>"]
    out.extend(cell("th", str(h), numeric[i]) for i, h in enumerate(headers))
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for i, value in enumerate(row):
            text = _format_value(value)
            colour = _HTML_STATUS_COLOURS.get(text) if i == status_column else None
            out.append(cell("td", text, numeric[i], colour))
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def detect_reporter(**kwargs: Any) -> TuneReporterBase:
    """The default reporter for this environment: a ``JupyterNotebookReporter`` inside a
    notebook, else a ``CLIReporter`` (a live table in a terminal, plain text otherwise)."""
    if _in_notebook():
        return JupyterNotebookReporter(**kwargs)
    return CLIReporter(**kwargs)


# --------------------------------------------------------------------------- per-result lines

_BRIEF_EXCLUDED = AUTO_RESULT_KEYS | {"experiment_tag", "trial_id", "done", "config", "hist_stats"}


def format_trial_result_brief(
    trial: Any, result: Mapping[str, Any], metric: str | None = None
) -> str:
    """One line describing ``result`` (verbosity 2).

    With ``metric``: ``Trial <name> reported <metric>=<value> with parameters=
    <config>.``; otherwise every user-reported field is listed. " This trial
    completed." is appended when the result has ``done=True``.
    """
    info = " This trial completed." if result.get("done") is True else ""
    config = getattr(trial, "config", None)
    if metric:
        value = _lookup(result, metric)
        shown = _format_value(value) if value is not None else "None"
        return f"Trial {trial} reported {metric}={shown} with parameters={config}.{info}"
    fields = ",".join(
        f"{k}={_format_value(v)}" for k, v in result.items() if k not in _BRIEF_EXCLUDED
    )
    return f"Trial {trial} reported {fields} with parameters={config}.{info}"


def format_trial_error(trial: Any) -> str:
    """One line announcing that ``trial`` failed, with its error file."""
    error_file = getattr(trial, "error_file", None)
    if not error_file and getattr(trial, "local_path", None):
        error_file = os.path.join(trial.local_path, "error.txt")
    return (
        f"The trial {trial} errored with parameters={getattr(trial, 'config', None)}. "
        f"Error file: {error_file}"
    )


def _yaml_like(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines = []
    for key in sorted(value, key=str):
        item = value[key]
        if item is None:
            continue
        if isinstance(item, Mapping):
            if not item:
                lines.append(f"{pad}{key}: {{}}")
                continue
            lines.append(f"{pad}{key}:")
            lines.extend(_yaml_like(item, indent + 2))
        elif isinstance(item, float):
            lines.append(f"{pad}{key}: {item!r}")
        else:
            lines.append(f"{pad}{key}: {item}")
    return lines


def format_trial_result_detailed(trial: Any, result: Mapping[str, Any]) -> str:
    """A multi-line dump of ``result`` (verbosity 3): ``Result for <name>:`` and then
    one indented ``key: value`` line per field, sorted, nested dicts indented
    further. ``config`` and ``None`` values are left out."""
    shown = {k: v for k, v in result.items() if k not in ("config", "hist_stats")}
    return "\n".join([f"Result for {trial}:", *_yaml_like(shown, 2)])


class TrialResultPrinter:
    """Print per-result lines for ``verbose`` 2 (brief) or 3 (detailed).

    A trial's result is printed when it is its last one (``done``) or when at
    least ``interval`` seconds passed since that trial's previous printed
    result, as Ray Tune does; errors are always printed (verbose >= 2).
    """

    def __init__(
        self,
        verbose: int,
        metric: str | None = None,
        writer: Callable[[str], Any] | None = None,
        clock: Callable[[], float] | None = None,
        interval: float = 5.0,
    ) -> None:
        self.verbose = int(verbose)
        self.metric = metric
        self._writer = writer
        self._clock = clock or time.time
        self._interval = interval
        self._last_print: dict[str, float] = {}

    def _write(self, text: str) -> None:
        if self._writer is not None:
            self._writer(text + "\n")
        else:
            sys.stdout.write(text + "\n")

    def on_result(self, trial: Any, result: Mapping[str, Any]) -> bool:
        """Maybe print ``result``; returns True if something was printed."""
        if self.verbose < 2:
            return False
        now = self._clock()
        last = self._last_print.get(trial.trial_id)
        due = result.get("done") is True or last is None or now - last >= self._interval
        if not due:
            return False
        self._last_print[trial.trial_id] = now
        if self.verbose >= 3:
            self._write(format_trial_result_detailed(trial, result))
        else:
            self._write(format_trial_result_brief(trial, result, self.metric))
        return True

    def on_error(self, trial: Any) -> bool:
        """Print that ``trial`` failed (verbose >= 2); returns True if printed."""
        if self.verbose < 2:
            return False
        self._write(format_trial_error(trial))
        return True
