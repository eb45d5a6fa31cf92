"""``tunekit ls`` and ``tunekit best``: look at an experiment directory from the shell.

Both read the directory with :class:`~tunekit_core.analysis.ExperimentAnalysis`, so
they work on finished runs, on runs still going (the live state database) and on
directories copied elsewhere, and they change nothing on disk.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import operator
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["add_best", "add_ls", "parse_filter"]

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
#: Result fields shown as their own columns before the reported metrics.
_PROGRESS_COLUMNS = ("training_iteration", "time_total_s")


def _load(directory: str) -> Any:
    from .analysis import ExperimentAnalysis

    if not os.path.isdir(directory):
        raise SystemExit(f"tunekit: {directory} is not a directory (give an experiment directory).")
    try:
        return ExperimentAnalysis(directory)
    except ValueError as exc:
        raise SystemExit(f"tunekit: {exc}") from None


def _parse_value(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    return text.strip("'\"")


def parse_filter(expression: str) -> tuple[str, str, Any]:
    """``"loss < 0.5"`` -> ``("loss", "<", 0.5)``; raises ``ValueError`` when malformed."""
    for symbol in sorted(_OPERATORS, key=len, reverse=True):
        column, sep, value = expression.partition(symbol)
        if sep and column.strip() and value.strip():
            return column.strip(), symbol, _parse_value(value.strip())
    raise ValueError(
        f"Cannot parse the filter {expression!r}: write COLUMN OP VALUE with OP one of "
        f"{', '.join(_OPERATORS)}, e.g. --filter 'loss < 0.5' or --filter 'status == TERMINATED'."
    )


def _matches(row: dict[str, Any], column: str, symbol: str, value: Any) -> bool:
    cell = row.get(column)
    if cell is None:
        return (symbol == "==" and value is None) or (symbol == "!=" and value is not None)
    try:
        return bool(_OPERATORS[symbol](cell, value))
    except TypeError:  # comparing a number with text: compare as text
        return bool(_OPERATORS[symbol](str(cell), str(value)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rows(analysis: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per trial: id, name, status, searched parameters, progress, metrics, logdir."""
    from .progress import AUTO_RESULT_KEYS
    from .space import flatten_dict

    params: dict[str, None] = {}
    metrics: dict[str, None] = {}
    rows = []
    for trial in analysis.trials:
        result = flatten_dict({k: v for k, v in (trial.last_result or {}).items() if k != "config"})
        evaluated = dict(trial.evaluated_params or {})
        if not evaluated:  # a directory without searched parameters: show the constants
            evaluated = {
                k: v for k, v in flatten_dict(trial.config or {}).items() if not isinstance(v, list)
            }
        row: dict[str, Any] = {"trial_id": trial.trial_id, "name": str(trial), "status": trial.status}
        for key, value in evaluated.items():
            params[f"config/{key}"] = None
            row[f"config/{key}"] = value
        for key in _PROGRESS_COLUMNS:
            row[key] = result.get(key)
        for key, value in result.items():
            if key in AUTO_RESULT_KEYS or key.startswith("config/") or not _is_number(value):
                continue
            metrics[key] = None
            row[key] = value
        row["num_failures"] = trial.num_failures
        row["logdir"] = trial.local_path
        rows.append(row)
    columns = ["trial_id", "name", "status", *params, *_PROGRESS_COLUMNS, *metrics,
               "num_failures", "logdir"]
    return columns, rows


def _sort_key(column: str) -> Callable[[dict[str, Any]], tuple]:
    def key(row: dict[str, Any]) -> tuple:
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (2, 0, "")  # missing values last
        if _is_number(value):
            return (0, value, "")
        return (1, 0, str(value))

    return key


def _column(name: str, columns: list[str], purpose: str) -> str:
    """``name`` as a column: itself, or ``config/<name>`` for a searched parameter."""
    if name in columns:
        return name
    if f"config/{name}" in columns:
        return f"config/{name}"
    raise SystemExit(
        f"tunekit: cannot {purpose} {name!r}, which no trial has; the columns are: "
        f"{', '.join(columns)}"
    )


def _select(columns: list[str], wanted: str | None) -> list[str]:
    if not wanted:
        return columns
    return [_column(c.strip(), columns, "show") for c in wanted.split(",") if c.strip()]


