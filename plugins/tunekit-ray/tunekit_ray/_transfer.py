"""Moving trial files between a Ray node and the driver's experiment directory.

When a trial runs on a node that does not see the driver's experiment directory,
its worker writes the trial's files into a staging directory on that node and
sends checkpoints (and, when the trial ends, its other files) to the driver as
tar archives. The driver installs each checkpoint under its final name atomically:
unpacked under a temporary name, then renamed, as for local checkpoints.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import uuid

from tunekit_core.checkpoint import TMP_PREFIX

_TRANSFER_PREFIX = f"{TMP_PREFIX}xfer_"


def pack_directory(path: str, skip: frozenset[str] = frozenset()) -> bytes:
    """The files under ``path`` as an uncompressed tar archive (names relative to ``path``).

    Top-level entries named in ``skip`` are left out.
    """
    buffer = io.BytesIO()
    # Symbolic links are sent as the files they point to.
    with tarfile.open(fileobj=buffer, mode="w", dereference=True) as archive:
        for name in sorted(os.listdir(path)):
            if name in skip:
                continue
            archive.add(os.path.join(path, name), arcname=name)
    return buffer.getvalue()


def directory_size(path: str) -> int:
    """Bytes of the regular files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def unpack_into(blob: bytes, target: str) -> None:
    """Extract an archive made by :func:`pack_directory` into ``target`` (created if needed).

    Only regular files and directories are extracted, and only inside ``target``.
    """
    os.makedirs(target, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as archive:
        members = archive.getmembers()
        for member in members:
            name = os.path.normpath(member.name)
            if (
                os.path.isabs(name)
                or name == os.pardir
                or name.startswith(os.pardir + os.sep)
                or not (member.isfile() or member.isdir())
            ):
                raise ValueError(
                    f"Refusing to extract {member.name!r} from a transferred archive: only "
                    "plain files and directories inside the target are accepted."
                )
        if hasattr(tarfile, "data_filter"):
            archive.extractall(target, members=members, filter="data")
        else:  # Python < 3.11.4: the members were checked above
            archive.extractall(target, members=members)


def install_checkpoint(blob: bytes, trial_dir: str, name: str) -> str:
    """Unpack a transferred checkpoint as ``trial_dir/name``, atomically; returns its path.

    A checkpoint of the same name (a retry that reached the same iteration again)
    is replaced.
    """
    if os.sep in name or name in ("", ".", ".."):
        raise ValueError(f"Refusing a transferred checkpoint with the name {name!r}.")
    os.makedirs(trial_dir, exist_ok=True)
    final = os.path.join(trial_dir, name)
    tmp = os.path.join(trial_dir, f"{_TRANSFER_PREFIX}{uuid.uuid4().hex[:8]}")
    try:
        unpack_into(blob, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(final):
        old = f"{final}.old-{uuid.uuid4().hex[:6]}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(trial_dir)
    return final


def merge_files(blob: bytes, trial_dir: str, append: frozenset[str] = frozenset()) -> None:
    """Copy the files of a transferred trial directory into ``trial_dir``.

    Files named in ``append`` (the trial's stdout/stderr logs) are appended to what is
    already there; every other file replaces its namesake atomically.
    """
    tmp = os.path.join(trial_dir, f"{_TRANSFER_PREFIX}{uuid.uuid4().hex[:8]}")
    try:
        unpack_into(blob, tmp)
        for root, dirs, files in os.walk(tmp):
            relative_root = os.path.relpath(root, tmp)
            for name in dirs:
                os.makedirs(os.path.join(trial_dir, relative_root, name), exist_ok=True)
            for name in files:
                relative = os.path.normpath(os.path.join(relative_root, name))
                source = os.path.join(root, name)
                target = os.path.join(trial_dir, relative)
                if relative in append and os.path.exists(target):
                    with open(source, "rb") as src, open(target, "ab") as dst:
                        shutil.copyfileobj(src, dst)
                else:
                    os.replace(source, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
