"""Forking the driver: its worker processes and searcher processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings


def fork() -> int:
    """``os.fork()`` after flushing the standard streams (what they buffer now would
    otherwise be written again by the child) and without Python 3.12's warning about
    forking a process that has native threads (BLAS pools): tunekit forks only from its
    own loop, and the child never relies on those threads."""
    for stream in {sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__}:
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


class ForkedProcess:
    """The ``subprocess.Popen`` surface (pid, poll, wait, kill) for a forked child."""

    __slots__ = ("pid", "returncode")

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.returncode = 0
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"tunekit child {self.pid}", timeout)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass


def wait_or_kill(process: subprocess.Popen | ForkedProcess, timeout: float) -> int:
    """Wait up to ``timeout`` seconds for ``process`` to end, then kill it; its exit code."""
    try:
        return process.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        try:
            process.kill()
        except OSError:
            pass
        return process.wait()
