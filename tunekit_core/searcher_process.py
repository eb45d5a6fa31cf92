"""A model-based searcher in a process of its own, working while the driver does.

A searcher such as Optuna's TPE or Hyperopt spends milliseconds per suggestion, in
Python, under the driver's GIL: in-process, every suggestion waits for the driver's
bookkeeping of the previous trial and the other way round. :class:`SearcherProcess`
forks the driver once the searcher is set up, and the child serves the searcher:

- ``suggest(trial_id)`` is asynchronous: the first call sends the request and returns
  ``None`` (the run loop's "nothing yet"); the child computes the suggestion while the
  driver handles results, writes files and commits state. The executor watches the
  child's socket (``LocalExecutor.watch``), so an answer wakes the run loop, which
  reads it at once. The next call for the same trial id returns it. Requests and
  notifications reach the child in the order the driver made them, so the searcher
  sees exactly the sequence of calls it would see in-process.
- ``on_trial_result`` / ``on_trial_complete`` are one-way messages, sent together
  with the next request or when the run loop is about to wait (:meth:`flush`): one
  write, and one wake-up of the child, per loop step rather than per call.
- Any other method is a synchronous call, answered after everything sent before it.

Experiment state stays exact without asking the child at every commit: the driver
keeps the searcher's last saved state (taken in the child) and a replay log of what
the searcher has done since, in the order the child did it: the suggestions the run
loop took (with their configs) and the notifications. A commit stores both; a resume
restores the state and replays the log (:func:`replay`), asking the searcher for the
same suggestions again, which gives what the searcher held at that commit. This needs
``suggest`` to be deterministic given the saved state (Optuna's and Hyperopt's
samplers keep their random state in it); a replayed suggestion that differs is
reported. When the log grows, the child is asked for a fresh state, and the final
save waits for one. A suggestion still open when such a state is taken is part of it;
the run loop takes it later, or, if the run ends first, it stays in the searcher's
state unused (its trial number is not given out again after a resume).

The run loop asks early: as soon as a trial leaves the queue or finishes (the points
where it would call ``suggest`` next), so the child computes suggestions back to back;
after a finished trial one more request may be open, which the run loop takes in order.

When the run ends, the child's searcher state is copied back into the driver's
searcher object, so the object the user passed (``searcher.study`` and so on)
reflects the whole run. Used for searchers whose class sets
``run_in_own_process = True`` (tunekit-optuna's and tunekit-hyperopt's do), with the
local executor on Linux; ``TUNEKIT_SEARCHER_PROCESS=0`` turns it off.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .forking import ForkedProcess, fork, wait_or_kill

logger = logging.getLogger("tunekit")

_PROTOCOL = pickle.HIGHEST_PROTOCOL
# Ask the child for a fresh state once this many calls wait in the replay log. Each commit
# stores only the calls recorded since the previous one, so this bounds what a resume
# replays and how often the child pickles its whole state, not the cost of a commit.
_LOG_COMPACT_AT = 512
# After a "nothing now" answer, ask again this soon at the latest without news.
_REASK_S = 0.05


def _dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=_PROTOCOL)
    except Exception:  # noqa: BLE001 - lambdas, closures
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=_PROTOCOL)


def _wrapped(searcher: Any):
    """``(depth, searcher)`` for ``searcher`` and the searchers it wraps as ``.searcher``
    (ConcurrencyLimiter, Repeater, ...), outermost first."""
    for depth in range(8):
        if searcher is None:
            return
        yield depth, searcher
        searcher = getattr(searcher, "searcher", None)


def wants_own_process(searcher: Any) -> bool:
    """Whether ``searcher`` (or a searcher it wraps as ``.searcher``) asks for its own process."""
    return any(getattr(type(s), "run_in_own_process", False) for _, s in _wrapped(searcher))


class SearcherError(RuntimeError):
    """A searcher method raised in the searcher's process (the traceback is in the message)."""


