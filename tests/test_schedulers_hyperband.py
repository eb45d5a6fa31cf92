"""ASHA, HyperBand, HyperBand for BOHB, the median stopping rule and the resource-changing
wrapper (plugin ``tunekit-hyperband``).

Unit tests drive each scheduler through a small fake run loop with synthetic learning
curves whose right decisions were worked out by hand (the comments show the arithmetic).
Real runs tune sklearn's ``SGDClassifier`` on the bundled digits data set.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

import tunekit as tune
from tunekit.schedulers import (
    ASHAScheduler,
    AsyncHyperBandScheduler,
    DistributeResources,
    FIFOScheduler,
    HyperBandForBOHB,
    HyperBandScheduler,
    MedianStoppingRule,
    ResourceChangingScheduler,
)
from tunekit.search import Searcher
from tunekit_core.resources import PlacementGroupFactory

try:
    from _digits import DIGITS_SPACE, new_model, train_epoch
except ImportError:  # tests imported as a package
    from tests._digits import DIGITS_SPACE, new_model, train_epoch

CONTINUE, PAUSE, STOP = "CONTINUE", "PAUSE", "STOP"


# -- a fake run loop ------------------------------------------------------------------------


class FakeTrial:
    def __init__(self, trial_id: str, cpus: float = 1.0):
        self.trial_id = trial_id
        self.status = "PENDING"
        self.placement_group_factory = PlacementGroupFactory([{"CPU": cpus}])
        self.last_result: dict = {}
        self.config: dict = {}

    @property
    def resources(self) -> dict:
        return self.placement_group_factory.required_resources

    def __str__(self) -> str:
        return f"trial_{self.trial_id}"

    __repr__ = __str__


class FakeExecutor:
    def __init__(self, cpus: float):
        self.cpus = cpus

    def total_resources(self) -> dict:
        return {"CPU": self.cpus, "GPU": 0.0}


class FakeRunner:
    """What schedulers see of the run loop, applying decisions the way the real one does:
    STOP -> TERMINATED then ``on_trial_complete``; PAUSE -> PAUSED; ``stop_trial`` of a
    pending/paused trial -> ``on_trial_remove``."""

    def __init__(self, scheduler, cpus: float = 1000.0, searcher=None):
        self.scheduler = scheduler
        self.trials: list[FakeTrial] = []
        self.trial_executor = FakeExecutor(cpus)
        self.searcher = searcher
        self.decisions: list[tuple[str, int, str]] = []

    # the scheduler-facing API
    def get_trials(self):
        return self.trials

    def get_pending_trials(self):
        return [t for t in self.trials if t.status == "PENDING"]

    def get_paused_trials(self):
        return [t for t in self.trials if t.status == "PAUSED"]

    def get_live_trials(self):
        return [t for t in self.trials if t.status in ("PENDING", "RUNNING", "PAUSED")]

    def has_resources_for_trial(self, trial) -> bool:
        used = sum(t.resources.get("CPU", 0) for t in self.trials if t.status == "RUNNING")
        return used + trial.resources.get("CPU", 0) <= self.trial_executor.cpus

    def stop_trial(self, trial) -> None:
        if trial.status == "RUNNING":
            trial.status = "TERMINATED"
            self.scheduler.on_trial_complete(self, trial, trial.last_result)
        elif trial.status in ("PENDING", "PAUSED"):
            trial.status = "TERMINATED"
            self.scheduler.on_trial_remove(self, trial)

    def pause_trial(self, trial) -> None:
        trial.status = "PAUSED"

    def _searcher_of(self, trial):
        return self.searcher

    # driving
    def add(self, n: int, cpus: float = 1.0) -> list[FakeTrial]:
        new = []
        for _ in range(n):
            trial = FakeTrial(str(len(self.trials)), cpus)
            self.trials.append(trial)
            self.scheduler.on_trial_add(self, trial)
            new.append(trial)
        return new

    def start_all(self) -> list[FakeTrial]:
        """Start whatever the scheduler chooses until it chooses nothing."""
        started = []
        while True:
            trial = self.scheduler.choose_trial_to_run(self)
            if trial is None:
                return started
            assert trial.status in ("PENDING", "PAUSED"), trial.status
            trial.status = "RUNNING"
            started.append(trial)

    def report(self, trial, t: float, score=None, time_attr="training_iteration",
               metric="acc", **extra) -> str:
        assert trial.status == "RUNNING", f"{trial} is {trial.status}"
        result = {time_attr: t, **extra}
        if score is not None:
            result[metric] = score
        decision = self.scheduler.on_trial_result(self, trial, result)
        trial.last_result = result
        self.decisions.append((trial.trial_id, t, decision))
        if decision == STOP:
            trial.status = "TERMINATED"
            self.scheduler.on_trial_complete(self, trial, result)
        elif decision == PAUSE:
            self.pause_trial(trial)
        return decision

    def complete(self, trial) -> None:
        trial.status = "TERMINATED"
        self.scheduler.on_trial_complete(self, trial, trial.last_result)

    def status(self) -> list[str]:
        return [t.status for t in self.trials]


def save_and_restore(scheduler, fresh, tmp_path):
    path = str(tmp_path / "scheduler.pkl")
    scheduler.save(path)
    fresh.restore(path)
    return fresh


# -- ASHA -----------------------------------------------------------------------------------


def test_asha_rungs_and_cutoffs_reduction_factor_2():
    asha = ASHAScheduler(metric="acc", mode="max", grace_period=1, max_t=4, reduction_factor=2)
    assert [m for m in asha._brackets[0].milestones] == [4, 2, 1]
    runner = FakeRunner(asha)
    a, b, c, d, e = runner.add(5)
    runner.start_all()
    # rung 1: the cutoff is the median (1 - 1/2 quantile) of the scores recorded there
    assert runner.report(a, 1, 1.0) == CONTINUE  # empty rung
    assert runner.report(b, 1, 2.0) == CONTINUE  # cutoff median([1]) = 1
    assert runner.report(c, 1, 0.5) == STOP  # cutoff median([1, 2]) = 1.5
    assert runner.report(d, 1, 1.5) == CONTINUE  # cutoff median([1, 2, 0.5]) = 1
    assert runner.report(e, 1, 1.25) == CONTINUE  # tie: median([1, 2, .5, 1.5]) = 1.25
    # rung 2
    assert runner.report(a, 2, 1.1) == CONTINUE  # empty rung
    assert runner.report(b, 2, 3.0) == CONTINUE  # cutoff 1.1
    assert runner.report(d, 2, 1.0) == STOP  # cutoff median([1.1, 3]) = 2.05
    # between rungs nothing is decided, at max_t every trial stops
    assert runner.report(a, 3, 0.0) == CONTINUE
    assert runner.report(b, 4, 5.0) == STOP
    assert runner.report(e, 2, 9.0) == CONTINUE
    assert runner.status() == ["RUNNING", "TERMINATED", "TERMINATED", "TERMINATED", "RUNNING"]
    assert "num_stopped=3" in asha.debug_string()
    assert "Iter 2" in asha.debug_string()


def test_asha_reduction_factor_4_and_min_mode():
    asha = AsyncHyperBandScheduler(metric="loss", mode="min", max_t=16, reduction_factor=4)
    assert asha._brackets[0].milestones == [16, 4, 1]
    runner = FakeRunner(asha)
    trials = runner.add(6)
    runner.start_all()
    for trial, loss in zip(trials[:4], [4.0, 3.0, 2.0, 1.0]):
        runner.report(trial, 1, loss, metric="loss")
    # signed scores -4..-1; the cutoff is their 75th percentile: -2 + 0.25 * 1 = -1.75
    assert runner.report(trials[4], 1, 1.8, metric="loss") == STOP  # -1.8 < -1.75
    assert runner.report(trials[5], 1, 1.7, metric="loss") == CONTINUE
    # each of the first four beat the cutoff of those before it (-4, -3.25, -2.5)
    assert [d for *_, d in runner.decisions[:4]] == [CONTINUE, CONTINUE, CONTINUE, CONTINUE]


def test_asha_skips_results_without_time_attr_and_errors_without_metric():
    asha = ASHAScheduler(metric="acc", mode="max", max_t=4, reduction_factor=2)
    runner = FakeRunner(asha)
    a, b, c = runner.add(3)
    runner.start_all()
    runner.report(a, 1, 1.0)
    # no training_iteration at all: never judged, never recorded, never stopped at max_t
    for step in range(10):
        assert runner.report(b, step, 0.0, time_attr="step") == CONTINUE
    assert asha._brackets[0].recorded[-1] == {"0": 1.0}
    with pytest.raises(ValueError) as info:
        runner.report(c, 1, None, other=1.0)
    message = str(info.value)
    assert "'acc'" in message and "other" in message and "training_iteration" in message


def test_asha_completed_trial_records_its_last_score_and_nan_never_stops():
    asha = ASHAScheduler(metric="acc", mode="max", max_t=10, reduction_factor=2)
    runner = FakeRunner(asha)
    a, b, c = runner.add(3)
    runner.start_all()
    a.last_result = {"training_iteration": 1, "acc": 5.0}
    runner.complete(a)  # finished on its own at t=1: its score still counts at rung 1
    assert runner.report(b, 1, 1.0) == STOP  # cutoff 5
    assert runner.report(c, 1, math.nan) == CONTINUE
    assert asha._brackets[0].recorded[-1] == {"0": 5.0, "1": 1.0}


def test_asha_stop_last_trials_false_lets_trials_run_past_max_t():
    asha = ASHAScheduler(metric="acc", mode="max", max_t=4, reduction_factor=2,
                         stop_last_trials=False)
    runner = FakeRunner(asha)
    a, b = runner.add(2)
    runner.start_all()
    assert runner.report(a, 4, 1.0) == CONTINUE
    assert runner.report(b, 4, 2.0) == CONTINUE
    for t in range(5, 9):
        assert runner.report(a, t, 0.0) == CONTINUE  # judged at rung 4 once, not again


def test_asha_brackets_are_seeded_and_offset():
    def assignment(seed):
        asha = ASHAScheduler(metric="acc", mode="max", max_t=64, reduction_factor=2,
                             brackets=3, seed=seed)
        runner = FakeRunner(asha)
        runner.add(30)
        return asha, [asha._trial_bracket[t.trial_id] for t in runner.trials]

    asha, first = assignment(7)
    assert first == assignment(7)[1]
    assert set(first) == {0, 1, 2}
    assert [b.milestones[-1] for b in asha._brackets] == [1, 2, 4]
    assert [len(b.milestones) for b in asha._brackets] == [7, 6, 5]


def test_asha_metric_and_mode_from_run_and_conflicts():
    asha = ASHAScheduler()
    assert asha.set_search_properties("acc", "max")
    assert asha.metric == "acc" and asha.mode == "max"
    assert asha.set_search_properties("acc", "max")  # the same again is fine
    assert not asha.set_search_properties("loss", None)
    assert not asha.set_search_properties(None, "min")
    only_mode = ASHAScheduler()
    assert only_mode.set_search_properties(None, "min")
    assert only_mode.metric == "_metric"
    with pytest.raises(ValueError, match="needs a metric and a mode"):
        FakeRunner(ASHAScheduler()).add(1)
    with pytest.raises(ValueError, match="grace_period"):
        ASHAScheduler(grace_period=10, max_t=5)
    with pytest.raises(ValueError, match="reduction_factor"):
        ASHAScheduler(reduction_factor=1)
    with pytest.raises(ValueError, match="mode"):
        ASHAScheduler(mode="maximize")


def test_asha_save_restore_mid_run_gives_the_same_decisions(tmp_path):
    def make():
        return ASHAScheduler(metric="acc", mode="max", max_t=8, reduction_factor=2, brackets=2,
                             seed=3)

    original = make()
    runner = FakeRunner(original)
    runner.add(6)
    runner.start_all()
    for i, trial in enumerate(runner.trials[:4]):
        runner.report(trial, 1, float(i))
    restored = save_and_restore(original, make(), tmp_path)
    twin = FakeRunner(restored)
    twin.trials = [FakeTrial(t.trial_id) for t in runner.trials]  # new objects, as on resume
    for old, new in zip(runner.trials, twin.trials):
        new.status = old.status
    later = [(4, 1, 2.5), (5, 1, 0.1), (1, 2, 3.0), (2, 2, 1.0), (3, 2, 4.0), (4, 2, 0.0)]
    for index, t, score in later:
        if runner.trials[index].status != "RUNNING":
            continue
        assert runner.report(runner.trials[index], t, score) == twin.report(
            twin.trials[index], t, score)
    more = runner.add(2) + twin.add(2)  # bracket assignment continues the same random stream
    assert [original._trial_bracket[t.trial_id] for t in more[:2]] == [
        restored._trial_bracket[t.trial_id] for t in more[2:]]
    assert original.debug_string() == restored.debug_string()


# -- HyperBand ------------------------------------------------------------------------------


def test_hyperband_bracket_sizes_and_milestones():
    hb = HyperBandScheduler(metric="acc", mode="max", max_t=81, reduction_factor=3)
    runner = FakeRunner(hb)
    runner.add(143 + 5)
    # s_max + 1 = 5 brackets per band: ceil(5 / (s + 1) * 3**s) trials, first milestone 81 / 3**s
    sizes = [(b.s, b.n0, b.milestone) for b in hb._brackets()]
    assert sizes == [(0, 5, 81), (1, 8, 27), (2, 15, 9), (3, 34, 3), (4, 81, 1), (0, 5, 81)]
    assert len(hb._bands) == 2
    small = HyperBandScheduler(metric="acc", mode="max", max_t=9)
    FakeRunner(small).add(17)
    assert [(b.n0, b.milestone) for b in small._brackets()] == [(3, 9), (5, 3), (9, 1)]
    assert "Round #0" in small.debug_string() and "Milestone (r)=3" in small.debug_string()


def test_hyperband_promotes_the_best_and_stops_the_rest():
    hb = HyperBandScheduler(metric="acc", mode="max", max_t=9, reduction_factor=3)
    runner = FakeRunner(hb)
    trials = runner.add(8)  # bracket 0: trials 0-2 (to 9), bracket 1: trials 3-7 (3, then 9)
    assert runner.start_all() == trials
    t3, t4, t5, t6, t7 = trials[3:]
    for t in (1, 2):
        for trial in trials[3:]:
            assert runner.report(trial, t, 0.0) == CONTINUE
    # at the milestone each trial waits (PAUSE) until all five are there
    assert runner.report(t3, 3, 0.5) == PAUSE
    assert runner.report(t4, 3, 0.7) == PAUSE
    assert runner.report(t5, 3, 0.1) == PAUSE
    assert runner.report(t6, 3, 0.5) == PAUSE  # ties with t3, which joined first
    # the last one triggers the halving: keep ceil(5 / 3) = 2 -> t4 (0.7) and t3 (0.5 first)
    assert runner.report(t7, 3, 0.2) == STOP
    assert [t.status for t in trials[3:]] == ["PAUSED", "PAUSED", "TERMINATED", "TERMINATED",
                                             "TERMINATED"]
    # the promoted ones are resumed, in the order they joined
    assert runner.start_all() == [t3, t4]
    for t in range(4, 9):
        assert runner.report(t3, t, 0.6) == CONTINUE
        assert runner.report(t4, t, 0.6) == CONTINUE
    assert runner.report(t3, 9, 0.6) == STOP  # max_t, last milestone
    assert runner.report(t4, 9, 0.6) == STOP
    # bracket 0 has no halving: its trials run to max_t and stop
    for trial in trials[:3]:
        assert runner.report(trial, 8, 0.3) == CONTINUE
        assert runner.report(trial, 9, 0.3) == STOP
    assert all(s == "TERMINATED" for s in runner.status())
    assert hb._num_stopped == 3
    assert not any(b.live for b in hb._brackets())


def test_hyperband_three_rounds_in_min_mode():
    hb = HyperBandScheduler(metric="loss", mode="min", max_t=9, reduction_factor=3)
    runner = FakeRunner(hb)
    runner.add(8)  # fill brackets 0 and 1
    trials = runner.add(9)  # bracket 2: milestones 1, 3, 9
    for trial in runner.trials[:8]:
        trial.status = "TERMINATED"
        hb.on_trial_remove(runner, trial)
    assert runner.start_all() == trials
    losses = [0.9, 0.2, 0.5, 0.3, 0.8, 0.1, 0.7, 0.4, 0.6]
    decisions = [runner.report(trial, 1, loss, metric="loss") for trial, loss in zip(trials, losses)]
    # keep the 3 lowest losses (0.1, 0.2, 0.3): trials 5, 1, 3
    assert decisions[:-1] == [PAUSE] * 8 and decisions[-1] == STOP
    assert runner.start_all() == [trials[1], trials[3], trials[5]]
    assert runner.report(trials[1], 2, 0.2, metric="loss") == CONTINUE
    assert runner.report(trials[1], 3, 0.25, metric="loss") == PAUSE
    assert runner.report(trials[5], 3, 0.05, metric="loss") == PAUSE
    assert runner.report(trials[3], 3, 0.3, metric="loss") == STOP  # 1 of 3 goes on: trial 5
    assert runner.start_all() == [trials[5]]
    assert runner.report(trials[5], 9, 0.01, metric="loss") == STOP
    assert [t.status for t in trials] == ["TERMINATED"] * 9


def test_hyperband_waits_for_a_trial_without_time_attr_until_it_ends():
    hb = HyperBandScheduler(metric="acc", mode="max", max_t=9)
    runner = FakeRunner(hb)
    runner.add(3)
    trials = runner.add(5)
    runner.start_all()
    silent = trials[4]
    for trial, score in zip(trials[:4], [0.1, 0.4, 0.3, 0.2]):
        assert runner.report(trial, 3, score) == PAUSE
    for step in range(5):  # never reports training_iteration: no decision, it runs on
        assert runner.report(silent, step, 1.0, time_attr="step") == CONTINUE
    assert runner.start_all() == []  # nobody promoted yet: the bracket waits for it
    runner.complete(silent)  # it leaves the bracket: the other four are halved (keep 2)
    assert [t.status for t in trials[:4]] == ["TERMINATED", "PAUSED", "PAUSED", "TERMINATED"]
    assert runner.start_all() == [trials[1], trials[2]]


def test_hyperband_errors_on_missing_metric():
    hb = HyperBandScheduler(metric="acc", mode="max", max_t=9)
    runner = FakeRunner(hb)
    (trial,) = runner.add(1)
    runner.start_all()
    with pytest.raises(ValueError, match="'acc'.*keys present: loss, training_iteration"):
        runner.report(trial, 1, None, loss=3.0)


def test_hyperband_halves_when_a_waiting_bracket_loses_its_last_runner():
    hb = HyperBandScheduler(metric="acc", mode="max", max_t=9)
    runner = FakeRunner(hb)
    runner.add(3)
    trials = runner.add(5)
    runner.start_all()
    for trial, score in zip(trials[:4], [0.1, 0.4, 0.3, 0.2]):
        runner.report(trial, 3, score)
    trials[4].status = "ERROR"
    hb.on_trial_error(runner, trials[4])
    assert runner.start_all() == [trials[1], trials[2]]


def test_hyperband_save_restore_mid_run_gives_the_same_decisions(tmp_path):
    def make():
        return HyperBandScheduler(metric="acc", mode="max", max_t=9)

    original = make()
    runner = FakeRunner(original)
    runner.add(8)
    runner.start_all()
    for trial, score in zip(runner.trials[3:6], [0.5, 0.7, 0.1]):
        runner.report(trial, 3, score)
    restored = save_and_restore(original, make(), tmp_path)
    twin = FakeRunner(restored)
    for old in runner.trials:
        new = FakeTrial(old.trial_id)
        new.status = old.status
        twin.trials.append(new)
    assert twin.report(twin.trials[6], 3, 0.5) == runner.report(runner.trials[6], 3, 0.5) == PAUSE
    assert twin.report(twin.trials[7], 3, 0.2) == runner.report(runner.trials[7], 3, 0.2) == STOP
    assert twin.status() == runner.status()
    assert [t.trial_id for t in twin.start_all()] == [t.trial_id for t in runner.start_all()] == [
        "3", "4"]
    assert "Milestone (r)=9" in restored.debug_string()


def test_hyperband_after_resume_halves_a_bracket_whose_trials_all_wait(tmp_path):
    """On resume paused trials come back PENDING; those already at the milestone must not
    run again before the bracket is halved, and the halving must happen without a result."""
    original = HyperBandScheduler(metric="acc", mode="max", max_t=9)
    runner = FakeRunner(original)
    runner.add(3)
    trials = runner.add(5)
    runner.start_all()
    for trial, score in zip(trials[:4], [0.1, 0.4, 0.3, 0.2]):
        runner.report(trial, 3, score)
    restored = save_and_restore(original, HyperBandScheduler(metric="acc", mode="max", max_t=9),
                                tmp_path)
    twin = FakeRunner(restored)
    for old in runner.trials:  # the driver died: running and paused trials are PENDING again
        new = FakeTrial(old.trial_id)
        new.status = "PENDING" if old.status in ("RUNNING", "PAUSED") else old.status
        twin.trials.append(new)
    started = [t.trial_id for t in twin.start_all()]
    assert started == ["0", "1", "2", "7"]  # only those below the milestone
    twin.report(twin.trials[7], 3, 0.35)  # the last one arrives: keep 0.4 and 0.35
    assert [t.status for t in twin.trials[3:]] == ["TERMINATED", "PENDING", "TERMINATED",
                                                 "TERMINATED", "RUNNING"]
    assert [t.trial_id for t in twin.start_all()] == ["4"]


# -- HyperBand for BOHB ---------------------------------------------------------------------


class RecordingSearcher(Searcher):
    """Suggests {"x": i} and records what the scheduler tells it about pauses."""

    def __init__(self, limit: int = 1000):
        super().__init__(metric="acc", mode="max")
        self.count = 0
        self.limit = limit
        self.events: list[tuple[str, str]] = []
        self.budgets: list[tuple[str, float]] = []

    def suggest(self, trial_id):
        if self.count >= self.limit:
            return Searcher.FINISHED
        self.count += 1
        return {"x": self.count}

    def on_trial_result(self, trial_id, result):
        budget = result.get("hyperband_info", {}).get("budget")
        if budget is not None:
            self.budgets.append((trial_id, budget))

    def on_pause(self, trial_id):
        self.events.append(("pause", trial_id))

    def on_unpause(self, trial_id):
        self.events.append(("unpause", trial_id))


def test_hb_bohb_fills_largest_bracket_first_and_tells_the_searcher():
    searcher = RecordingSearcher()
    hb = HyperBandForBOHB(metric="acc", mode="max", max_t=9)
    runner = FakeRunner(hb, searcher=searcher)
    trials = runner.add(9 + 5 + 3)
    assert [(b.s, b.n0, b.milestone) for b in hb._brackets()] == [(2, 9, 1), (1, 5, 3), (0, 3, 9)]
    first = trials[:9]
    runner.start_all()
    scores = [0.9, 0.2, 0.5, 0.3, 0.8, 0.1, 0.7, 0.4, 0.6]
    decisions = [runner.report(t, 1, s) for t, s in zip(first, scores)]
    # paused until the bracket is full and all others wait; the last one halves it
    assert decisions == [PAUSE] * 8 + [STOP]
    assert searcher.events[:8] == [("pause", t.trial_id) for t in first[:8]]
    kept = [first[0], first[4], first[6]]  # 0.9, 0.8, 0.7
    assert searcher.events[8:] == [("unpause", t.trial_id) for t in kept]
    assert runner.start_all() == kept
    result = {"training_iteration": 3, "acc": 0.5}
    assert hb.on_trial_result(runner, kept[0], result) == PAUSE  # milestone 3: waits again
    assert result["hyperband_info"] == {"budget": 3}


def test_hb_bohb_halves_an_unfilled_bracket_when_nothing_runs():
    searcher = RecordingSearcher()
    hb = HyperBandForBOHB(metric="acc", mode="max", max_t=9)
    runner = FakeRunner(hb, searcher=searcher)
    trials = runner.add(4)  # bracket s=2 holds 9: not filled
    runner.start_all()
    for trial, score in zip(trials, [0.1, 0.4, 0.3, 0.2]):
        assert runner.report(trial, 1, score) == PAUSE
    # nothing runs and nothing is pending: halve now (keep ceil(9/3) = 3 of the 4)
    assert runner.start_all() == [trials[1], trials[2], trials[3]]
    assert trials[0].status == "TERMINATED"
    assert ("unpause", "1") in searcher.events


# -- median stopping rule -------------------------------------------------------------------


def test_median_stopping_decisions():
    rule = MedianStoppingRule(time_attr="training_iteration", metric="acc", mode="max",
                              grace_period=1, min_samples_required=2)
    runner = FakeRunner(rule)
    a, b, c, d, e = runner.add(5)
    runner.start_all()
    for t, (sa, sb) in enumerate([(1, 3), (2, 3), (3, 3)], start=1):
        runner.report(a, t, float(sa))
        runner.report(b, t, float(sb))
    # running means at t=1: a 1, b 3 -> median 2
    assert runner.report(c, 1, 0.5) == STOP
    # at t=1 c counts too (mean 0.5): median(1, 3, 0.5) = 1; d's best 2 >= 1
    assert runner.report(d, 1, 2.0) == CONTINUE
    # at t=2 only a (mean 1.5) and b (3) got there: median 2.25; d's best is 2.0
    assert runner.report(d, 2, 1.0) == STOP
    # a tie with the median goes on: at t=1 means are a 1, b 3, c .5, d 2 -> median 1.5
    assert runner.report(e, 1, 1.5) == CONTINUE
    assert "num_stopped=2" in rule.debug_string()


def test_median_stopping_grace_period_min_samples_and_time_slices():
    rule = MedianStoppingRule(time_attr="training_iteration", metric="loss", mode="min",
                              grace_period=2, min_samples_required=2, min_time_slice=2)
    runner = FakeRunner(rule, cpus=1)
    a, b = runner.add(2)
    runner.start_all()
    assert a.status == "RUNNING" and b.status == "PENDING"
    assert runner.report(a, 1, 100.0, metric="loss") == CONTINUE  # before the grace period
    # too few samples and b waits to run: yield (PAUSE) at most every 2 time units
    assert runner.report(a, 2, 100.0, metric="loss") == PAUSE
    runner.start_all()
    assert b.status == "RUNNING" and a.status == "PAUSED"
    assert runner.report(b, 3, 1.0, metric="loss") == PAUSE  # a is paused: it waits
    a.status = "RUNNING"
    assert runner.report(a, 3, 100.0, metric="loss") == CONTINUE  # 3 - 2 <= min_time_slice
    b.status = "TERMINATED"
    assert runner.report(a, 5, 100.0, metric="loss") == CONTINUE  # nothing waits any more


def test_median_stopping_soft_stop_pauses_once_and_missing_metric_errors():
    rule = MedianStoppingRule(time_attr="training_iteration", metric="acc", mode="max",
                              grace_period=0, min_samples_required=1, hard_stop=False)
    runner = FakeRunner(rule)
    a, b = runner.add(2)
    runner.start_all()
    runner.report(a, 1, 1.0)
    assert runner.report(b, 1, 0.0) == PAUSE
    runner.start_all()
    assert runner.report(b, 2, -5.0) == CONTINUE  # paused once by the rule: never again
    assert runner.report(a, 5, 1.0, time_attr="step") == CONTINUE  # no time_attr: skipped
    with pytest.raises(ValueError, match="'acc'"):
        runner.report(a, 2, None)


def test_median_stopping_save_restore(tmp_path):
    def make():
        return MedianStoppingRule(time_attr="training_iteration", metric="acc", mode="max",
                                  grace_period=1, min_samples_required=2)

    rule = make()
    runner = FakeRunner(rule)
    runner.add(4)
    runner.start_all()
    for t in (1, 2):
        runner.report(runner.trials[0], t, 1.0)
        runner.report(runner.trials[1], t, 3.0)
    restored = save_and_restore(rule, make(), tmp_path)
    twin = FakeRunner(restored)
    for old in runner.trials:
        new = FakeTrial(old.trial_id)
        new.status = old.status
        twin.trials.append(new)
    for index, t, score in [(2, 1, 0.5), (3, 1, 2.5), (3, 2, 2.5)]:
        assert runner.report(runner.trials[index], t, score) == twin.report(
            twin.trials[index], t, score)
    assert [d for *_, d in twin.decisions] == [STOP, CONTINUE, CONTINUE]


# -- resource changing ----------------------------------------------------------------------


def test_distribute_resources_spreads_free_cpus_evenly():
    rcs = ResourceChangingScheduler(FIFOScheduler(), DistributeResources())
    runner = FakeRunner(rcs, cpus=4)
    a, b = runner.add(2)
    runner.start_all()
    # 4 CPUs, 2 live trials of 1 CPU: 2 spare -> 1 more each
    assert runner.report(a, 1, 0.0) == PAUSE
    assert rcs._to_reallocate["0"].required_resources == {"CPU": 2.0}
    assert runner.start_all() == [a]
    assert a.resources == {"CPU": 2.0}
    assert runner.report(b, 1, 0.0) == PAUSE
    runner.start_all()
    assert b.resources == {"CPU": 2.0}
    assert runner.report(a, 2, 0.0) == CONTINUE  # all 4 in use: nothing changes
    runner.complete(b)
    # b is gone: a may take the 2 CPUs b had (share = ceil((4 - 1) / 1) = 3 more than base)
    assert runner.report(a, 3, 0.0) == PAUSE
    runner.start_all()
    assert a.resources == {"CPU": 4.0}


def test_resource_changing_waits_for_free_resources_and_keeps_base_decisions():
    def allocate(runner, trial, result, scheduler):
        return {"cpu": 2} if result["training_iteration"] >= 2 else None

    asha = ASHAScheduler(metric="acc", mode="max", max_t=4, reduction_factor=2)
    rcs = ResourceChangingScheduler(asha, allocate)
    assert rcs.set_search_properties(None, None)
    runner = FakeRunner(rcs, cpus=2)
    a, b = runner.add(2)
    runner.start_all()
    assert runner.report(a, 1, 1.0) == CONTINUE
    assert runner.report(b, 1, 0.5) == STOP  # ASHA's decision stands
    assert runner.report(a, 2, 1.0) == PAUSE
    assert runner.start_all() == [a] and a.resources == {"CPU": 2.0}
    assert runner.report(a, 3, 1.0) == CONTINUE  # already has what it asks for
    assert runner.report(a, 4, 1.0) == STOP
    assert rcs.metric == "acc"
    assert "(ResourceChangingScheduler) Using AsyncHyperBand" in rcs.debug_string()


def test_resource_changing_rejects_mixed_base_resources_and_saves_state(tmp_path):
    rcs = ResourceChangingScheduler()
    runner = FakeRunner(rcs, cpus=4)
    runner.add(1)
    with pytest.raises(ValueError, match="same resources"):
        runner.add(1, cpus=2)
    restored = save_and_restore(rcs, ResourceChangingScheduler(), tmp_path)
    assert restored.base_trial_resources == PlacementGroupFactory([{"CPU": 1.0}])


def test_resource_changing_refuses_reuse_actors_and_none_changes_nothing():
    rcs = ResourceChangingScheduler()
    runner = FakeRunner(rcs)
    runner._reuse_actors = True
    runner.add(1)
    with pytest.raises(ValueError, match="reuse_actors"):
        rcs.choose_trial_to_run(runner)
    with pytest.warns(UserWarning, match="never changes"):
        idle = ResourceChangingScheduler(resources_allocation_function=None)
    runner = FakeRunner(idle, cpus=8)
    (trial,) = runner.add(1)
    runner.start_all()
    assert runner.report(trial, 1, 1.0) == CONTINUE
    assert trial.resources == {"CPU": 1.0}


# -- names, facades, missing plugin -------------------------------------------------------


def test_names_resolve_to_the_classes():
    assert type(tune.create_scheduler("asha")) is AsyncHyperBandScheduler
    assert type(tune.create_scheduler("async_hyperband")) is AsyncHyperBandScheduler
    assert type(tune.create_scheduler("hyperband")) is HyperBandScheduler
    assert type(tune.create_scheduler("hb_bohb")) is HyperBandForBOHB
    assert type(tune.create_scheduler("median_stopping_rule")) is MedianStoppingRule
    assert isinstance(ASHAScheduler(), FIFOScheduler)
    assert ASHAScheduler().supports_buffered_results
    assert not HyperBandScheduler().supports_buffered_results


def test_missing_plugin_import_error_names_the_distribution():
    code = (
        "import sys; sys.modules['tunekit_hyperband'] = None\n"
        "from tunekit.schedulers import ASHAScheduler\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "tunekit-hyperband" in proc.stderr


# -- real runs: SGDClassifier on sklearn's digits ------------------------------------------
#
# The task of issue 4: 40 trials, one epoch of SGDClassifier.partial_fit per iteration, at
# most 30 epochs, on 2 CPUs. The configs are seeded; which trial reaches a rung first
# still depends on timing, so each run's decisions are checked against an independent
# replay of the algorithm on what the trials recorded.

NUM_TRIALS, MAX_EPOCHS = 40, 30
# A tuned SGDClassifier reaches about 0.96-0.98 validation accuracy on digits; an
# untuned one anything from 0.1 (diverged) to 0.9.
TUNED_ACCURACY = 0.95


def digits_plain(config):
    """One epoch per iteration, no checkpoints (ASHA needs none)."""
    model = new_model(config)
    for epoch in range(1, config["max_epochs"] + 1):
        tune.report(mean_accuracy=train_epoch(model, epoch), epoch=epoch)


def digits_checkpointed(config):
    """Reports a checkpoint every epoch and continues from one when given."""
    start, model = 0, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        state = checkpoint.to_dict()
        start, model = state["epoch"], state["model"]
    model = model or new_model(config)
    for epoch in range(start + 1, config["max_epochs"] + 1):
        accuracy = train_epoch(model, epoch)
        tune.report({"mean_accuracy": accuracy, "epoch": epoch, "resumed_from": start},
                    checkpoint=tune.Checkpoint.from_dict({"epoch": epoch, "model": model}))


class DigitsTrainable(tune.Trainable):
    def setup(self, config):
        self.model = new_model(config)
        self.epoch = 0
        self.resumed_from = 0

    def step(self):
        self.epoch += 1
        accuracy = train_epoch(self.model, self.epoch)
        return {"mean_accuracy": accuracy, "epoch": self.epoch, "resumed_from": self.resumed_from}

    def save_checkpoint(self, checkpoint_dir):
        return {"epoch": self.epoch, "model": self.model}

    def load_checkpoint(self, checkpoint):
        self.epoch = checkpoint["epoch"]
        self.model = checkpoint["model"]
        self.resumed_from = checkpoint["epoch"]


def rows(trial):
    with open(os.path.join(trial.local_path, "result.json")) as f:
        return [json.loads(line) for line in f]


class ResultOrder(tune.Callback):
    """Every result as the driver handed it to the scheduler, in that order."""

    def __init__(self):
        self.seen: list[tuple[str, int, float]] = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen.append((trial.trial_id, result["training_iteration"], result["mean_accuracy"]))


@pytest.fixture
def quick_stops(monkeypatch):
    monkeypatch.setenv("TUNEKIT_STOP_GRACE_S", "5")
    monkeypatch.setenv("TUNEKIT_NUM_CPUS", "2")


def _run_digits(tmp_path, trainable, scheduler, **kwargs):
    analysis = tune.run(
        trainable,
        config={**DIGITS_SPACE, "max_epochs": MAX_EPOCHS},
        search_alg=tune.search.BasicVariantGenerator(random_state=3),
        num_samples=NUM_TRIALS,
        metric="mean_accuracy",
        mode="max",
        scheduler=scheduler,
        local_dir=str(tmp_path),
        verbose=0,
        **kwargs,
    )
    trials = sorted(analysis.trials, key=lambda t: t.trial_id)  # creation order
    assert len(trials) == NUM_TRIALS and all(t.status == "TERMINATED" for t in trials)
    for trial in trials:
        # every epoch once, in order, in the trial's results (resumed trials included)
        last = trial.last_result["training_iteration"]
        assert [r["training_iteration"] for r in rows(trial)] == list(range(1, last + 1))
        assert [r["epoch"] for r in rows(trial)] == list(range(1, last + 1))
    return trials


def replay_asha(seen, rungs, max_t, reduction_factor):
    """ASHA's decisions on results arriving in the order ``seen``: trial id -> the
    iteration it was stopped at. A trial reaching a rung is stopped when it is below
    the 1 - 1/reduction_factor quantile of what earlier trials had there; all trials
    stop at max_t."""
    import numpy as np

    recorded: dict[int, list[float]] = {rung: [] for rung in rungs}
    stopped: dict[str, int] = {}
    for trial_id, iteration, accuracy in seen:
        assert trial_id not in stopped, "a result after the trial was stopped"
        if iteration >= max_t:
            stopped[trial_id] = iteration
        elif iteration in recorded:
            earlier = recorded[iteration]
            cutoff = np.percentile(earlier, 100 * (1 - 1 / reduction_factor)) if earlier else None
            earlier.append(accuracy)
            if cutoff is not None and accuracy < cutoff:
                stopped[trial_id] = iteration
    return stopped


def test_asha_real_run_on_digits(tmp_path, quick_stops):
    order = ResultOrder()
    # grace_period=1, reduction_factor=4, max_t=30: rungs at 1, 4 and 16 epochs
    scheduler = ASHAScheduler(max_t=MAX_EPOCHS, grace_period=1, reduction_factor=4)
    trials = _run_digits(tmp_path, digits_plain, scheduler, callbacks=[order])
    # the callback saw each trial's results, and nothing else
    for trial in trials:
        assert [(i, a) for t, i, a in order.seen if t == trial.trial_id] == [
            (r["training_iteration"], r["mean_accuracy"]) for r in rows(trial)
        ]
    stopped = replay_asha(order.seen, rungs=(1, 4, 16), max_t=MAX_EPOCHS, reduction_factor=4)
    epochs = {t.trial_id: t.last_result["training_iteration"] for t in trials}
    assert epochs == stopped
    assert set(epochs.values()) <= {1, 4, 16, 30}
    assert 30 in epochs.values()  # the first trial at each rung always goes on
    assert sum(epochs.values()) < NUM_TRIALS * MAX_EPOCHS / 2
    assert max(accuracy for _, _, accuracy in order.seen) > TUNED_ACCURACY


def replay_hyperband(members, curves, s, n0, r0, max_t, eta):
    """Synchronous successive halving of one bracket on the recorded curves: trial id ->
    the iteration it ends at, and how many trials were kept at each halving. At each
    milestone the best ceil(n / eta) go on (n starts at the bracket's size n0; ties go
    to the trial that joined first)."""
    ends: dict[str, int] = {}
    kept_counts = []
    live, n = list(members), n0
    for milestone in [min(r0 * eta**k, max_t) for k in range(s)]:
        n = math.ceil(n / eta)
        ranked = sorted(live, key=lambda i: (-curves[i][milestone - 1], members.index(i)))
        for trial_id in ranked[n:]:
            ends[trial_id] = milestone
        live = ranked[:n]
        kept_counts.append(len(live))
    ends.update(dict.fromkeys(live, max_t))
    return ends, kept_counts


def _check_hyperband_run(trials, scheduler):
    # max_t=30, eta=3: brackets s=0..3 of 4, 6, 12 and 27 trials with first milestones
    # 30, 10, 3 and 1; trials fill them in creation order, so the last gets 40-22 = 18
    ids = [t.trial_id for t in trials]
    brackets = scheduler._brackets()
    assert [(b.s, b.n0, b.r0) for b in brackets] == [(0, 4, 30), (1, 6, 10), (2, 12, 3), (3, 27, 1)]
    members = [ids[0:4], ids[4:10], ids[10:22], ids[22:40]]
    assert [b.joined for b in brackets] == members
    curves = {t.trial_id: [r["mean_accuracy"] for r in rows(t)] for t in trials}
    expected, at_least_resumed, at_most_resumed = {}, 0, 0
    for bracket, joined in zip(brackets, members):
        ends, kept_counts = replay_hyperband(joined, curves, bracket.s, bracket.n0, bracket.r0,
                                             MAX_EPOCHS, 3)
        expected.update(ends)
        # of the trials kept at a halving, all but the one whose result completed the
        # milestone waited there, paused, and were resumed
        at_least_resumed += sum(kept - 1 for kept in kept_counts)
        at_most_resumed += sum(kept_counts)
    epochs = {t.trial_id: t.last_result["training_iteration"] for t in trials}
    assert epochs == expected
    assert sum(epochs.values()) < NUM_TRIALS * MAX_EPOCHS / 2
    assert max(max(curve) for curve in curves.values()) > TUNED_ACCURACY
    resumes = 0
    for trial in trials:
        history = rows(trial)
        statuses = [s for s, _ in trial.status_history]
        assert statuses[:2] == ["PENDING", "RUNNING"] and statuses[-1] == "TERMINATED"
        # paused at a milestone, then resumed (PAUSED -> RUNNING) or dropped (-> TERMINATED)
        pauses = sum(a == "PAUSED" and b == "RUNNING" for a, b in zip(statuses, statuses[1:]))
        # each resume continued from the checkpoint of the milestone it paused at
        resumed_from = [r["resumed_from"] for r in history]
        assert resumed_from == sorted(resumed_from)
        points = sorted(set(resumed_from) - {0})
        assert len(points) == pauses
        assert all(r["resumed_from"] < r["training_iteration"] for r in history)
        assert set(points) <= {1, 3, 9, 10}  # milestones before max_t
        for point in points:
            assert history[point]["resumed_from"] == point  # the epoch after the milestone
        resumes += pauses
    assert at_least_resumed <= resumes <= at_most_resumed


@pytest.mark.parametrize("kind", ["function", "class"])
def test_hyperband_real_run_resumes_promoted_trials_from_checkpoints(tmp_path, quick_stops, kind):
    scheduler = HyperBandScheduler(max_t=MAX_EPOCHS, reduction_factor=3)
    trainable = digits_checkpointed if kind == "function" else DigitsTrainable
    _check_hyperband_run(_run_digits(tmp_path, trainable, scheduler), scheduler)


# -- real runs: toy trainables ----------------------------------------------------------------


def toy_checkpointed(config):
    """Score x * iteration; checkpoints every iteration and reports where it resumed."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint.to_dict()["i"]
    for i in range(start + 1, config.get("n", 20) + 1):
        tune.report({"acc": config["x"] * i, "resumed_from": start,
                     "cpus": tune.get_trial_resources().get("CPU")},
                    checkpoint=tune.Checkpoint.from_dict({"i": i}))


