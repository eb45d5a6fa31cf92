"""The local executor: trials run in reusable worker processes on this machine."""

from __future__ import annotations

import json
import math
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from .errors import TuneError
from .executor import Executor, TrialLaunch
from .forking import ForkedProcess, fork, wait_or_kill
from .resources import CPU, GPU, MEMORY, format_resources

_UNIT = 10_000  # resource amounts are tracked in integer ten-thousandths


def _units(value: float) -> int:
    return int(round(value * _UNIT))


def _detect_gpu_ids() -> list[str]:
    override = os.environ.get("TUNEKIT_NUM_GPUS")
    if override is not None:
        return [str(i) for i in range(int(override))]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
        return [] if ids == ["-1"] else ids
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


def _node_ip(hostname: str) -> str:
    """The host's IPv4 address, as ``socket.gethostbyname`` gives it. An ASCII name goes
    to ``getaddrinfo`` as bytes: a str would import the idna codec first (~4 ms)."""
    try:
        try:
            host = hostname.encode("ascii")
        except UnicodeEncodeError:
            return socket.gethostbyname(hostname)
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except (OSError, IndexError):
        return "127.0.0.1"


def _fork_blocker() -> str | None:
    """Why a worker cannot be forked from this driver now (None: it can)."""
    if threading.active_count() > 1:
        return "the driver runs other threads"
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_initialized():
                return "the driver has initialised CUDA"
        except Exception:  # noqa: BLE001 - an unusual torch: do not fork
            return "torch's CUDA state is unknown"
    for name in ("jax", "tensorflow"):
        if name in sys.modules:
            return f"the driver has imported {name}"
    return None


class _Worker:
    __slots__ = ("proc", "conn", "gpu_ids", "trial", "known", "retiring", "kill_at", "location")

    def __init__(self, proc: subprocess.Popen | ForkedProcess, conn: Connection, gpu_ids: tuple[str, ...]):
        self.location: tuple[int, str, str] | None = None  # (pid, hostname, node ip)
        self.proc = proc
        self.conn = conn
        self.gpu_ids = gpu_ids
        self.trial = None
        self.known: set[str] = set()
        self.retiring = False
        self.kill_at: float | None = None


