"""Keeping a trial's result files consistent when it restarts from a checkpoint."""

from __future__ import annotations

import csv
import json
import os

RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.csv"


def truncate_results(trial_dir: str | None, iteration: int) -> None:
    """Cut ``result.json`` and ``progress.csv`` after the row of ``iteration``.

    Rows are appended in iteration order, so the rows to keep are a prefix of the
    file: truncating in place at that byte offset also works while a logger still
    holds the file open in append mode. A half-written last line goes too.
    """
    if not trial_dir:
        return
    _truncate(os.path.join(trial_dir, RESULT_FILE), iteration, _json_iteration, has_header=False)
    _truncate(os.path.join(trial_dir, PROGRESS_FILE), iteration, None, has_header=True)


def _json_iteration(line: bytes) -> int | None:
    try:
        return int(json.loads(line)["training_iteration"])
    except (ValueError, KeyError, TypeError):
        return None


def _truncate(path: str, iteration: int, parse, has_header: bool) -> None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    lines = data.splitlines(keepends=True)
    keep = 0
    start = 0
    if has_header:
        if not lines or not lines[0].endswith(b"\n"):
            os.truncate(path, 0)
            return
        header = next(csv.reader([lines[0].decode("utf-8", "replace")]))
        try:
            column = header.index("training_iteration")
        except ValueError:
            return  # not ours to judge
        keep = len(lines[0])
        start = 1

        def parse(line: bytes) -> int | None:
            try:
                row = next(csv.reader([line.decode("utf-8", "replace")]))
                return int(float(row[column]))
            except (ValueError, IndexError, StopIteration):
                return None

    for line in lines[start:]:
        if not line.endswith(b"\n"):
            break  # a line cut short by a crash
        value = parse(line)
        if value is None or value > iteration:
            break
        keep += len(line)
    if keep != len(data):
        os.truncate(path, keep)