class BohbLikeSearcher(RecordingSearcher):
    def __init__(self):
        Searcher.__init__(self)
        self.count = 0
        self.limit = 1000
        self.events = []
        self.budgets = []


def test_hb_bohb_real_run_with_a_searcher(tmp_path, quick_stops):
    # max_t=3, eta=3: s_max + 1 = 2; the largest bracket first: 3 trials to 1, then the best
    # goes on to 3; then a bracket of 2 trials run to 3.
    searcher = BohbLikeSearcher()
    scheduler = HyperBandForBOHB(max_t=3, reduction_factor=3)
    analysis = tune.run(toy_checkpointed, search_alg=searcher, scheduler=scheduler,
                        num_samples=5, metric="acc", mode="max", local_dir=str(tmp_path),
                        verbose=0)
    by_x = {t.config["x"]: t for t in analysis.trials}
    assert sorted(by_x) == [1, 2, 3, 4, 5]
    assert [by_x[x].last_result["training_iteration"] for x in (1, 2, 3, 4, 5)] == [1, 1, 3, 3, 3]
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    # all but the last of the first bracket to reach 1 waited there, paused
    first_bracket = {by_x[x].trial_id for x in (1, 2, 3)}
    paused = {trial_id for event, trial_id in searcher.events if event == "pause"}
    unpaused = {trial_id for event, trial_id in searcher.events if event == "unpause"}
    assert len(paused) >= 2 and paused <= first_bracket
    assert unpaused <= {by_x[3].trial_id}
    if by_x[3].trial_id in paused:  # it waited at 1 and was promoted: resumed from 1
        assert unpaused == {by_x[3].trial_id}
        assert by_x[3].last_result["resumed_from"] == 1
    # the searcher sees the budget of each result at a milestone it goes on from (a STOP
    # result goes to on_trial_complete instead); results carry it too
    assert {budget for _, budget in searcher.budgets} == {1}
    assert by_x[3].last_result["hyperband_info"] == {"budget": 3}


