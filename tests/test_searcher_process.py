"""Searchers served from a process of their own (tunekit_core.searcher_process)."""

from __future__ import annotations

import os
import pickle
import random
import time

import pytest

import tunekit as tune
from tunekit.search import ConcurrencyLimiter, Searcher
from tunekit_core import searcher_process
from tunekit_core.runner import _restore_state, _saved_state
from tunekit_core.searcher_process import SearcherProcess, replay


class Recording(Searcher):
    """Deterministic given its state: draws from its own seeded RNG, records what it hears."""

    run_in_own_process = True

    def __init__(self, fail_at: int | None = None, delay: float = 0.0) -> None:
        super().__init__(metric="loss", mode="min")
        self.delay = delay
        self.rng = random.Random(0)
        self.suggested: list[str] = []
        self.completed: list[tuple[str, float | None]] = []
        self.pids: set[int] = set()
        self.fail_at = fail_at

    def suggest(self, trial_id):
        if self.fail_at is not None and len(self.suggested) == self.fail_at:
            raise ValueError(f"planned failure at suggestion {self.fail_at}")
        if self.delay:
            time.sleep(self.delay)  # a model that takes a while
        self.suggested.append(trial_id)
        self.pids.add(os.getpid())
        return {"x": self.rng.random(), "pid": os.getpid()}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append((trial_id, None if result is None else result.get("loss")))


def square(config):
    tune.report({"loss": config["x"] ** 2})


def _run(tmp_path, searcher, **kwargs):
    kwargs.setdefault("num_samples", 6)
    return tune.run(square, search_alg=searcher, metric="loss", mode="min", verbose=0,
                    local_dir=str(tmp_path), **kwargs)


def test_an_opted_in_searcher_runs_in_another_process_and_its_state_comes_back(tmp_path):
    searcher = Recording()
    analysis = _run(tmp_path, searcher, max_concurrent_trials=2)
    pids = {t.config["pid"] for t in analysis.trials}
    assert len(pids) == 1 and os.getpid() not in pids
    # The user's object (under the ConcurrencyLimiter run() adds) holds the whole run.
    ids = sorted(t.trial_id for t in analysis.trials)
    assert sorted(searcher.suggested) == ids
    assert sorted(searcher.completed) == sorted((t.trial_id, t.last_result["loss"]) for t in analysis.trials)
    assert searcher.pids == pids
    (child,) = pids
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # ended and reaped


def test_the_process_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEKIT_SEARCHER_PROCESS", "0")
    analysis = _run(tmp_path, Recording(), num_samples=3)
    assert {t.config["pid"] for t in analysis.trials} == {os.getpid()}


def test_same_trials_and_configs_as_in_the_driver(tmp_path, monkeypatch):
    """One trial at a time, the sequence of calls is fixed: both ways give the same run."""
    runs = []
    for flag in ("1", "0"):
        monkeypatch.setenv("TUNEKIT_SEARCHER_PROCESS", flag)
        searcher = Recording()
        analysis = _run(tmp_path / flag, searcher, max_concurrent_trials=1)
        runs.append(([t.config["x"] for t in analysis.trials], [c[1] for c in searcher.completed]))
    assert runs[0] == runs[1]


def test_an_exception_in_the_searcher_process_reaches_the_caller(tmp_path):
    with pytest.raises(ValueError, match="planned failure at suggestion 2"):
        _run(tmp_path, Recording(fail_at=2), max_concurrent_trials=1)


def test_a_failure_while_the_run_starts_ends_the_searchers_process(tmp_path, monkeypatch):
    """The searcher's process is forked (and asked) before the executor starts its workers;
    if that fails, the run's clean-up still ends and reaps the process."""
    from tunekit_core.local_executor import LocalExecutor

    started = []
    original = SearcherProcess.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        started.append(self.pid)

    def broken_setup(self, experiment_dir):
        raise OSError("no more processes")

    monkeypatch.setattr(SearcherProcess, "__init__", init)
    monkeypatch.setattr(LocalExecutor, "setup", broken_setup)
    with pytest.raises(OSError, match="no more processes"):
        _run(tmp_path, Recording())
    (pid,) = started
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ended and reaped


