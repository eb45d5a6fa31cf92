"""Experiment syncing to storage: ``SyncConfig(upload_dir=...)`` on any fsspec URL.

An :class:`ExperimentSyncer` mirrors a local experiment directory to a remote
URL (``s3://bucket/path`` with s3fs, ``gs://`` with gcsfs, ``file:///abs/path``,
``memory://...``: whatever fsspec can open). Each sync uploads only the files
whose size or modification time changed since they were last uploaded (a
manifest in the experiment directory remembers what was uploaded) and removes
remote files and directories that are gone locally (pruned checkpoints).

The live state database is never copied as it is: a copy taken while the run
writes to it may be torn. A consistent snapshot is taken with SQLite's online
backup API and uploaded under the database's own name. Files that are only
meaningful next to a live database or mid-write are not uploaded: ``-wal``,
``-shm`` and ``-journal`` files, ``*.tmp`` files, ``.db.bak`` backups (the
uploaded snapshot is itself a consistent copy), and half-written checkpoint
directories (``.tmp_checkpoint_*``, ``*.old-*``).

:class:`SyncerCallback` drives a syncer from the run loop: a periodic sync every
``sync_period`` seconds in a background thread (the run loop only compares two
numbers per step), a sync of the trial directory after each checkpoint when
``sync_on_checkpoint`` is set, and a final sync at the end of the experiment.
:func:`sync_down` (and :func:`download_experiment`) fetch an uploaded
experiment back, for ``resume="REMOTE"``.

fsspec is imported when a syncer is created, never by ``import tunekit``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .callback import Callback
from .checkpoint import TMP_PREFIX
from .state_store import DB_PREFIX, DB_SUFFIX

logger = logging.getLogger("tunekit")

__all__ = [
    "SyncConfig",
    "ExperimentSyncer",
    "SyncerCallback",
    "SyncStats",
    "sync_down",
    "make_syncer_callback",
    "download_experiment",
    "remote_experiment_url",
    "DEFAULT_SYNC_PERIOD",
    "MANIFEST_NAME",
]

DEFAULT_SYNC_PERIOD = 300
MANIFEST_NAME = ".tunekit-sync-manifest.json"
_MANIFEST_FORMAT = "tunekit-sync-manifest/1"

# Object stores have no real directories: creating one is a no-op or a bucket
# request, so the syncer does not create remote directories there.
_OBJECT_STORE_PROTOCOLS = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "r2", "tos", "cos"}
)

# File name endings that are never uploaded or downloaded (see the module docstring).
_EXCLUDED_SUFFIXES = ("-wal", "-shm", "-journal", ".tmp", ".db.bak")
_EXCLUDED_PREFIXES = (".tunekit-write-test-", ".tunekit-download-")


# -- configuration ------------------------------------------------------------------------


@dataclass
class SyncConfig:
    """Where and how often to upload the experiment directory (Ray Tune's ``SyncConfig``).

    Args:
        upload_dir: URL of a directory on any fsspec file system, for example
            ``"s3://bucket/experiments"`` (needs ``s3fs``), ``"gs://bucket/dir"``
            (needs ``gcsfs``) or ``"file:///mnt/shared/results"``. The experiment
            is mirrored to ``<upload_dir>/<experiment name>``. None: no syncing.
        syncer: ``"auto"`` (upload with fsspec) or None (no uploads even when
            ``upload_dir`` is set; ``resume="REMOTE"`` still downloads from it).
        sync_on_checkpoint: Upload a trial's directory as soon as one of its
            checkpoints is persisted (blocks the run loop for that upload).
        sync_period: Minimum number of seconds between two periodic uploads of
            the whole experiment directory (they run in the background).
        storage_options: tunekit extension, keyword only: options passed to the
            fsspec file system, for example
            ``{"client_kwargs": {"endpoint_url": "http://minio:9000"}}`` for an
            S3-compatible server, or credentials. Environment variables read by
            the file system (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...) work
            as well.
    """

    upload_dir: str | None = None
    syncer: Any = "auto"
    sync_on_checkpoint: bool = True
    sync_period: float = DEFAULT_SYNC_PERIOD
    storage_options: dict[str, Any] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.upload_dir is not None:
            if isinstance(self.upload_dir, os.PathLike):
                self.upload_dir = os.fspath(self.upload_dir)
            if not isinstance(self.upload_dir, str) or not self.upload_dir.strip():
                raise ValueError(
                    f"SyncConfig(upload_dir=...) must be a URL string such as "
                    f"'s3://bucket/experiments' or None; got {self.upload_dir!r}."
                )
            validate_upload_dir(self.upload_dir)
        if not (self.syncer is None or self.syncer == "auto"):
            raise ValueError(
                f"SyncConfig(syncer={self.syncer!r}) is not supported: tunekit uploads with "
                "fsspec. Use syncer='auto' (the default) to sync to upload_dir, or syncer=None "
                "to turn uploads off."
            )
        if not isinstance(self.sync_on_checkpoint, bool):
            raise TypeError(
                f"SyncConfig(sync_on_checkpoint=...) must be True or False; got "
                f"{self.sync_on_checkpoint!r}."
            )
        period = self.sync_period
        if isinstance(period, bool) or not isinstance(period, int | float) or period < 0:
            raise ValueError(
                f"SyncConfig(sync_period=...) must be a number of seconds >= 0; got {period!r}."
            )
        if self.storage_options is not None and not isinstance(self.storage_options, dict):
            raise TypeError(
                "SyncConfig(storage_options=...) must be a dict of fsspec file system options "
                f"or None; got {type(self.storage_options).__name__}."
            )


def validate_upload_dir(upload_dir: str) -> str:
    """Check that ``upload_dir`` is a URL fsspec can open; return its protocol.

    Raises ValueError for a plain path, an unknown protocol, or a protocol whose
    fsspec implementation is not installed (naming the package to install).
    """
    from fsspec.core import split_protocol
    from fsspec.registry import get_filesystem_class, known_implementations

    protocol, _ = split_protocol(upload_dir)
    if not protocol:
        raise ValueError(
            f"SyncConfig(upload_dir={upload_dir!r}) is a path, not a URL. Give a URL with a "
            "protocol, such as 's3://bucket/experiments', 'gs://bucket/experiments', or "
            f"'file://{os.path.abspath(os.path.expanduser(upload_dir))}' for a directory on a "
            "shared file system."
        )
    try:
        get_filesystem_class(protocol)
    except ImportError as exc:
        known = known_implementations.get(protocol, {})
        package = str(known.get("class", "")).split(".", 1)[0] or "the fsspec implementation"
        raise ValueError(
            f"SyncConfig(upload_dir={upload_dir!r}): fsspec cannot open {protocol}:// URLs "
            f"here: {exc}. Install the package that provides it: pip install {package}."
        ) from exc
    except ValueError as exc:
        raise ValueError(
            f"SyncConfig(upload_dir={upload_dir!r}): {exc}. Use a protocol fsspec knows, for "
            "example s3:// (pip install s3fs), gs:// (pip install gcsfs), abfs:// (pip install "
            "adlfs) or file:// for a local or mounted directory."
        ) from exc
    return protocol


def remote_experiment_url(upload_dir: str, experiment_name: str) -> str:
    """The URL an experiment named ``experiment_name`` is mirrored to."""
    return upload_dir.rstrip("/") + "/" + experiment_name


def _open_fs(url: str, storage_options: dict[str, Any] | None):
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(url, **(storage_options or {}))
    return fs, root.rstrip("/") or root


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return {protocol} if isinstance(protocol, str) else set(protocol)


# -- local scanning -------------------------------------------------------------------------


def _excluded(name: str, is_dir: bool) -> bool:
    if is_dir:
        return name.startswith(TMP_PREFIX) or ".old-" in name or name.startswith(_EXCLUDED_PREFIXES)
    return (
        name == MANIFEST_NAME
        or name.endswith(_EXCLUDED_SUFFIXES)
        or name.startswith(_EXCLUDED_PREFIXES)
    )


def _is_state_db(rel: str) -> bool:
    return "/" not in rel and rel.startswith(DB_PREFIX) and rel.endswith(DB_SUFFIX)


def _signature(path: str, rel: str, st: os.stat_result) -> list[int]:
    """What identifies a version of a file: size and mtime (plus its WAL's for a state db)."""
    sig = [st.st_size, st.st_mtime_ns]
    if _is_state_db(rel):
        try:
            wal = os.stat(path + "-wal")
            # an empty WAL holds nothing: the same as none
            sig += [wal.st_size, wal.st_mtime_ns] if wal.st_size else [0, 0]
        except OSError:
            sig += [0, 0]
    return sig


def _scan(base: str, start_rel: str = "") -> tuple[dict[str, list[int]], set[str]]:
    """Files (relative path -> signature) and directories under ``base/start_rel``."""
    files: dict[str, list[int]] = {}
    dirs: set[str] = set()
    stack = [start_rel]
    if start_rel and os.path.isdir(os.path.join(base, start_rel)):
        dirs.add(start_rel)
    while stack:
        rel_dir = stack.pop()
        path = os.path.join(base, rel_dir) if rel_dir else base
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not _excluded(entry.name, True):
                        dirs.add(rel)
                        stack.append(rel)
                elif entry.is_file():
                    if not _excluded(entry.name, False):
                        files[rel] = _signature(entry.path, rel, entry.stat())
            except FileNotFoundError:
                continue  # removed while scanning
    return files, dirs


def _under(rel: str, prefix: str) -> bool:
    return not prefix or rel == prefix or rel.startswith(prefix + "/")


def _topmost(paths: set[str]) -> list[str]:
    """The paths of ``paths`` that are not inside another one of them."""
    result: list[str] = []
    for path in sorted(paths):
        if result and path.startswith(result[-1] + "/"):
            continue
        result.append(path)
    return result


def _snapshot_database(path: str) -> str:
    """A consistent copy of the SQLite database ``path`` in a temporary file; its path."""
    fd, tmp = tempfile.mkstemp(prefix="tunekit-state-", suffix=".db")
    os.close(fd)
    try:
        # A normal connection that only reads: SQLite's locking keeps the copy
        # consistent while the run writes, and it leaves no -wal/-shm files behind.
        source = sqlite3.connect(path, timeout=30)
        try:
            target = sqlite3.connect(tmp)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


# -- the syncer -----------------------------------------------------------------------------


@dataclass
class SyncStats:
    """What one sync did (``ExperimentSyncer.last_stats``)."""

    scanned_files: int = 0
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    deleted_files: int = 0
    deleted_dirs: int = 0
    seconds: float = 0.0


class ExperimentSyncer:
    """Mirrors a local experiment directory to a remote fsspec URL.

    Args:
        local_experiment_dir: The experiment directory (``<local_dir>/<name>``).
        remote_experiment_url: Where to mirror it, e.g. ``"s3://bucket/exps/name"``.
        sync_period: Minimum seconds between two syncs that are not forced.
        storage_options: Options for the fsspec file system (endpoint, credentials).

    The file system is opened here, so a malformed URL or missing package fails
    at once. Nothing is uploaded until :meth:`sync_up`.
    """

    def __init__(
        self,
        local_experiment_dir: str,
        remote_experiment_url: str,
        sync_period: float = DEFAULT_SYNC_PERIOD,
        *,
        storage_options: dict[str, Any] | None = None,
    ):
        self.local_dir = os.path.abspath(os.path.expanduser(os.fspath(local_experiment_dir)))
        self.remote_url = remote_experiment_url
        self.sync_period = float(sync_period)
        self.storage_options = dict(storage_options or {})
        self.fs, self.remote_root = _open_fs(remote_experiment_url, self.storage_options)
        self._makes_dirs = not (_protocols(self.fs) & _OBJECT_STORE_PROTOCOLS)
        self._lock = threading.Lock()
        self._last_sync = float("-inf")  # time.monotonic() at the start of the last sync
        self._files: dict[str, list] = {}  # rel -> [signature, remote size]
        self._dirs: set[str] = set()
        self._reconciled = False
        self._root_made = False
        self.last_stats: SyncStats | None = None

    # -- public --------------------------------------------------------------------------
    @property
    def next_sync_due(self) -> float:
        """``time.monotonic()`` value from which a sync that is not forced runs."""
        return self._last_sync + self.sync_period

    def sync_up(self, force: bool = False, subdir: str | None = None) -> bool:
        """Upload what changed since the last sync and delete what was removed locally.

        Unless ``force``, does nothing (and returns False) when the previous sync
        started less than ``sync_period`` seconds ago. ``subdir`` (a path inside
        the experiment directory, absolute or relative) limits the sync to that
        directory, e.g. one trial's directory after a checkpoint; such a sync
        does not restart the period. Returns True when a sync ran. Errors of the
        file system (network, permissions) are raised; files left out by a failed
        sync are uploaded by the next one.
        """
        with self._lock:
            now = time.monotonic()
            if not force and now < self._last_sync + self.sync_period:
                return False
            if not os.path.isdir(self.local_dir):
                # Never mirror a missing directory: that would delete the remote copy.
                raise FileNotFoundError(
                    f"The experiment directory {self.local_dir} does not exist; nothing was "
                    f"synced to {self.remote_url}."
                )
            prefix = ""
            if subdir is not None:
                prefix = self._relative(subdir)
            if not prefix:
                self._last_sync = now
            self._sync(prefix)
            return True

    def sync_down(self) -> int:
        """Download the remote experiment into the local directory; the number of files."""
        count = sync_down(self.remote_url, self.local_dir, storage_options=self.storage_options)
        with self._lock:
            self._files.clear()
            self._dirs.clear()
            self._reconciled = False
        return count

    # -- internals -----------------------------------------------------------------------
    def _relative(self, subdir: str) -> str:
        path = os.path.abspath(os.path.join(self.local_dir, os.fspath(subdir)))
        rel = os.path.relpath(path, self.local_dir)
        if rel == os.curdir:
            return ""
        if rel.startswith(os.pardir):
            raise ValueError(
                f"sync_up(subdir={subdir!r}): the directory is not inside the experiment "
                f"directory {self.local_dir}."
            )
        return rel.replace(os.sep, "/")

    def _remote(self, rel: str) -> str:
        return f"{self.remote_root}/{rel}" if rel else self.remote_root

    def _manifest_path(self) -> str:
        return os.path.join(self.local_dir, MANIFEST_NAME)

    def _reconcile(self) -> None:
        """First sync: trust the saved manifest only where the remote still agrees."""
        self._reconciled = True
        manifest = _read_manifest(self._manifest_path(), self.remote_url)
        if manifest is None:
            return
        files, dirs = manifest
        try:
            remote = _list_remote(self.fs, self.remote_root)
        except FileNotFoundError:
            remote = {}
        sizes = {rel: info.get("size") for rel, info in remote.items() if info["type"] == "file"}
        self._files = {rel: entry for rel, entry in files.items() if sizes.get(rel) == entry[1]}
        if self._makes_dirs:
            # directories that vanished remotely are created again by the next sync
            self._dirs = dirs & {r for r, info in remote.items() if info["type"] == "directory"}
            self._root_made = bool(remote)
        else:
            self._dirs = dirs

    def _sync(self, prefix: str) -> None:
        started = time.perf_counter()
        if not self._reconciled:
            self._reconcile()
        stats = SyncStats()
        local_files, local_dirs = _scan(self.local_dir, prefix)
        stats.scanned_files = len(local_files)
        known = self._files
        changed = [rel for rel, sig in local_files.items() if known.get(rel, (None,))[0] != sig]

        if self._makes_dirs:
            if not self._root_made:
                self.fs.makedirs(self.remote_root, exist_ok=True)
                self._root_made = True
            for rel in sorted(local_dirs - self._dirs):
                self.fs.makedirs(self._remote(rel), exist_ok=True)
        self._dirs |= local_dirs

        temporaries: list[str] = []
        try:
            lpaths, rpaths, uploads = [], [], []
            for rel in sorted(changed):
                lpath = os.path.join(self.local_dir, rel)
                if _is_state_db(rel):
                    try:
                        lpath = _snapshot_database(lpath)
                    except (sqlite3.Error, OSError) as exc:
                        logger.warning("Could not snapshot %s for upload: %s", lpath, exc)
                        continue
                    temporaries.append(lpath)
                try:
                    size = os.path.getsize(lpath)
                except OSError:
                    continue  # removed since the scan
                lpaths.append(lpath)
                rpaths.append(self._remote(rel))
                uploads.append((rel, size))
            done = self._put(lpaths, rpaths)
            for (rel, size), ok in zip(uploads, done):
                if ok:
                    known[rel] = [local_files[rel], size]
                    stats.uploaded_files += 1
                    stats.uploaded_bytes += size
        finally:
            for tmp in temporaries:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

        # What was uploaded before and is gone now: pruned checkpoints, deleted files.
        gone_dirs = {d for d in self._dirs if _under(d, prefix) and d not in local_dirs}
        for rel in _topmost(gone_dirs):
            try:
                self.fs.rm(self._remote(rel), recursive=True)
            except FileNotFoundError:
                pass
            stats.deleted_dirs += 1
        self._dirs -= gone_dirs
        gone_files = [rel for rel in known if _under(rel, prefix) and rel not in local_files]
        loose = [rel for rel in gone_files if not any(_under(rel, d) for d in gone_dirs)]
        if loose:
            try:
                self.fs.rm([self._remote(rel) for rel in loose])
            except FileNotFoundError:
                pass
        for rel in gone_files:
            del known[rel]
        stats.deleted_files = len(gone_files)

        if stats.uploaded_files or gone_files or gone_dirs:
            _write_manifest(self._manifest_path(), self.remote_url, known, self._dirs)
        stats.seconds = time.perf_counter() - started
        self.last_stats = stats
        logger.debug(
            "Synced %s to %s: %d of %d files uploaded (%d bytes), %d removed, %.3f s.",
            self.local_dir,
            self.remote_url,
            stats.uploaded_files,
            stats.scanned_files,
            stats.uploaded_bytes,
            stats.deleted_files,
            stats.seconds,
        )

    def _put(self, lpaths: list[str], rpaths: list[str]) -> list[bool]:
        """Upload in one batch (concurrent on async file systems); which files made it."""
        if not lpaths:
            return []
        try:
            self.fs.put(lpaths, rpaths)
            return [True] * len(lpaths)
        except FileNotFoundError:
            pass  # a local file vanished mid-batch (a pruned checkpoint): one by one
        done = []
        for lpath, rpath in zip(lpaths, rpaths):
            try:
                self.fs.put_file(lpath, rpath)
                done.append(True)
            except FileNotFoundError:
                if os.path.exists(lpath):
                    raise
                done.append(False)
        return done


# -- manifest -------------------------------------------------------------------------------


def _read_manifest(path: str, remote_url: str) -> tuple[dict[str, list], set[str]] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if data.get("format") != _MANIFEST_FORMAT or data.get("remote") != remote_url:
        return None
    files = {
        rel: entry
        for rel, entry in data.get("files", {}).items()
        if isinstance(entry, list) and len(entry) == 2
    }
    return files, set(data.get("dirs", []))


def _write_manifest(path: str, remote_url: str, files: dict[str, list], dirs: set[str]) -> None:
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "format": _MANIFEST_FORMAT,
                    "remote": remote_url,
                    "files": files,
                    "dirs": sorted(dirs),
                },
                f,
                separators=(",", ":"),
            )
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("Could not save the sync manifest %s: %s", path, exc)
        try:
            os.unlink(tmp)
        except OSError:
            pass