def test_median_stopping_rule_real_run_by_name(tmp_path, quick_stops):
    analysis = tune.run(
        toy_checkpointed,
        config={"x": tune.grid_search([3, 2, 1]), "n": 4},
        scheduler="median_stopping_rule",
        metric="acc", mode="max", local_dir=str(tmp_path), verbose=0, max_concurrent_trials=1,
    )
    # by name: time_attr time_total_s with a 60 s grace period -> nothing is stopped
    assert [t.last_result["training_iteration"] for t in analysis.trials] == [4] * 3


def test_median_stopping_rule_real_run_stops_worse_trials(tmp_path, quick_stops):
    analysis = tune.run(
        toy_checkpointed,
        config={"x": tune.grid_search([6, 5, 4, 3, 2, 1]), "n": 6},
        scheduler=MedianStoppingRule(time_attr="training_iteration", grace_period=1,
                                     min_samples_required=2),
        metric="acc", mode="max", local_dir=str(tmp_path), verbose=0, max_concurrent_trials=1,
    )
    last = [t.last_result["training_iteration"] for t in analysis.trials]
    # x=6, 5 run out (too few samples); x=4 at t=1: median(6, 5) = 5.5 > 4 -> stopped, ...
    assert last == [6, 6, 1, 1, 1, 1]


