"""The worker process of the local executor.

Started by :mod:`tunekit_core.local_executor` as ``python -m tunekit_core.worker FD``;
it runs one trial at a time, for as many trials as the driver sends it.

Results flow back in batches with credit-based flow control: the first result of a
quiet trial goes out at once; while a batch is unacknowledged, further results
accumulate and leave together when the driver acknowledges the previous batch. A
trial may have at most ``window`` results unacknowledged (1 for schedulers that do
not accept buffered results), after which ``report`` waits for the driver. A result
with a checkpoint is sent at once and ``report`` waits for its acknowledgement, so a
checkpoint whose report returned is known to the driver even if the process dies next.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import stat
import sys
import threading
import traceback
from multiprocessing.connection import Connection

from . import session as session_module
from . import trainable as trainable_module
from .checkpoint import CHECKPOINT_KEY, TMP_PREFIX, Checkpoint, persist_checkpoint
from .errors import TrialStopped
from .trainable import IterationClock, Trainable

_PROTOCOL = pickle.HIGHEST_PROTOCOL


def dumps(obj) -> bytes:
    try:
        return pickle.dumps(obj, protocol=_PROTOCOL)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=_PROTOCOL)


class _Session:
    """What ``tunekit.report`` talks to inside a trial."""

    __slots__ = (
        "worker", "trial_id", "trial_name", "logdir", "resources", "clock", "stop",
        "restore_checkpoint", "pending_checkpoint", "last_checkpointed",
    )

    def __init__(self, worker: Worker, spec: dict):
        self.worker = worker
        self.trial_id = spec["trial_id"]
        self.trial_name = spec["trial_name"]
        self.logdir = spec["logdir"]
        self.resources = spec.get("resources") or {}
        restore = spec.get("restore")
        if restore:
            self.clock = IterationClock(restore.get("iteration", 0), restore.get("time_total_s", 0.0))
            self.restore_checkpoint = Checkpoint(restore["path"])
        else:
            self.clock = IterationClock()
            self.restore_checkpoint = None
        self.stop = spec.get("stop") or None
        self.pending_checkpoint: str | None = None  # written with checkpoint_dir(), not yet reported
        self.last_checkpointed = -1

    def report(self, metrics: dict, checkpoint: Checkpoint | None = None) -> None:
        result = self.clock.fill(metrics)
        if checkpoint is not None or self.pending_checkpoint is not None:
            self.attach_checkpoint(result, checkpoint)
        self.worker.push(result, self.meets_stop(result))

    def attach_checkpoint(self, result: dict, checkpoint: Checkpoint | None) -> None:
        """Persist a reported checkpoint into the trial directory and tag the result with it."""
        move = checkpoint is None or getattr(checkpoint, "_owned_temp", False)
        source = self.pending_checkpoint if checkpoint is None else checkpoint.path
        self.pending_checkpoint = None
        iteration = result["training_iteration"]
        path = persist_checkpoint(
            source, self.logdir, iteration, _checkpoint_metadata(result), move=move
        )
        result[CHECKPOINT_KEY] = path
        self.last_checkpointed = iteration

    def checkpoint_dir(self, step: int | None) -> str:
        import uuid

        path = os.path.join(self.logdir, f"{TMP_PREFIX}pending_{uuid.uuid4().hex[:8]}")
        os.makedirs(path)
        return path

    def meets_stop(self, result: dict) -> bool:
        if result.get("done"):
            return True
        stop = self.stop
        if stop:
            for key, bound in stop.items():
                value = result.get(key)
                if value is not None:
                    try:
                        if value >= bound:
                            result["done"] = True
                            return True
                    except TypeError:
                        pass  # the driver reports the mismatch clearly
        return False


def _checkpoint_metadata(result: dict) -> dict:
    return {
        "iteration": result["training_iteration"],
        "time_total_s": result.get("time_total_s", 0.0),
        "timestamp": result.get("timestamp"),
    }


class Worker:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.cond = threading.Condition()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.trial_id: str | None = None
        self.stopped: set[str] = set()
        self.save_on_stop: set[str] = set()
        self.buffer: list[dict] = []
        self.inflight = 0
        self.window = 1
        self.trainables: dict[str, tuple[str, object]] = {}
        self.actors: dict[str, Trainable] = {}
        self.signatures: dict[str, str] = {}

    # -- wire --------------------------------------------------------------------------
    def _send(self, msg) -> None:
        self.conn.send_bytes(dumps(msg))

    def _read_loop(self) -> None:
        conn = self.conn
        loads = pickle.loads
        while True:
            try:
                msg = loads(conn.recv_bytes())
            except (EOFError, OSError):
                # The driver is gone: nobody will collect what this trial produces.
                os._exit(0)
            kind = msg[0]
            if kind == "ack":
                with self.cond:
                    if msg[1] == self.trial_id:
                        self.inflight -= msg[2]
                        if self.buffer:
                            self._flush_locked(None)
                        self.cond.notify_all()
            elif kind == "stop":
                with self.cond:
                    self.stopped.add(msg[1])
                    if len(msg) > 2 and msg[2]:
                        self.save_on_stop.add(msg[1])  # a pause: checkpoint before ending
                    self.cond.notify_all()
            else:
                self.inbox.put(msg)

    def _flush_locked(self, end) -> None:
        batch = self.buffer
        self.buffer = []
        self.inflight += len(batch)
        self._send(("r", self.trial_id, batch, end))

    def push(self, result: dict, final: bool) -> None:
        """Queue one filled result; raises TrialStopped if the driver stopped the trial."""
        with self.cond:
            if self.trial_id in self.stopped:
                raise TrialStopped()
            self.buffer.append(result)
            if final:
                # Sent together with the end-of-trial message by finish().
                raise TrialStopped()
            # A result that carries a checkpoint goes out at once and report() returns only
            # once the driver has processed it: a checkpoint whose report returned is
            # registered, so it survives the trial's process dying right afterwards.
            durable = CHECKPOINT_KEY in result
            if self.inflight == 0 or durable:
                self._flush_locked(None)
            limit = 1 if durable else self.window
            while self.inflight + len(self.buffer) >= limit:
                if self.trial_id in self.stopped:
                    raise TrialStopped()
                self.cond.wait()

    def finish(self, end) -> None:
        with self.cond:
            if end[0] == "done" and self.buffer and not (end[1] or {}).get("stopped"):
                self.buffer[-1]["done"] = True
            self._flush_locked(end)
            self.stopped.discard(self.trial_id)
            self.save_on_stop.discard(self.trial_id)
            self.trial_id = None
            self.buffer = []
            self.inflight = 0

    # -- trials ------------------------------------------------------------------------
    def serve(self) -> None:
        threading.Thread(target=self._read_loop, name="tunekit-worker-reader", daemon=True).start()
        self._send(("hello", os.getpid()))
        while True:
            msg = self.inbox.get()
            if msg[0] == "start":
                self._run_trial(msg[1])
            elif msg[0] == "shutdown":
                break
        for actor in self.actors.values():
            try:
                actor.stop()
            except Exception:
                traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()

    def _load(self, ref) -> tuple[str, object]:
        how, key, kind, payload = ref
        cached = self.trainables.get(key)
        if cached is not None:
            return cached
        if how == "file":
            with open(payload, "rb") as f:
                payload = f.read()
        obj = pickle.loads(payload)
        self.trainables[key] = (kind, obj)
        return kind, obj

    def _call_style(self, key: str, fn) -> str:
        style = self.signatures.get(key)
        if style is None:
            import inspect

            style = "config"
            try:
                params = list(inspect.signature(fn).parameters.values())
            except (TypeError, ValueError):
                params = []
            names = [p.name for p in params]
            if "checkpoint_dir" in names:
                style = "checkpoint_dir"
            elif len(params) >= 2 and names[1] == "reporter":
                style = "reporter"
            self.signatures[key] = style
        return style

    def _run_trial(self, spec: dict) -> None:
        with self.cond:
            self.trial_id = spec["trial_id"]
            self.buffer = []
            self.inflight = 0
            self.window = spec["window"]
        redirect = spec.get("log_to_file")
        saved = _redirect(redirect) if redirect else None
        session = _Session(self, spec)
        end = ("done", None)
        try:
            kind, target = self._load(spec["trainable"])
            config = spec["config"]
            session_module._session = session
            if kind == "class":
                self._run_class(spec, target, config, session)
            else:
                style = self._call_style(spec["trainable"][1], target)
                if style == "checkpoint_dir":
                    restore = session.restore_checkpoint
                    ret = target(config, checkpoint_dir=restore.path if restore else None)
                elif style == "reporter":
                    ret = target(config, _LegacyReporter())
                else:
                    ret = target(config)
                if ret is not None:
                    # A returned dict (or number) is the trial's final result.
                    session_module.report(ret)
                elif session.pending_checkpoint is not None:
                    end = ("done", self._orphan_checkpoint(session))
        except TrialStopped as stopped:
            end = ("done", {"stopped": True, **(stopped.args[0] if stopped.args and stopped.args[0] else {})})
        except BaseException as exc:  # noqa: BLE001 - every failure is reported
            end = ("error", traceback.format_exc(), _pickle_exception(exc))
        finally:
            session_module._session = None
            if saved is not None:
                _restore(saved)
        self.finish(end)
        if end[0] == "error":
            # A trial that failed may have left this process in a bad state (CUDA,
            # threads, globals): retire the worker; the driver starts a fresh one.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def _run_class(self, spec: dict, cls, config: dict, session: _Session) -> None:
        key = spec["trainable"][1]
        reuse = spec.get("reuse_actors", False)
        actor = self.actors.pop(key, None)
        if actor is not None and not actor.reset(
            config, spec["trial_id"], spec["trial_name"], spec["logdir"]
        ):
            actor.stop()
            actor = None
        if actor is None:
            trainable_module._trial_context.update(
                trial_id=spec["trial_id"], trial_name=spec["trial_name"], logdir=spec["logdir"]
            )
            try:
                actor = cls(config)
            finally:
                trainable_module._trial_context.clear()
        policy = spec.get("checkpoint") or {}
        freq = policy.get("freq", 0)
        at_end = policy.get("at_end", False)
        if session.restore_checkpoint is not None:
            actor.restore(session.restore_checkpoint.path)
            session.last_checkpointed = actor.iteration
        result = None
        try:
            while True:
                result = actor.train()
                final = session.meets_stop(result)
                if (
                    result.get("should_checkpoint")
                    or (freq and actor.iteration % freq == 0)
                    or (at_end and final)
                ):
                    self._save_class_checkpoint(actor, session, result)
                session.worker.push(result, final)
        except TrialStopped:
            # Stopped by the driver (or by a stop criterion): a last checkpoint if asked.
            info = None
            wants_save = at_end or session.trial_id in self.save_on_stop
            if wants_save and result is not None and session.last_checkpointed < actor.iteration:
                path = actor.save(session.logdir)
                session.last_checkpointed = actor.iteration
                info = {"checkpoint": path, "iteration": actor.iteration}
            raise TrialStopped(info) from None
        finally:
            formats = spec.get("export_formats")
            if formats:
                actor.export_model(formats, session.logdir)
            if reuse:
                self.actors[key] = actor
            else:
                actor.stop()

    def _save_class_checkpoint(self, actor: Trainable, session: _Session, result: dict) -> None:
        result[CHECKPOINT_KEY] = actor.save(session.logdir)
        session.last_checkpointed = actor.iteration

    def _orphan_checkpoint(self, session: _Session) -> dict:
        """A checkpoint_dir() written after the last report: persist it at the last iteration."""
        iteration = session.clock.iteration
        path = persist_checkpoint(
            session.pending_checkpoint,
            session.logdir,
            iteration,
            {"iteration": iteration, "time_total_s": session.clock.time_total()},
            move=True,
        )
        session.pending_checkpoint = None
        return {"stopped": False, "checkpoint": path, "iteration": iteration}


class _LegacyReporter:
    """The ``reporter`` argument of Ray Tune 0.x/1.x style ``train(config, reporter)``."""

    def __call__(self, **metrics) -> None:
        session_module.report(**metrics)


def _pickle_exception(exc: BaseException) -> bytes | None:
    try:
        data = dumps(exc)
        pickle.loads(data)
        return data
    except Exception:
        return None


def _redirect(paths):
    out, err = paths
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    fo = os.open(out, flags, 0o644)
    os.dup2(fo, 1)
    if err == out:
        os.dup2(fo, 2)
    else:
        fe = os.open(err, flags, 0o644)
        os.dup2(fe, 2)
        os.close(fe)
    os.close(fo)
    return saved


def _restore(saved) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    os.close(saved[0])
    os.close(saved[1])


def forked_main(fd: int, environ: dict[str, str]) -> None:
    """A worker forked from the driver (see ``LocalExecutor``): become what a worker started
    as ``python -m tunekit_core.worker`` would be, then serve. Never returns.

    The child keeps the driver's modules (no imports to pay) and its memory, shared
    copy-on-write. It leaves the driver's session (Ctrl+C in the terminal reaches the
    driver only), takes the default signal handlers, reads nothing from the terminal,
    gets the worker environment and the interpreter's own standard streams, and
    reseeds numpy's global generator if the driver has one (Python's ``random`` reseeds
    itself after a fork), as a fresh process would have its own.
    The sockets and pipes it inherited (other workers', the searcher process's) point
    to ``/dev/null`` from now on, so that only the driver holds their ends: a worker
    still sees the driver's death as the end of its own socket.
    """
    code = 1
    try:
        os.setsid()
        _detach_inherited(keep=fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python sets it at start-up
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:
            pass
        os.environ.clear()
        os.environ.update(environ)
        # The interpreter's own streams on fds 0-2, not what the driver replaced them with
        # (a test runner's capture, a console widget): what a fresh worker writes through.
        for name in ("stdin", "stdout", "stderr"):
            original = getattr(sys, f"__{name}__")
            if original is not None:
                setattr(sys, name, original)
        # Only if the driver has numpy's random module: otherwise this process imports
        # it on first use and seeds it then (importing it here costs ~8 ms per worker).
        numpy_random = sys.modules.get("numpy.random")
        if numpy_random is not None:
            numpy_random.seed()
        import gc

        gc.set_threshold(700, 10, 10)  # Python's defaults, not the driver's run-time ones
        gc.freeze()  # the driver's objects: never scanned here, their pages stay shared
        Worker(Connection(fd)).serve()
        code = 0
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    finally:
        os._exit(code)


def _detach_inherited(keep: int) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2 or fd in (keep, devnull):
            continue
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue  # the directory listing's own descriptor, closed by now
        if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
            os.dup2(devnull, fd)
    os.close(devnull)


def main() -> None:
    fd = int(sys.argv[1])
    Worker(Connection(fd)).serve()
    # serve() ended the trainables and flushed the output: exit without the interpreter's
    # teardown, which costs time and would wait for threads a trainable left running.
    os._exit(0)


if __name__ == "__main__":
    main()