def test_snapshot_and_replay_rebuild_the_searchers_state(tmp_path):
    """What a commit stores (state + log) restores to the state the child holds."""
    searcher = Recording()
    saved = lambda s: _saved_state(s, str(tmp_path))  # noqa: E731
    proxy = SearcherProcess(searcher, saved)
    try:
        taken = []
        for i in range(5):
            trial_id = f"t{i}"
            while (config := proxy.suggest(trial_id)) is None:
                proxy._conn.poll(5)
            taken.append(config["x"])
            proxy.on_trial_complete(trial_id, {"loss": config["x"]})
        # a suggestion asked for and not taken is not part of the state
        proxy.ask_early("t5")
        state, state_seq, calls = proxy.snapshot()
        log = [tuple(call) for seq, *call in sorted(calls) if seq > state_seq]
        assert [name for name, _, _ in log].count("suggest") == 5
        restored = Recording()
        _restore_state(restored, state, str(tmp_path))
        replay(restored, pickle.loads(pickle.dumps(log)))
        assert restored.suggested == [f"t{i}" for i in range(5)]
        assert [c[1] for c in restored.completed] == taken
        # and it continues exactly as the child does
        while (nxt := proxy.suggest("t5")) is None:
            proxy._conn.poll(5)
        assert restored.suggest("t5")["x"] == nxt["x"]
        # the final state replaces the local object's
        proxy.close()
        assert searcher.suggested == [f"t{i}" for i in range(6)]
    finally:
        proxy.close(sync_back=False)


def test_answers_wake_the_executor_and_notifications_go_in_one_write(tmp_path):
    """The executor watches the child's socket: an answer ends its wait and is taken in
    there; notifications wait for the next request (or flush) and go with it. As in a
    run, the child is started and asked before the executor is set up (watched then)."""
    from tunekit_core.local_executor import LocalExecutor

    executor = LocalExecutor()
    searcher = Recording(delay=0.05)
    proxy = SearcherProcess(searcher, lambda s: _saved_state(s, str(tmp_path)),
                            executor.watch, executor.unwatch)
    try:
        def wait_for(trial_id):
            deadline = time.monotonic() + 10.0
            while trial_id not in proxy._answers:  # only the executor's wait reads here
                assert time.monotonic() < deadline
                executor.wait(5.0)

        proxy.ask_early("a")
        executor.setup(str(tmp_path))
        started = time.monotonic()
        wait_for("a")  # woken by the answer, long before the timeout
        assert time.monotonic() - started < 4.0
        config = proxy.suggest("a")
        assert config is not None and config["x"] == random.Random(0).random()
        proxy.on_trial_complete("a", {"loss": 1.0})
        proxy.on_trial_complete("b", {"loss": 2.0})
        assert len(proxy._outbox) == 2  # queued, not sent
        proxy.ask_early("c")  # sent together with the request
        assert proxy._outbox == []
        wait_for("c")
        assert proxy.suggest("c") is not None
        proxy.close()
        assert searcher.completed == [("a", 1.0), ("b", 2.0)]
        assert executor._watched == {}  # no longer watched once closed
    finally:
        proxy.close(sync_back=False)
        executor.shutdown()


def test_commits_write_each_call_once_and_the_state_only_when_it_changed(tmp_path, monkeypatch):
    """A commit stores the calls since the previous one, not the whole replay log again,
    and not the same searcher state again between compactions."""
    from tunekit_core.state_store import StateStore

    states, rows = [], []
    original = StateStore.save

    def spy(self, trials, kv=None, log_rows=(), log_trim=None):
        states.append("searcher/0" in (kv or {}))
        rows.extend((source, seq) for source, seq, _ in log_rows)
        return original(self, trials, kv, log_rows, log_trim)

    monkeypatch.setattr(StateStore, "save", spy)
    _run(tmp_path, Recording(), num_samples=12, max_concurrent_trials=1)
    assert sum(states) == 2  # the first commit, and the final one
    # every suggestion taken, result and completion: once each
    assert len(rows) == len(set(rows)) == 12 * 3