def test_resource_changing_real_run_restarts_with_new_resources(tmp_path, quick_stops):
    def two_cpus_from_3(runner, trial, result, scheduler):
        return {"cpu": 2} if result["training_iteration"] >= 3 else None

    scheduler = ResourceChangingScheduler(FIFOScheduler(), two_cpus_from_3)
    analysis = tune.run(
        toy_checkpointed,
        config={"x": tune.grid_search([1, 2]), "n": 6},
        scheduler=scheduler, metric="acc", mode="max", local_dir=str(tmp_path), verbose=0,
    )
    for trial in analysis.trials:
        history = rows(trial)
        assert [r["training_iteration"] for r in history] == [1, 2, 3, 4, 5, 6]
        assert [r["cpus"] for r in history] == [1, 1, 1, 2, 2, 2]
        assert [r["resumed_from"] for r in history] == [0, 0, 0, 3, 3, 3]
        assert trial.placement_group_factory.required_resources == {"CPU": 2.0}


# -- resume: a killed driver continues the HyperBand brackets -------------------------------

RESUME_DRIVER = '''
import os, signal, sys
import tunekit as tune
from tunekit.schedulers import HyperBandScheduler

OUT = sys.argv[1]

def train(config):
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint.to_dict()["i"]
    for i in range(start + 1, 10):
        marker = os.path.join(OUT, "killed")
        if start == 3 and i == 5 and not os.path.exists(marker):
            # a promoted trial is half-way: the driver dies (once)
            open(marker, "w").close()
            os.kill(os.getppid(), signal.SIGKILL)
        tune.report({"score": config["x"] * i, "resumed_from": start},
                    checkpoint=tune.Checkpoint.from_dict({"i": i}))

analysis = tune.run(
    train,
    name="hb",
    local_dir=OUT,
    config={"x": tune.grid_search([0.5, 0.4, 0.3, 0.9, 0.2, 0.8, 0.1, 0.7])},
    metric="score",
    mode="max",
    scheduler=HyperBandScheduler(max_t=9, reduction_factor=3),
    resume="AUTO",
    verbose=0,
)
print("DONE", sorted((t.config["x"], t.last_result["training_iteration"])
                     for t in analysis.trials), flush=True)
'''


def test_hyperband_killed_driver_resumes_its_brackets(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(RESUME_DRIVER)
    env = dict(os.environ, TUNEKIT_STATE_SAVE_PERIOD_S="0", TUNEKIT_NUM_CPUS="2",
               TUNEKIT_STOP_GRACE_S="5")
    first = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                           text=True, env=env, timeout=120)
    assert first.returncode == -9, first.stderr  # killed by its trial
    assert (tmp_path / "killed").exists()
    second = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert second.returncode == 0, second.stderr
    # the same outcome as without the kill: bracket 0 (x=.5, .4, .3) runs to 9; in bracket 1
    # (x=.9, .2, .8, .1, .7) the best two at 3 (.9, .8) go on to 9
    expected = [(0.1, 3), (0.2, 3), (0.3, 9), (0.4, 9), (0.5, 9), (0.7, 3), (0.8, 9), (0.9, 9)]
    assert f"DONE {expected}" in second.stdout
    analysis = tune.ExperimentAnalysis(str(tmp_path / "hb"))
    for trial in analysis.trials:
        last = trial.last_result["training_iteration"]
        assert [r["training_iteration"] for r in rows(trial)] == list(range(1, last + 1))
