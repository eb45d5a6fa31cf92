"""Keeping a trial's result files consistent when it restarts from a checkpoint."""

from __future__ import annotations

import csv
import json
import os

RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.csv"


def truncate_results(trial_dir: str | None, iteration: int) -> None:
    """Cut ``result.json`` and ``progress.csv`` after the row of ``iteration``.

    The rows to keep are a prefix of the file (everything up to the last row at or
    below ``iteration``): truncating in place at that byte offset also works while a
    logger still holds the file open in append mode. A half-written last line goes too.
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

    # Drop rows from the end back to the last one at or below ``iteration``: rows are
    # appended in order, but a trial restored from another trial's checkpoint (PBT)
    # starts counting again from that checkpoint, so the file need not be sorted.
    body = lines[start:]
    cut = len(body)
    while cut > 0:
        line = body[cut - 1]
        value = parse(line) if line.endswith(b"\n") else None  # a line cut short by a crash
        if value is not None and value <= iteration:
            break
        cut -= 1
    keep += sum(len(line) for line in body[:cut])
    if keep != len(data):
        os.truncate(path, keep)