def test_a_long_log_is_compacted_into_a_fresh_state(tmp_path, monkeypatch):
    monkeypatch.setattr(searcher_process, "_LOG_COMPACT_AT", 64)
    searcher = Recording()
    proxy = SearcherProcess(searcher, lambda s: _saved_state(s, str(tmp_path)))
    try:
        for i in range(100):
            proxy.on_trial_complete(f"u{i}", {"loss": float(i)})
        proxy._call("get_state", (), {})  # everything sent so far has been handled
        state, state_seq, calls = proxy.snapshot()
        # nothing committed them, yet the calls the fresh state holds are not kept
        assert len(calls) < 64
        log = [tuple(call) for seq, *call in sorted(calls) if seq > state_seq]
        restored = Recording()
        _restore_state(restored, state, str(tmp_path))
        replay(restored, log)
        assert [c[1] for c in restored.completed] == [float(i) for i in range(100)]
    finally:
        proxy.close(sync_back=False)


def test_methods_of_a_wrapped_searcher_run_in_the_child(tmp_path):
    inner = Recording()
    proxy = SearcherProcess(ConcurrencyLimiter(inner, 2),
                            lambda s: _saved_state(s, str(tmp_path)))
    try:
        assert proxy.metric == "loss"
        with pytest.raises(AttributeError):
            proxy.searcher  # noqa: B018 - a stale copy must not be handed out
        while proxy.suggest("a") is None:
            proxy._conn.poll(5)
        assert proxy.get_state()["live_trials"] == {"a"}  # the limiter's, in the child
        proxy.close()
        assert inner.suggested == ["a"]
    finally:
        proxy.close(sync_back=False)


def uneven(config):
    time.sleep(0.004 * (int(config["x"] * 1000) % 3))  # 0, 4 or 8 ms: finish out of order
    tune.report({"loss": config["x"] ** 2})


def test_trial_ids_have_no_gaps_when_suggestions_are_asked_ahead(tmp_path):
    """Requests asked ahead that get "nothing now" leave no holes in the trial numbers."""
    searcher = Recording(delay=0.004)
    analysis = tune.run(uneven, search_alg=searcher, metric="loss", mode="min", num_samples=40,
                        max_concurrent_trials=2, verbose=0, local_dir=str(tmp_path))
    numbers = sorted(int(t.trial_id.rsplit("_", 1)[1]) for t in analysis.trials)
    assert numbers == list(range(40))
    assert sorted(searcher.suggested) == sorted(t.trial_id for t in analysis.trials)
    assert len(searcher.completed) == 40


def test_trial_numbers_fill_the_holes_left_by_requests_asked_ahead():
    """A request answered "nothing now" while a later one got a config leaves its number
    free: the next trial takes it (no gaps), and open requests keep theirs."""
    from tunekit_core.runner import RunLoop, TrialSource

    proxy = SearcherProcess.__new__(SearcherProcess)
    proxy._pending, proxy._answers = {}, {}
    loop = RunLoop.__new__(RunLoop)
    loop._id_prefix, loop._counter, loop._id_holes = "p_", 5, set()
    loop._sources = [TrialSource(experiment=None, searcher=proxy, trainable=None, max_trials=None)]
    assert loop._free_trial_number() == 5
    proxy._pending = {"p_00005": 1}  # asked for 5; a trial finishes; 6 is asked too
    assert loop._free_trial_number() == 6
    proxy._pending = {}
    proxy._answers = {"p_00005": (1, None), "p_00006": (2, {"x": 1})}  # 5: nothing now
    loop._use_trial_number(6)  # the run loop takes 6
    assert (loop._counter, loop._id_holes) == (7, {5})
    proxy._answers = {}
    assert loop._free_trial_number() == 5  # the hole goes first
    proxy._pending = {"p_00005": 3}
    assert loop._free_trial_number() == 7  # ... unless a request holds it
    loop._use_trial_number(5)
    assert (loop._counter, loop._id_holes) == (7, set())


class LogLength(tune.Callback):
    def __init__(self):
        self.longest = 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        proxy = trial._source.searcher
        if isinstance(proxy, SearcherProcess):
            self.longest = max(self.longest, len(proxy._log_seqs))


def test_the_replay_log_stays_short_while_suggestions_are_always_open(tmp_path, monkeypatch):
    """Compaction does not wait for a moment without open requests (there may be none)."""
    monkeypatch.setattr(searcher_process, "_LOG_COMPACT_AT", 64)
    recorder = LogLength()
    analysis = _run(tmp_path, Recording(delay=0.005), num_samples=150, max_concurrent_trials=2,
                    callbacks=[recorder])
    assert len(analysis.trials) == 150
    assert 0 < recorder.longest <= 96  # 3 entries per trial would reach 450 uncompacted