class LocalExecutor(Executor):
    """Runs trials in worker processes on this machine.

    A crash in user code (an exception, ``os._exit``, a segfault, a kill) ends that
    trial with an error and never the driver. Workers are kept warm and reused
    between trials. CPUs, GPUs and custom resources are accounted per trial; each
    trial sees only its GPUs through ``CUDA_VISIBLE_DEVICES``.

    On Linux a worker is forked from the driver (ready in a millisecond or two,
    sharing the modules the driver already imported) when that is safe: the
    worker gets no GPUs, the driver runs no other threads, has not initialised
    CUDA through torch and has not imported jax or tensorflow. Otherwise, and
    with ``start_method="spawn"``, it is a fresh interpreter
    (``python -m tunekit_core.worker``).

    Args:
        reuse_actors: keep class-trainable instances and call ``reset_config``.
        resources: override the detected totals, e.g. ``{"CPU": 8, "GPU": 2, "disk": 1}``.
            The environment variables ``TUNEKIT_NUM_CPUS``, ``TUNEKIT_NUM_GPUS`` and
            ``TUNEKIT_RESOURCES`` (a JSON dict of custom resources) do the same.
        stop_grace_s: how long a stopped trial may run before its worker is killed
            (default 5 s, or ``TUNEKIT_STOP_GRACE_S``).
        start_method: ``"auto"`` (the default, or ``TUNEKIT_WORKER_START``): fork when
            safe, as above; ``"spawn"``: always a fresh interpreter; ``"fork"``: fork
            even while the driver runs other threads (still not for GPU trials, nor on
            platforms without ``fork``).
    """

    def __init__(
        self,
        reuse_actors: bool = False,
        resources: dict[str, float] | None = None,
        stop_grace_s: float | None = None,
        start_method: str | None = None,
    ):
        self.reuse_actors = reuse_actors
        if start_method is None:
            start_method = os.environ.get("TUNEKIT_WORKER_START") or "auto"
        if start_method not in ("auto", "fork", "spawn"):
            raise ValueError(
                f"start_method (or TUNEKIT_WORKER_START) must be 'auto', 'fork' or 'spawn', "
                f"got {start_method!r}."
            )
        self.start_method = start_method
        self._override = dict(resources or {})
        if stop_grace_s is None:
            stop_grace_s = float(os.environ.get("TUNEKIT_STOP_GRACE_S", "5"))
        self.stop_grace_s = stop_grace_s
        self._workers: dict[Connection, _Worker] = {}
        self._by_trial: dict[object, _Worker] = {}
        self._wake_r: int | None = None
        # One poll set for the run (a fresh selector per wait costs more than the wait).
        self._poller: select.poll | None = None
        self._by_fd: dict[int, _Worker] = {}  # the workers by their socket's descriptor
        self._wake_w: int | None = None
        self._watched: dict[int, Callable[[], None]] = {}  # fd -> on_readable (watch)
        self._gpu_ids: list[str] = []
        self._totals: dict[str, int] = {}
        self._used: dict[str, int] = {}
        self._gpu_free: dict[str, int] = {}
        self._trial_gpus: dict[object, list[tuple[str, int]]] = {}
        self._hostname = socket.gethostname()
        self._node_ip = ""
        self._env: dict[str, str] | None = None
        self._is_setup = False
        self._compute_totals()

    # -- resources ---------------------------------------------------------------------
    def _compute_totals(self) -> None:
        cpus = self._override.get(CPU, os.environ.get("TUNEKIT_NUM_CPUS") or os.cpu_count() or 1)
        totals = {CPU: float(cpus)}
        if GPU in self._override:
            self._gpu_ids = [str(i) for i in range(int(self._override[GPU]))]
        else:
            self._gpu_ids = _detect_gpu_ids()
        totals[GPU] = float(len(self._gpu_ids))
        try:
            totals[MEMORY] = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError):
            pass
        custom = os.environ.get("TUNEKIT_RESOURCES")
        if custom:
            try:
                parsed = json.loads(custom)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"TUNEKIT_RESOURCES must be a JSON object such as '{{\"disk\": 2}}': {exc}"
                ) from None
            totals.update({k: float(v) for k, v in parsed.items()})
        for key, value in self._override.items():
            if key not in (CPU, GPU):
                totals[key] = float(value)
        self._totals = {k: _units(v) for k, v in totals.items()}
        self._used = dict.fromkeys(self._totals, 0)
        self._gpu_free = dict.fromkeys(self._gpu_ids, _UNIT)

    def total_resources(self) -> dict[str, float]:
        return {k: v / _UNIT for k, v in self._totals.items()}

    def check_fits(self, trial) -> None:
        """Raise a clear error if ``trial`` could never run on this machine."""
        request = trial.resources
        too_big = {
            key: value
            for key, value in request.items()
            if value and _units(value) > self._totals.get(key, 0)
        }
        if too_big:
            have = {k: v / _UNIT for k, v in self._totals.items() if k != MEMORY}
            raise TuneError(
                f"Trial {trial} requests {format_resources(request)}, which can never fit on "
                f"this machine ({format_resources(have)}): {format_resources(too_big)} is more "
                "than there is. Lower resources_per_trial, or declare more with "
                "LocalExecutor(resources=...) / TUNEKIT_NUM_CPUS, TUNEKIT_NUM_GPUS, "
                "TUNEKIT_RESOURCES."
            )

    def _pick_gpus(self, amount: float) -> list[tuple[str, int]] | None:
        if amount <= 0:
            return []
        if amount < 1:
            need = _units(amount)
            candidates = [g for g, free in self._gpu_free.items() if free >= need]
            if not candidates:
                return None
            best = min(candidates, key=lambda g: self._gpu_free[g])  # pack fractions
            return [(best, need)]
        whole = [g for g, free in self._gpu_free.items() if free == _UNIT]
        count = int(amount)
        if len(whole) < count:
            return None
        return [(g, _UNIT) for g in whole[:count]]

    def has_resources_for_trial(self, trial) -> bool:
        if trial in self._by_trial:
            return False  # its previous process (a pause, a stop) has not finished yet
        for key, value in trial.resources.items():
            if key == GPU:
                continue
            if self._used.get(key, 0) + _units(value) > self._totals.get(key, 0):
                return False
        gpus = trial.resources.get(GPU, 0)
        return not gpus or self._pick_gpus(gpus) is not None

    def _acquire(self, trial) -> tuple[str, ...]:
        for key, value in trial.resources.items():
            if key != GPU:
                self._used[key] = self._used.get(key, 0) + _units(value)
        picked = self._pick_gpus(trial.resources.get(GPU, 0)) or []
        for gpu, units in picked:
            self._gpu_free[gpu] -= units
        self._trial_gpus[trial] = picked
        return tuple(g for g, _ in picked)

    def _release(self, trial) -> None:
        for key, value in trial.resources.items():
            if key != GPU:
                self._used[key] -= _units(value)
        for gpu, units in self._trial_gpus.pop(trial, ()):
            self._gpu_free[gpu] += units

    # -- workers -----------------------------------------------------------------------
    def setup(self, experiment_dir: str) -> None:
        if self._is_setup:
            return
        self._is_setup = True
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        for fd in self._watched:  # watched before setup
            self._poller.register(fd, select.POLLIN)
        self._node_ip = _node_ip(self._hostname)
        env = dict(os.environ)
        # Workers import what the driver can import (the script's directory, tests...).
        paths = [p for p in sys.path if p]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env["TUNEKIT_NODE_IP"] = self._node_ip
        self._env = env
        # Start as many workers as one-CPU trials fit (at most 4) right away, so their
        # start-up overlaps the driver's own instead of delaying the first trials.
        cpus = self._totals.get(CPU, _UNIT) // _UNIT
        for _ in range(max(1, min(int(cpus), 4))):
            self._spawn(())

    def _add(self, conn: Connection, worker: _Worker) -> None:
        self._workers[conn] = worker
        fd = conn.fileno()
        self._by_fd[fd] = worker
        self._poller.register(fd, select.POLLIN)

    def _can_fork(self, gpu_ids: tuple[str, ...]) -> bool:
        if self.start_method == "spawn" or gpu_ids or not sys.platform.startswith("linux"):
            return False
        if self.start_method == "fork":
            return True
        return _fork_blocker() is None

    def _spawn(self, gpu_ids: tuple[str, ...]) -> _Worker:
        parent, child = socket.socketpair()
        env = self._env
        if self._gpu_ids:
            env = dict(env)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
        if self._can_fork(gpu_ids):
            return self._fork(parent, child, env, gpu_ids)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tunekit_core.worker", str(child.fileno())],
            pass_fds=(child.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl+C in the terminal reaches the driver only
        )
        child.close()
        conn = Connection(parent.detach())
        worker = _Worker(proc, conn, gpu_ids)
        self._add(conn, worker)
        return worker

    def _fork(self, parent: socket.socket, child: socket.socket, env: dict, gpu_ids: tuple[str, ...]) -> _Worker:
        from .worker import forked_main  # imported here, not in the child

        pid = fork()
        if pid == 0:
            try:
                forked_main(child.fileno(), env)
            finally:
                os._exit(1)
        child.close()
        conn = Connection(parent.detach())
        worker = _Worker(ForkedProcess(pid), conn, gpu_ids)
        self._add(conn, worker)
        return worker

    def _idle_worker(self, gpu_ids: tuple[str, ...]) -> _Worker:
        spare = None
        for worker in self._workers.values():
            if worker.trial is None and not worker.retiring:
                if worker.gpu_ids == gpu_ids:
                    return worker
                spare = worker
        if spare is not None:
            # An idle worker bound to other GPUs: retire it rather than grow the pool.
            self._retire(spare)
        return self._spawn(gpu_ids)

    def _retire(self, worker: _Worker) -> None:
        worker.retiring = True
        try:
            worker.conn.send_bytes(pickle.dumps(("shutdown",)))
        except OSError:
            pass

    def _send(self, worker: _Worker, msg) -> None:
        try:
            worker.conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError):
            pass  # the worker died; its EOF is reported by wait()

    # -- trials ------------------------------------------------------------------------
    def start_trial(self, trial, launch: TrialLaunch) -> None:
        gpu_ids = self._acquire(trial)
        worker = self._idle_worker(gpu_ids)
        worker.trial = trial
        self._by_trial[trial] = worker
        ref = launch.trainable
        if ref.key in worker.known:
            wire_ref = ("cached", ref.key, ref.kind, None)
        elif ref.path is not None:
            wire_ref = ("file", ref.key, ref.kind, ref.path)
        else:
            wire_ref = ("blob", ref.key, ref.kind, ref.blob)
        worker.known.add(ref.key)
        spec = {
            "trial_id": trial.trial_id,
            "trial_name": str(trial),
            "logdir": trial.local_path,
            "config": launch.config,
            "trainable": wire_ref,
            "stop": launch.stop,
            "window": launch.window,
            "log_to_file": launch.log_to_file,
            "reuse_actors": launch.reuse_actors or self.reuse_actors,
            "resources": trial.resources,
            "restore": launch.restore,
            "checkpoint": launch.checkpoint,
            "export_formats": launch.export_formats,
        }
        try:
            data = pickle.dumps(("start", spec), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            import cloudpickle

            data = cloudpickle.dumps(("start", spec), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            worker.conn.send_bytes(data)
        except (OSError, ValueError):
            pass  # reported as a dead worker by wait()

    def stop_trial(self, trial) -> None:
        self._stop(trial, save=False)

    def pause_trial(self, trial) -> None:
        """Stop ``trial`` after it saves a checkpoint (class trainables); resumed later."""
        self._stop(trial, save=True)

    def _stop(self, trial, save: bool) -> None:
        worker = self._by_trial.get(trial)
        if worker is None or worker.kill_at is not None:
            return
        self._send(worker, ("stop", trial.trial_id, save))
        worker.kill_at = time.monotonic() + self.stop_grace_s

    def ack(self, trial, count: int) -> None:
        worker = self._by_trial.get(trial)
        if worker is not None:
            self._send(worker, ("ack", trial.trial_id, count))

    def num_busy(self) -> int:
        return len(self._by_trial)

    def trial_location(self, trial) -> tuple[int, str, str]:
        worker = self._by_trial.get(trial)
        if worker is None:
            return 0, self._hostname, self._node_ip
        if worker.location is None:  # one tuple per worker, shared by all its trials
            worker.location = (worker.proc.pid, self._hostname, self._node_ip)
        return worker.location

    def _free(self, worker: _Worker) -> None:
        trial = worker.trial
        if trial is not None:
            self._release(trial)
            del self._by_trial[trial]
        worker.trial = None
        worker.kill_at = None

    def wait(self, timeout: float | None) -> list[tuple]:
        deadline = None
        for worker in self._workers.values():
            if worker.kill_at is not None and (deadline is None or worker.kill_at < deadline):
                deadline = worker.kill_at
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        ready = self._poller.poll(None if timeout is None else math.ceil(timeout * 1000))
        events: list[tuple] = []
        loads = pickle.loads
        for fd, _ in ready:
            if fd == self._wake_r:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
                continue
            on_readable = self._watched.get(fd)
            if on_readable is not None:
                on_readable()
                continue
            worker = self._by_fd.get(fd)
            if worker is None:
                continue
            conn = worker.conn
            while True:
                try:
                    msg = loads(conn.recv_bytes())
                except (EOFError, OSError):
                    self._on_exit(worker, events)
                    break
                except Exception as exc:  # a result that cannot be unpickled here
                    trial = worker.trial
                    if trial is not None:
                        events.append(
                            ("error", trial, f"Could not read a message from the worker: {exc!r}", None)
                        )
                        self._free(worker)
                    self._kill(worker)
                    break
                if msg[0] == "r":
                    self._on_results(worker, msg, events)
                if not select.select((fd,), (), (), 0)[0]:
                    break
        if deadline is not None:
            now = time.monotonic()
            for worker in list(self._workers.values()):
                if worker.kill_at is not None and worker.kill_at <= now:
                    self._kill(worker)
        return events

    def _on_results(self, worker: _Worker, msg, events: list) -> None:
        _, trial_id, batch, end = msg
        trial = worker.trial
        if trial is None or trial.trial_id != trial_id:
            return
        if batch:
            events.append(("results", trial, batch))
        if end is not None:
            if end[0] == "done":
                events.append(("done", trial, end[1]))
            else:
                exc = None
                if end[2] is not None:
                    try:
                        exc = pickle.loads(end[2])
                    except Exception:
                        exc = None
                events.append(("error", trial, end[1], exc))
                worker.retiring = True  # the worker exits after a failed trial
            self._free(worker)

    def _on_exit(self, worker: _Worker, events: list) -> None:
        self._forget(worker)
        code = wait_or_kill(worker.proc, 5)
        trial = worker.trial
        if trial is not None:
            killed = worker.kill_at is not None
            self._free(worker)
            if killed:
                events.append(("done", trial, {"stopped": True}))
            else:
                events.append(("error", trial, _describe_exit(code, worker.proc.pid), None))

    def _forget(self, worker: _Worker) -> None:
        conn = worker.conn
        del self._workers[conn]
        if not conn.closed:
            fd = conn.fileno()
            self._by_fd.pop(fd, None)
            self._poller.unregister(fd)
            conn.close()

    def _kill(self, worker: _Worker) -> None:
        try:
            worker.proc.kill()
        except OSError:
            pass

    def watch(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Let :meth:`wait` also return when ``fd`` is readable, after calling
        ``on_readable``, which reads what is there (or calls :meth:`unwatch`): a searcher
        process's socket, so its answers wake the run loop without a wake-up pipe write."""
        self._watched[fd] = on_readable
        if self._poller is not None:  # else setup() registers it
            self._poller.register(fd, select.POLLIN)

    def unwatch(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None and self._poller is not None:
            self._poller.unregister(fd)

    def wakeup(self) -> None:
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"!")
            except (BlockingIOError, OSError):
                pass

    def retire_idle(self) -> None:
        for worker in self._workers.values():
            if worker.trial is None and not worker.retiring:
                self._retire(worker)

    def shutdown(self) -> None:
        workers = list(self._workers.values())
        for worker in workers:
            if worker.trial is not None:
                self._kill(worker)
            else:
                self._retire(worker)
        deadline = time.monotonic() + 2.0
        for worker in workers:
            wait_or_kill(worker.proc, deadline - time.monotonic())
            worker.conn.close()
        self._workers.clear()
        self._by_fd.clear()
        self._watched.clear()
        self._poller = None
        self._by_trial.clear()
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._wake_r = self._wake_w = None
        self._is_setup = False
        self._compute_totals()


def _describe_exit(code: int | None, pid: int) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"was killed by {name}"
        if -code == signal.SIGSEGV:
            how += " (a segmentation fault in native code)"
    else:
        how = f"exited with code {code}"
    return (
        f"The worker process (pid {pid}) running this trial {how} before the trial finished. "
        "Nothing was reported after its last result. Check the trial's stdout/stderr "
        "(log_to_file=True keeps them in the trial directory)."
    )
