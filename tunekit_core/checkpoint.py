"""Checkpoints: a directory of files, written atomically, ranked and pruned per trial."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

# The key under which a result travels with the path of the checkpoint saved with it.
CHECKPOINT_KEY = "_tunekit_checkpoint"
_DICT_FILE = "dict_checkpoint.pkl"
METADATA_FILE = ".tunekit_checkpoint.json"
TMP_PREFIX = ".tmp_checkpoint_"


class Checkpoint:
    """A checkpoint: a directory on the local filesystem.

    Create one from a directory your trainable wrote (:meth:`from_directory`) or
    from a small dict (:meth:`from_dict`); read it back with :meth:`to_directory`,
    :meth:`as_directory` or :meth:`to_dict`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._owned_temp = False

    @classmethod
    def from_directory(cls, path: str | os.PathLike) -> Checkpoint:
        """A checkpoint of the files in ``path`` (tunekit copies them when reported)."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise ValueError(f"Checkpoint.from_directory({path!r}): no such directory.")
        return cls(path)

    @classmethod
    def from_dict(cls, data: dict) -> Checkpoint:
        """A checkpoint holding a small dict (pickled into a fresh directory)."""
        if not isinstance(data, dict):
            raise TypeError(f"Checkpoint.from_dict needs a dict, got {type(data).__name__}.")
        path = tempfile.mkdtemp(prefix="tunekit-checkpoint-")
        with open(os.path.join(path, _DICT_FILE), "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
        checkpoint = cls(path)
        checkpoint._owned_temp = True  # reporting it moves the directory (no leftover)
        return checkpoint

    def to_dict(self) -> dict:
        """The dict stored with :meth:`from_dict` (or by a class trainable's ``save_checkpoint``)."""
        file = os.path.join(self.path, _DICT_FILE)
        if not os.path.exists(file):
            raise ValueError(
                f"The checkpoint at {self.path} holds files, not a dict; use to_directory() or "
                "as_directory() to read it."
            )
        with open(file, "rb") as f:
            return pickle.load(f)

    def to_directory(self, path: str | os.PathLike | None = None) -> str:
        """Copy the checkpoint's files to ``path`` (a new temporary directory by default)."""
        target = os.fspath(path) if path is not None else tempfile.mkdtemp(prefix="tunekit-checkpoint-")
        shutil.copytree(self.path, target, dirs_exist_ok=True, ignore=_ignore_metadata)
        return target

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """The checkpoint as a local directory, for reading only (no copy is made)."""
        yield self.path

    def get_metadata(self) -> dict:
        """What tunekit recorded when it saved this checkpoint (iteration, time...)."""
        try:
            with open(os.path.join(self.path, METADATA_FILE)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def __fspath__(self) -> str:
        return self.path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and os.path.abspath(self.path) == os.path.abspath(other.path)

    def __hash__(self) -> int:
        return hash(os.path.abspath(self.path))

    def __repr__(self) -> str:
        return f"Checkpoint(path={self.path!r})"


def _ignore_metadata(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n == METADATA_FILE]


def checkpoint_dirname(iteration: int) -> str:
    return f"checkpoint_{iteration:06d}"


def persist_checkpoint(source: str, trial_dir: str, iteration: int, metadata: dict, move: bool = False) -> str:
    """Copy (or move) ``source`` into ``trial_dir/checkpoint_<iteration>`` atomically.

    The files are written under a temporary name and renamed once complete, so a
    crash mid-write never leaves a directory that looks like a checkpoint.
    """
    final = os.path.join(trial_dir, checkpoint_dirname(iteration))
    tmp = os.path.join(trial_dir, f"{TMP_PREFIX}{iteration:06d}_{uuid.uuid4().hex[:6]}")
    if os.path.abspath(source) == os.path.abspath(final):
        write_metadata(final, metadata)
        return final
    if move:
        try:
            os.rename(source, tmp)
        except OSError:  # another filesystem (e.g. a tmpfs /tmp): copy, then delete
            shutil.copytree(source, tmp)
            shutil.rmtree(source, ignore_errors=True)
    else:
        shutil.copytree(source, tmp)
    write_metadata(tmp, metadata)
    if os.path.exists(final):
        # A checkpoint of the same iteration (a retry reached it again): replace it.
        old = f"{final}.old-{uuid.uuid4().hex[:6]}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(trial_dir)
    return final


def remove_partial_checkpoints(trial_dir: str | None) -> None:
    """Delete checkpoints a crash left half-written (they never got their final name)."""
    if not trial_dir:
        return
    try:
        names = os.listdir(trial_dir)
    except OSError:
        return
    for name in names:
        if name.startswith(TMP_PREFIX) or ".old-" in name:
            shutil.rmtree(os.path.join(trial_dir, name), ignore_errors=True)


def write_metadata(path: str, metadata: dict) -> None:
    with open(os.path.join(path, METADATA_FILE), "w") as f:
        json.dump(metadata, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def parse_score_attr(checkpoint_score_attr: str | None) -> tuple[str | None, str]:
    """``"min-loss"`` -> ("loss", "min"); ``"acc"`` -> ("acc", "max"); None -> (None, "max")."""
    if not checkpoint_score_attr:
        return None, "max"
    if checkpoint_score_attr.startswith("min-"):
        return checkpoint_score_attr[4:], "min"
    return checkpoint_score_attr, "max"


class TrialCheckpoints:
    """A trial's checkpoints: keeps the best ``keep`` by a score, never the latest deleted.

    Without a score attribute the most recent checkpoints are the best.
    """

    __slots__ = ("keep", "score_attr", "score_mode", "entries")

    def __init__(self, keep: int | None = None, score_attr: str | None = None):
        if keep is not None and keep < 1:
            raise ValueError(f"keep_checkpoints_num must be >= 1 or None, got {keep}.")
        self.keep = keep
        self.score_attr, self.score_mode = parse_score_attr(score_attr)
        # {"path", "iteration", "score"} per kept checkpoint, oldest first. A shared empty
        # tuple until the first checkpoint: most trials of a large search never save one.
        self.entries: list[dict[str, Any]] | tuple = ()

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.entries[-1] if self.entries else None

    def _score(self, entry: dict[str, Any]) -> float:
        if self.score_attr is None:
            return float(entry["iteration"])
        value = entry.get("score")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return -math.inf
        return value if self.score_mode == "max" else -value

    def add(self, path: str, iteration: int, result: dict | None) -> list[str]:
        """Register a checkpoint; returns the paths that should be deleted now."""
        score = None
        if self.score_attr is not None and result is not None:
            score = _lookup(result, self.score_attr)
        self.entries = [e for e in self.entries if e["path"] != path]
        self.entries.append({"path": path, "iteration": iteration, "score": score})
        if self.keep is None or len(self.entries) <= self.keep:
            return []
        latest = self.entries[-1]
        ranked = sorted(self.entries, key=self._score, reverse=True)
        kept = ranked[: self.keep]
        if not any(e is latest for e in kept):
            # The latest is what a retry or a resume restores: it always stays.
            kept = [e for e in ranked if e is not latest][: self.keep - 1] + [latest]
        kept_ids = {id(e) for e in kept}
        dropped = [e for e in self.entries if id(e) not in kept_ids]
        self.entries = [e for e in self.entries if id(e) in kept_ids]
        return [e["path"] for e in dropped]

    def best(self) -> dict[str, Any] | None:
        if not self.entries:
            return None
        return max(self.entries, key=self._score)

    def to_state(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.entries]

    def load_state(self, entries: list[dict[str, Any]]) -> None:
        self.entries = [dict(e) for e in entries]


def _lookup(result: dict, key: str) -> Any:
    if key in result:
        value = result[key]
    else:
        value = result
        for part in key.split("/"):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