def _ls(args: argparse.Namespace) -> int:
    analysis = _load(args.directory)
    columns, rows = _rows(analysis)
    for expression in args.filter or []:
        try:
            column, symbol, value = parse_filter(expression)
        except ValueError as exc:
            raise SystemExit(f"tunekit: {exc}") from None
        column = _column(column, columns, "filter on")
        rows = [row for row in rows if _matches(row, column, symbol, value)]
    if args.sort:
        for spec in reversed([s.strip() for s in args.sort.split(",") if s.strip()]):
            descending = spec.startswith("-")
            column = _column(spec.lstrip("-"), columns, "sort by")
            present = [r for r in rows if r.get(column) is not None]
            missing = [r for r in rows if r.get(column) is None]
            present.sort(key=_sort_key(column), reverse=descending != args.desc)
            rows = present + missing
    if args.limit is not None:
        rows = rows[: args.limit]
    shown = _select(columns, args.columns)
    _write_rows(shown, rows, args.output)
    return 0


def _write_rows(columns: list[str], rows: Iterable[dict[str, Any]], output: str) -> None:
    rows = list(rows)
    if output == "json":
        json.dump([{c: row.get(c) for c in columns} for row in rows], sys.stdout, indent=2,
                  default=str)
        sys.stdout.write("\n")
    elif output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    else:
        from .progress import format_table

        if output == "table" and "logdir" in columns and columns[-1] == "logdir":
            columns = columns[:-1]  # long; shown by --output csv/json or --columns
        print(format_table(columns, [[row.get(c) for c in columns] for row in rows]))
        print(f"{len(rows)} trial(s)")


def add_ls(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ls",
        help="list the trials of an experiment directory",
        description=(
            "List the trials of an experiment directory (finished or still running): id, "
            "status, searched parameters, iterations, time and the last reported metrics."
        ),
    )
    parser.add_argument("directory", help="the experiment directory (<local_dir>/<name>)")
    parser.add_argument(
        "--sort", metavar="COLS",
        help="sort by these columns, comma-separated; a leading '-' sorts one descending "
             "(missing values last), e.g. --sort=-accuracy,trial_id",
    )
    parser.add_argument("--desc", action="store_true", help="reverse every sort column")
    parser.add_argument(
        "--filter", action="append", metavar="EXPR",
        help="keep trials where COLUMN OP VALUE holds (OP: == != < <= > >=), e.g. "
             "--filter 'loss < 0.5'; repeat to combine (all must hold)",
    )
    parser.add_argument("--columns", metavar="COLS", help="only these columns, comma-separated")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N trials")
    parser.add_argument(
        "--output", choices=("table", "csv", "json"), default="table",
        help="table (default), csv or json on stdout",
    )
    parser.set_defaults(handler=_ls)


def _best(args: argparse.Namespace) -> int:
    analysis = _load(args.directory)
    try:
        trial = analysis.get_best_trial(args.metric, args.mode, scope=args.scope)
    except ValueError as exc:
        raise SystemExit(f"tunekit: {exc}") from None
    if trial is None:
        raise SystemExit(f"tunekit: no trial has a finite value of {args.metric!r}.")
    from .analysis import _checkpoint_entries

    checkpoint = None
    if _checkpoint_entries(trial):
        try:
            checkpoint = analysis.get_best_checkpoint(trial, args.metric, args.mode)
        except ValueError:  # the metric was not reported at the checkpoints' iterations
            checkpoint = None
        if checkpoint is None:
            checkpoint = analysis.get_last_checkpoint(trial)
    record = {
        "trial_id": trial.trial_id,
        "name": str(trial),
        "status": trial.status,
        "metric": args.metric,
        "mode": args.mode,
        "value": analysis._score(trial, args.metric, args.mode, args.scope),
        "config": trial.config,
        "logdir": trial.local_path,
        "checkpoint": os.fspath(checkpoint) if checkpoint is not None else None,
    }
    if args.json:
        json.dump(record, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    scope = "" if args.scope == "last" else f" ({args.scope})"
    print(f"Best trial: {record['name']} ({record['status']})")
    print(f"{args.metric}{scope}: {record['value']}")
    print(f"config: {json.dumps(record['config'], default=str, sort_keys=True)}")
    print(f"logdir: {record['logdir']}")
    print(f"checkpoint: {record['checkpoint'] or '(none)'}")
    return 0


def add_best(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "best",
        help="the best trial of an experiment: config and checkpoint path",
        description=(
            "Print the best trial of an experiment directory by a metric: its config, its "
            "directory and its best checkpoint (by the same metric; else its latest)."
        ),
    )
    parser.add_argument("directory", help="the experiment directory (<local_dir>/<name>)")
    parser.add_argument("--metric", required=True, help="the reported result field to rank by")
    parser.add_argument("--mode", required=True, choices=("min", "max"))
    parser.add_argument(
        "--scope", default="last", choices=("last", "avg", "last-5-avg", "last-10-avg", "all"),
        help="which value of each trial counts (default: its last), as in get_best_trial",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(handler=_best)