class SearcherProcess:
    """Driver-side proxy of a searcher served by a forked child process."""

    def __init__(
        self,
        searcher: Any,
        saved_state: Callable[[Any], bytes | None],
        watch: Callable[[int, Callable[[], None]], None] | None = None,
        unwatch: Callable[[int], None] | None = None,
    ) -> None:
        """``watch(fd, on_readable)`` / ``unwatch(fd)``: the run loop's executor wakes on
        the child's socket and calls ``on_readable`` (:meth:`LocalExecutor.watch`)."""
        self.local = searcher  # the driver's object, updated from the child's at close()
        self._seq = 0
        self._pending: dict[str, int] = {}  # trial id -> seq of its suggest request
        self._answers: dict[str, Any] = {}  # trial id -> the suggested config
        self._state = saved_state(searcher)  # state after self._state_seq
        self._state_seq = 0
        self._log_seqs: list[int] = []  # seqs of the calls recorded after the state
        self._unsaved: list[tuple[int, str, tuple, dict]] = []  # recorded, not yet committed
        self._state_requested = False
        self._idle_since: float | None = None
        self._news_seq = 0  # seq of the last notification that may change a "nothing now"
        self._error: BaseException | None = None
        self._closed = False
        self._final_seq: int | None = None  # the end was asked for (request_final)
        self._final: bytes | None = None  # the child's searcher attributes, for close()
        self._final_done = False  # its answer (or error) is in
        self._outbox: list[tuple] = []  # messages not sent yet (see flush)
        parent_sock, child_sock = socket.socketpair()
        pid = fork()
        if pid == 0:  # the child
            code = 0
            try:
                parent_sock.close()
                _serve(searcher, Connection(child_sock.detach()), saved_state)
            except BaseException:  # noqa: BLE001
                code = 1
            finally:
                os._exit(code)
        child_sock.close()
        self.pid = pid
        self._conn = Connection(parent_sock.detach())
        self._fd = self._conn.fileno()
        self._unwatch = unwatch
        if watch is not None:
            watch(self._fd, self.on_readable)

    # -- wire ---------------------------------------------------------------------------
    def _send(self, msg: tuple, now: bool = True) -> int:
        """Queue ``msg``; with ``now``, send it with everything queued before it."""
        if self._closed:
            raise RuntimeError("The searcher's process has been closed.")
        self._seq += 1
        self._outbox.append((msg[0], self._seq, *msg[1:]))
        if now:
            self.flush()
        return self._seq

    def flush(self) -> None:
        """Send the queued messages (in one write: the child reads them as one batch)."""
        if not self._outbox or self._closed:
            return
        batch, self._outbox = self._outbox, []
        try:
            self._conn.send_bytes(_dumps(batch))
        except OSError as exc:
            raise SearcherError(self._gone_message()) from exc

    def on_readable(self) -> None:
        """The executor saw the child's socket readable: take in what it sent.

        Errors wait for the next call of the run loop; a child that is gone (or done)
        is no longer watched, as its socket would stay readable.
        """
        try:
            while not self._final_done:
                msg = self._receive(block=False)
                if msg is None:
                    return
                self._dispatch(msg)
        except SearcherError as exc:
            if self._error is None:
                self._error = exc
        self._stop_watching()

    def _stop_watching(self) -> None:
        if self._unwatch is not None:
            unwatch, self._unwatch = self._unwatch, None
            unwatch(self._fd)

    def _gone_message(self) -> str:
        return (
            f"The searcher's process (pid {self.pid}) is gone; it may have been killed or run "
            "out of memory. Set TUNEKIT_SEARCHER_PROCESS=0 to run the searcher in the driver."
        )

    def _receive(self, block: bool) -> tuple | None:
        if not block and not select.select((self._conn,), (), (), 0)[0]:
            return None  # (Connection.poll builds a selector per call: too slow here)
        try:
            return pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError) as exc:
            raise SearcherError(self._gone_message()) from exc

    def _dispatch(self, msg: tuple) -> None:
        kind, seq = msg[0], msg[1]
        if kind == "s":
            trial_id, config = msg[2], msg[3]
            self._pending.pop(trial_id, None)
            self._answers[trial_id] = (seq, config)
        elif kind == "state":
            self._state_requested = False
            self._set_state(seq, msg[2])
        elif kind == "e":
            self._error = _error_from(msg[2], msg[3])
            if seq == self._final_seq:
                self._final_done = True
        elif kind == "c" and seq == self._final_seq:
            state, self._final = msg[2]
            self._set_state(seq, state)
            self._final_done = True  # and the child has ended: read nothing more

    def _set_state(self, seq: int, state: bytes) -> None:
        if seq > self._state_seq:
            self._state, self._state_seq = state, seq
            self._log_seqs = [entry for entry in self._log_seqs if entry > seq]
            # the state holds these: a commit need not store them (nor memory keep them)
            self._unsaved = [entry for entry in self._unsaved if entry[0] > seq]

    def _drain(self) -> None:
        while not self._final_done:
            msg = self._receive(block=False)
            if msg is None:
                break
            self._dispatch(msg)
        self._raise_pending_error()

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _call(self, name: str, args: tuple, kwargs: dict, depth: int = 0) -> Any:
        seq = self._send(("c", name, args, kwargs, depth))
        while True:
            msg = self._receive(block=True)
            if msg[0] == "c" and msg[1] == seq:
                self._raise_pending_error()
                return msg[2]
            if msg[0] == "e" and msg[1] == seq:
                raise _error_from(msg[2], msg[3])
            self._dispatch(msg)

    # -- the Searcher API the run loop uses ---------------------------------------------
    def suggest(self, trial_id: str) -> Any:
        self._drain()
        if trial_id in self._answers:
            seq, config = self._answers.pop(trial_id)
            if isinstance(config, dict):
                # Taken: a resume replays it (the searcher's suggest is deterministic given
                # its saved state, which is what run_in_own_process promises).
                self._record(seq, "suggest", (trial_id,), {"_expect": config})
                return config
            if config is not None or seq > self._news_seq:
                if config is None:
                    # "Nothing now" (e.g. a ConcurrencyLimiter at its limit): ask again once
                    # the searcher has heard of a finished trial, or after a pause, not in a
                    # busy loop.
                    self._idle_since = time.monotonic()
                return config
            # "Nothing now", but a trial finished after it was asked: ask again at once.
        if trial_id not in self._pending:
            if self._idle_since is not None and time.monotonic() - self._idle_since < _REASK_S:
                return None
            self._idle_since = None
            self._pending[trial_id] = self._send(("s", trial_id))
        return None

    def ask_early(self, trial_id: str, after_news: bool = False) -> None:
        """Send the request for ``trial_id`` now; :meth:`suggest` collects the answer.

        The run loop calls this where it is about to ask anyway (a trial left the queue,
        or finished), so the searcher sees the same sequence of calls as in the driver.
        ``after_news`` (a trial just finished) allows one more request while another is
        still open: the run loop would ask for the next trial once the open one is
        taken, and nothing reaches the searcher in between.
        """
        if self._closed:
            return
        for answered, (seq, config) in list(self._answers.items()):
            if config is None and seq < self._news_seq:
                del self._answers[answered]  # a stale "nothing now"
        if self._idle_since is not None or any(c is None for _, c in self._answers.values()):
            return  # it said "nothing now" and has heard of no finished trial since
        open_requests = self.outstanding()
        if open_requests >= (2 if after_news else 1) or trial_id in self._pending:
            return
        self._pending[trial_id] = self._send(("s", trial_id))

    def outstanding(self) -> int:
        """How many suggestions are asked for (or answered) and not yet taken."""
        return len(self.outstanding_ids())

    def outstanding_ids(self) -> set[str]:
        """The trial ids of suggestions asked for (or answered) and not yet taken."""
        return set(self._pending) | {t for t, (_, c) in self._answers.items() if c is not None}

    def pending_trial_id(self) -> str | None:
        """The first trial id asked for and not yet taken (the run loop keeps its order)."""
        first = None
        for trial_id, seq in self._pending.items():
            if first is None or seq < first[0]:
                first = (seq, trial_id)
        for trial_id, (seq, config) in self._answers.items():
            if config is not None and (first is None or seq < first[0]):
                first = (seq, trial_id)
        return None if first is None else first[1]

    def notify(self, name: str, *args: Any, **kwargs: Any) -> None:
        seq = self._send(("n", name, args, kwargs), now=False)
        if name != "on_trial_result":
            # A finished trial may free what the searcher waits for (a ConcurrencyLimiter's
            # slot); an intermediate result rarely does, and asking again at each one would
            # keep the searcher's process busy answering "nothing now".
            self._idle_since = None
            self._news_seq = seq
        self._record(seq, name, args, kwargs)

    def _record(self, seq: int, name: str, args: tuple, kwargs: dict) -> None:
        """A call the searcher made that a resume must replay after the saved state (a
        suggestion asked for before the state was taken is in it: nothing to record)."""
        if seq <= self._state_seq:
            return
        self._log_seqs.append(seq)
        self._unsaved.append((seq, name, args, kwargs))
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        """Ask for a fresh state once the log is long.

        A suggestion open at that moment is part of that state; the run loop takes it
        (its log entry is then older than the state and not replayed), unless the run
        ends first, and the ids of open requests are never given to other trials.
        """
        if len(self._log_seqs) >= _LOG_COMPACT_AT and not self._state_requested:
            self._state_requested = True
            self._send(("state",))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.notify("on_trial_result", trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.notify("on_trial_complete", trial_id, result=result, error=error)

    def snapshot(self) -> tuple[bytes | None, int, list[tuple[int, str, tuple, dict]]]:
        """(saved state, the seq it was taken at, the calls after it recorded since
        :meth:`saved`) for a commit, which stores the calls (``(seq, name, args, kwargs)``;
        a resume replays them in seq order, the order the child ran them) and then calls
        :meth:`saved`. After :meth:`request_final` it waits for the child's final state.
        """
        self._drain()
        self._collect_final()
        return self._state, self._state_seq, list(self._unsaved)

    def saved(self, calls: list[tuple[int, str, tuple, dict]]) -> None:
        """The ``calls`` :meth:`snapshot` gave are in the database now."""
        done = {id(call) for call in calls}
        self._unsaved = [call for call in self._unsaved if id(call) not in done]

    def __getattr__(self, name: str) -> Any:
        """Methods of the searcher (or of a searcher it wraps) run in the child.

        Other attributes are read from the driver's copy as it was at the fork (settings
        such as ``metric`` and ``mode``); a wrapped searcher object is not handed out, as
        calls on it would not reach the child.
        """
        if name.startswith("__") or name in ("searcher", "local"):
            raise AttributeError(name)
        for depth, obj in _wrapped(self.local):
            if hasattr(obj, name):
                value = getattr(obj, name)
                if callable(value):
                    return lambda *args, **kwargs: self._call(name, args, kwargs, depth)
                return value
        raise AttributeError(name)

    # -- the end ------------------------------------------------------------------------
    def request_final(self) -> None:
        """Ask the child for its final state and attributes now, and to end after sending
        them: it pickles them while the driver finishes its own work. Nothing may be sent
        to it afterwards; :meth:`snapshot` and :meth:`close` use the answer."""
        if self._final_seq is None and not self._closed:
            self._final_seq = self._send(("c", "__tunekit_final__", (), {}, 0))

    def _collect_final(self) -> None:
        while self._final_seq is not None and not self._final_done:
            self._dispatch(self._receive(block=True))
        self._raise_pending_error()

    def close(self, sync_back: bool = True) -> None:
        """End the child; with ``sync_back`` its searcher's state replaces the local object's."""
        if self._closed:
            return
        try:
            if sync_back:
                try:
                    self.request_final()
                    self._collect_final()
                    if self._final is not None:
                        _merge_into(self.local, pickle.loads(self._final))
                except Exception as exc:  # noqa: BLE001 - the run's results are unaffected
                    logger.warning(
                        "Could not copy the searcher's final state back from its process: %s", exc
                    )
        finally:
            self._stop_watching()
            self._closed = True
            try:
                self._conn.close()
            except OSError:
                pass
            wait_or_kill(ForkedProcess(self.pid), 2.0)  # it ends after its last answer


def _merge_into(local: Any, state: dict) -> None:
    """Give ``local`` the attributes of its copy in the child, keeping object identities
    along the ``.searcher`` chain (the user holds the wrapped searcher, e.g. under a
    ConcurrencyLimiter)."""
    for _ in range(8):
        inner_state = None
        inner = local.__dict__.get("searcher")
        if inner is not None and isinstance(state.get("searcher"), type(inner)):
            inner_state = state.pop("searcher").__dict__
        local.__dict__.update(state)
        if inner_state is None:
            return
        local, state = inner, dict(inner_state)


def _error_from(text: str, blob: bytes | None) -> BaseException:
    if blob is not None:
        try:
            exc = pickle.loads(blob)
            if isinstance(exc, BaseException):
                return exc
        except Exception:  # noqa: BLE001
            pass
    return SearcherError(f"The searcher raised in its process:\n{text}")


def _serve(
    searcher: Any,
    conn: Connection,
    saved_state: Callable[[Any], bytes | None],
) -> None:
    """The child: run the searcher's methods in the order the driver sent them."""
    # Ctrl+C reaches the whole process group: the driver handles it, not this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What the driver had before the fork is never collected here: keep the collector off
    # those objects (faster collections, and their pages stay shared with the driver).
    import gc

    gc.freeze()
    try:
        sys.stdin.close()
    except Exception:  # noqa: BLE001
        pass
    loads = pickle.loads

    def reply(msg: tuple) -> None:
        conn.send_bytes(_dumps(msg))  # the driver's executor watches this socket

    while True:
        try:
            batch = loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the driver is gone
        for msg in batch:
            if not _serve_one(searcher, msg, reply, saved_state):
                return


def _serve_one(
    searcher: Any,
    msg: tuple,
    reply: Callable[[tuple], None],
    saved_state: Callable[[Any], bytes | None],
) -> bool:
    """Run one message; False after the final one (the child then ends)."""
    kind, seq = msg[0], msg[1]
    try:
        if kind == "n":
            getattr(searcher, msg[2])(*msg[3], **msg[4])
        elif kind == "s":
            reply(("s", seq, msg[2], searcher.suggest(msg[2])))
        elif kind == "state":
            reply(("state", seq, saved_state(searcher)))
        elif msg[2] == "__tunekit_final__":
            # the state for the final commit, and the attributes for the driver's object;
            # then this process ends
            reply(("c", seq, (saved_state(searcher), _dumps(searcher.__dict__))))
            return False
        else:  # "c"
            target = searcher
            for _ in range(msg[5]):
                target = target.searcher
            reply(("c", seq, getattr(target, msg[2])(*msg[3], **msg[4])))
    except BaseException as exc:  # noqa: BLE001 - sent to the driver, which raises it
        try:
            blob = pickle.dumps(exc, protocol=_PROTOCOL)
            pickle.loads(blob)
        except Exception:  # noqa: BLE001
            blob = None
        reply(("e", seq, traceback.format_exc(), blob))
    return True


def replay(searcher: Any, log: list) -> None:
    """Apply the calls saved by :meth:`SearcherProcess.snapshot` to a restored searcher.

    Suggestions are asked again (a searcher run in its own process is deterministic given
    its saved state); one that comes out different is reported, as the study then holds
    a config that differs from the trial's.
    """
    for name, args, kwargs in log:
        if name == "suggest":
            expected = kwargs.get("_expect")
            config = searcher.suggest(*args)
            if config != expected:
                logger.warning(
                    "Resume: the searcher suggested a different config for trial %s than "
                    "before the crash (%r instead of %r); its model of that trial may be off.",
                    args[0], config, expected,
                )
            continue
        getattr(searcher, name)(*args, **kwargs)