# -- download ----------------------------------------------------------------------------


def _list_remote(fs: Any, root: str) -> dict[str, dict]:
    """Relative path -> fsspec info of everything under ``root`` (excluded names dropped)."""
    invalidate = getattr(fs, "invalidate_cache", None)
    if invalidate is not None:
        invalidate(root)
    found = fs.find(root, withdirs=True, detail=True)
    result: dict[str, dict] = {}
    strip = len(root) + 1
    for path, info in found.items():
        path = path.rstrip("/")
        if not path.startswith(root + "/"):
            continue
        rel = path[strip:]
        parts = rel.split("/")
        is_dir = info.get("type") == "directory"
        if any(_excluded(p, True) for p in parts[:-1]) or _excluded(parts[-1], is_dir):
            continue
        result[rel] = {"type": "directory" if is_dir else "file", "size": info.get("size")}
    return result


def sync_down(
    remote_url: str,
    local_dir: str,
    storage_options: dict[str, Any] | None = None,
) -> int:
    """Download the experiment directory at ``remote_url`` into ``local_dir``.

    The files are fetched into a temporary directory beside ``local_dir`` and
    moved into place once all arrived, so a failed download leaves ``local_dir``
    as it was. Files already in ``local_dir`` that also exist remotely are
    replaced (with any ``-wal``/``-shm`` files of a replaced database); others
    are kept. Returns the number of files downloaded; raises ValueError when
    there is nothing at ``remote_url``.
    """
    fs, root = _open_fs(remote_url, storage_options)
    try:
        remote = _list_remote(fs, root)
    except FileNotFoundError:
        remote = {}
    files = sorted(rel for rel, info in remote.items() if info["type"] == "file")
    if not files:
        raise ValueError(
            f"There is nothing to download at {remote_url}: no experiment was uploaded there. "
            "Check SyncConfig(upload_dir=...) and the experiment name."
        )
    local_dir = os.path.abspath(os.path.expanduser(os.fspath(local_dir)))
    parent = os.path.dirname(local_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tunekit-download-", dir=parent)
    try:
        for rel in sorted(rel for rel, info in remote.items() if info["type"] == "directory"):
            os.makedirs(os.path.join(staging, rel), exist_ok=True)
        for rel in files:
            os.makedirs(os.path.dirname(os.path.join(staging, rel)), exist_ok=True)
        fs.get([f"{root}/{rel}" for rel in files], [os.path.join(staging, rel) for rel in files])
        _merge_into(staging, local_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # The downloaded files equal the remote ones: a syncer of the resumed run uploads
    # only what changes from now on.
    manifest: dict[str, list] = {}
    for rel in files:
        path = os.path.join(local_dir, rel)
        try:
            manifest[rel] = [_signature(path, rel, os.stat(path)), remote[rel]["size"]]
        except OSError:
            continue
    dirs = {rel for rel, info in remote.items() if info["type"] == "directory"}
    dirs |= {os.path.dirname(rel) for rel in files if "/" in rel}
    _write_manifest(os.path.join(local_dir, MANIFEST_NAME), remote_url, manifest, dirs)
    return len(files)


def _merge_into(source: str, target: str) -> None:
    """Move the tree ``source`` into ``target`` (a rename when ``target`` is empty)."""
    if not os.path.exists(target) or (os.path.isdir(target) and not os.listdir(target)):
        if os.path.isdir(target):
            os.rmdir(target)
        os.rename(source, target)
        os.makedirs(source)  # the caller removes it
        return
    for dirpath, _dirnames, filenames in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        dest_dir = target if rel == os.curdir else os.path.join(target, rel)
        os.makedirs(dest_dir, exist_ok=True)
        for name in filenames:
            dest = os.path.join(dest_dir, name)
            if name.startswith(DB_PREFIX) and name.endswith(DB_SUFFIX):
                # A stale WAL next to a replaced database would be replayed into it.
                for suffix in ("-wal", "-shm"):
                    if os.path.exists(dest + suffix):
                        os.unlink(dest + suffix)
            os.replace(os.path.join(dirpath, name), dest)


# -- run loop integration ---------------------------------------------------------------------


class SyncerCallback(Callback):
    """Drives an :class:`ExperimentSyncer` from the run loop.

    * every step: when ``sync_period`` has passed since the last sync, start one
      in a background thread (the step itself only compares two numbers);
    * after a checkpoint is persisted (``sync_on_checkpoint``): upload that
      trial's directory at once, so the checkpoint is in storage before the run
      goes on;
    * at the end of the experiment: wait for a running sync, then sync everything.

    Sync errors are logged, never raised into the run: the next sync retries.
    """

    def __init__(self, syncer: ExperimentSyncer, sync_on_checkpoint: bool = True):
        self.syncer = syncer
        self.sync_on_checkpoint = sync_on_checkpoint
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() < self.syncer.next_sync_due:
            return
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        self._thread = threading.Thread(
            target=self._sync, args=(False, None, logging.WARNING), name="tunekit-sync", daemon=True
        )
        self._thread.start()

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        if not self.sync_on_checkpoint:
            return
        trial_dir = getattr(trial, "local_path", None)
        if not trial_dir:
            trial_dir = os.path.dirname(os.fspath(checkpoint))
        self._sync(True, trial_dir, logging.WARNING)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.wait()
        self._sync(True, None, logging.ERROR)

    def wait(self) -> None:
        """Wait until a background sync, if one runs, has finished."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None

    def _sync(self, force: bool, subdir: str | None, level: int) -> None:
        try:
            self.syncer.sync_up(force=force, subdir=subdir)
        except Exception as exc:  # noqa: BLE001 - a failed upload must not end the run
            self.last_error = exc
            logger.log(
                level,
                "Could not sync the experiment %s to %s: %s: %s. %s",
                self.syncer.local_dir,
                self.syncer.remote_url,
                type(exc).__name__,
                exc,
                "The next sync tries again."
                if level < logging.ERROR
                else "The local experiment directory is complete; upload it again with "
                "ExperimentSyncer(...).sync_up(force=True).",
            )


def make_syncer_callback(
    sync_config: SyncConfig | None, experiment_dir: str, experiment_name: str
) -> SyncerCallback | None:
    """The callback that uploads ``experiment_dir`` as ``sync_config`` says, or None.

    None when ``sync_config`` is None, has no ``upload_dir``, or has ``syncer=None``.
    The experiment goes to ``<upload_dir>/<experiment_name>``.
    """
    if sync_config is None:
        return None
    if not isinstance(sync_config, SyncConfig):
        raise TypeError(
            f"sync_config must be a tunekit.SyncConfig, got {type(sync_config).__name__}."
        )
    if not sync_config.upload_dir or sync_config.syncer is None:
        return None
    syncer = ExperimentSyncer(
        experiment_dir,
        remote_experiment_url(sync_config.upload_dir, experiment_name),
        sync_config.sync_period,
        storage_options=sync_config.storage_options,
    )
    return SyncerCallback(syncer, sync_on_checkpoint=sync_config.sync_on_checkpoint)


def download_experiment(
    sync_config: SyncConfig | None, experiment_dir: str, experiment_name: str
) -> None:
    """Download ``<upload_dir>/<experiment_name>`` into ``experiment_dir`` (``resume="REMOTE"``).

    Raises ValueError when ``sync_config`` names no ``upload_dir`` or when no
    experiment state was uploaded there.
    """
    if sync_config is None or not getattr(sync_config, "upload_dir", None):
        raise ValueError(
            "resume='REMOTE' downloads the experiment from storage, but no upload_dir is "
            "set. Pass sync_config=tunekit.SyncConfig(upload_dir='s3://bucket/path') naming "
            "where the experiment was uploaded, or use resume=True for a local experiment."
        )
    if not isinstance(sync_config, SyncConfig):
        raise TypeError(
            f"sync_config must be a tunekit.SyncConfig, got {type(sync_config).__name__}."
        )
    remote = remote_experiment_url(sync_config.upload_dir, experiment_name)
    fs, root = _open_fs(remote, sync_config.storage_options)
    try:
        listing = _list_remote(fs, root)
    except FileNotFoundError:
        listing = {}
    if not any(
        "/" not in rel and rel.startswith(DB_PREFIX) and info["type"] == "file"
        for rel, info in listing.items()
    ):
        raise ValueError(
            f"resume='REMOTE': there is no experiment state at {remote} "
            f"({'empty or missing' if not listing else 'no experiment_state-* file'}). Check "
            "SyncConfig(upload_dir=...) and the experiment name, or resume='AUTO'/False to "
            "start a new experiment."
        )
    count = sync_down(remote, experiment_dir, storage_options=sync_config.storage_options)
    logger.info("Downloaded %d files of the experiment %s into %s.", count, remote, experiment_dir)
