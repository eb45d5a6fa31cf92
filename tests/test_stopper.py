"""Stoppers: each rule fed result sequences whose right decisions are known by hand."""

import datetime
import pickle

import pytest

from tunekit.stopper import (
    CombinedStopper,
    CriteriaStopper,
    ExperimentPlateauStopper,
    FunctionStopper,
    MaximumIterationStopper,
    NoopStopper,
    StopCriterionError,
    Stopper,
    TimeoutStopper,
    TrialPlateauStopper,
)
from tunekit_core.stopper import make_stopper


def decisions(stopper, trial_id, values, key="loss"):
    return [stopper(trial_id, {key: v}) for v in values]


# --------------------------------------------------------------------- base / noop


def test_base_stopper_stops_nothing():
    s = Stopper()
    assert s("t1", {"loss": 0.0}) is False
    assert s.stop_all() is False
    assert NoopStopper()("t1", {}) is False


# --------------------------------------------------------------------- maximum iteration


def test_maximum_iteration_counts_results_per_trial():
    s = MaximumIterationStopper(max_iter=3)
    assert [s("a", {}) for _ in range(3)] == [False, False, True]
    # another trial has its own count
    assert [s("b", {}) for _ in range(3)] == [False, False, True]
    assert s.stop_all() is False


# --------------------------------------------------------------------- trial plateau


def test_trial_plateau_stops_when_last_results_are_flat():
    s = TrialPlateauStopper(metric="loss", std=0.01, num_results=4, grace_period=4)
    # 4th result: window [1, .5, .5, .5] has std 0.2165 -> continue;
    # 5th result: window [.5, .5, .5, .5] has std 0 -> stop.
    assert decisions(s, "t", [1.0, 0.5, 0.5, 0.5, 0.5]) == [False, False, False, False, True]


def test_trial_plateau_respects_grace_period_beyond_window():
    s = TrialPlateauStopper(metric="loss", std=0.01, num_results=2, grace_period=6)
    assert decisions(s, "t", [1.0] * 6) == [False] * 5 + [True]


def test_trial_plateau_std_threshold_is_strict():
    # values alternate 0 / 0.2: population std of any window of 2 is exactly 0.1
    s = TrialPlateauStopper(metric="loss", std=0.1, num_results=2, grace_period=1)
    assert decisions(s, "t", [0.0, 0.2, 0.0]) == [False, False, False]
    s = TrialPlateauStopper(metric="loss", std=0.1001, num_results=2, grace_period=1)
    assert decisions(s, "t", [0.0, 0.2]) == [False, True]


def test_trial_plateau_metric_threshold_min_and_max():
    s = TrialPlateauStopper(
        metric="loss", num_results=2, grace_period=2, metric_threshold=0.5, mode="min"
    )
    assert decisions(s, "above", [0.8, 0.8, 0.8]) == [False, False, False]
    assert decisions(s, "below", [0.4, 0.4]) == [False, True]
    s = TrialPlateauStopper(
        metric="acc", num_results=2, grace_period=2, metric_threshold=0.9, mode="max"
    )
    assert decisions(s, "low", [0.5, 0.5, 0.5], key="acc") == [False, False, False]
    assert decisions(s, "high", [0.95, 0.95], key="acc") == [False, True]


def test_trial_plateau_missing_metric_blocks_until_it_leaves_window():
    s = TrialPlateauStopper(metric="loss", num_results=2, grace_period=1)
    assert s("t", {"other": 1}) is False
    assert s("t", {"loss": 1.0}) is False  # window [None, 1.0]
    assert s("t", {"loss": 1.0}) is True  # window [1.0, 1.0]


def test_trial_plateau_threshold_needs_mode():
    with pytest.raises(ValueError, match="mode"):
        TrialPlateauStopper(metric="loss", metric_threshold=0.5)
    with pytest.raises(ValueError, match="mode"):
        TrialPlateauStopper(metric="loss", metric_threshold=0.0)


def test_trial_plateau_trials_are_independent():
    s = TrialPlateauStopper(metric="loss", num_results=2, grace_period=2)
    assert s("a", {"loss": 1.0}) is False
    assert s("b", {"loss": 1.0}) is False
    assert s("a", {"loss": 1.0}) is True
    assert s("b", {"loss": 5.0}) is False


# --------------------------------------------------------------------- experiment plateau


def test_experiment_plateau_min_mode():
    s = ExperimentPlateauStopper(metric="loss", std=0.001, top=3, mode="min")
    # top-3 smallest: [5] -> [1,5] -> [1,1,5] (std 1.9) -> [1,1,1] (std 0)
    assert s("a", {"loss": 5.0}) is False
    assert s("b", {"loss": 1.0}) is False
    assert s("c", {"loss": 1.0}) is False
    assert s.stop_all() is False
    assert s("d", {"loss": 1.0}) is True
    assert s.stop_all() is True


def test_experiment_plateau_max_mode_keeps_largest():
    s = ExperimentPlateauStopper(metric="acc", std=0.001, top=2, mode="max")
    assert s("a", {"acc": 0.9}) is False
    assert s("b", {"acc": 0.1}) is False  # top [0.1, 0.9]
    assert s("c", {"acc": 0.2}) is False  # top [0.2, 0.9]
    assert s("d", {"acc": 0.9}) is True  # top [0.9, 0.9]


def test_experiment_plateau_patience_and_reset():
    s = ExperimentPlateauStopper(metric="loss", std=0.001, top=2, mode="min", patience=2)
    assert s("a", {"loss": 1.0}) is False
    assert s("a", {"loss": 1.0}) is False  # plateaued, count 1
    assert s("a", {"loss": 3.0}) is True  # still plateaued (3 is not in top), count 2
    s2 = ExperimentPlateauStopper(metric="loss", std=0.001, top=2, mode="min", patience=2)
    assert s2("a", {"loss": 1.0}) is False
    assert s2("a", {"loss": 1.0}) is False  # count 1
    assert s2("a", {"loss": 0.5}) is False  # top [0.5, 1]: not plateaued, reset
    assert s2("a", {"loss": 0.5}) is False  # top [0.5, 0.5]: count 1
    assert s2("a", {"loss": 0.5}) is True  # count 2


def test_experiment_plateau_ignores_results_without_metric():
    s = ExperimentPlateauStopper(metric="loss", top=2)
    assert s("a", {"other": 1}) is False
    assert s("a", {"loss": 2.0}) is False
    assert s("a", {"loss": 2.0}) is True


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "maximize"}, {"top": 1}, {"top": 2.5}, {"patience": -1}, {"std": 0}, {"std": -0.1}],
)
def test_experiment_plateau_validates_arguments(kwargs):
    with pytest.raises(ValueError):
        ExperimentPlateauStopper(metric="loss", **kwargs)


# --------------------------------------------------------------------- timeout


class FakeClock:
    def __init__(self, *times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def test_timeout_stopper_charges_time_between_checks():
    clock = FakeClock(100.0, 105.0, 109.9, 110.0)
    s = TimeoutStopper(10, clock=clock)
    assert s("t", {}) is False
    assert s.stop_all() is False  # clock starts
    assert s.stop_all() is False  # 5 s used
    assert s.stop_all() is False  # 9.9 s used
    assert s.stop_all() is True  # 10 s used


def test_timeout_stopper_accepts_timedelta():
    s = TimeoutStopper(datetime.timedelta(minutes=1), clock=FakeClock(0.0, 59.0, 60.0))
    assert [s.stop_all(), s.stop_all(), s.stop_all()] == [False, False, True]


def test_timeout_stopper_does_not_charge_downtime_after_unpickling():
    s = TimeoutStopper(10, clock=FakeClock(0.0, 6.0))
    s.stop_all()
    s.stop_all()  # 6 s used, 4 left
    restored = pickle.loads(pickle.dumps(s))
    restored._clock = FakeClock(1000.0, 1003.0, 1004.0)
    assert restored.stop_all() is False  # restarts the clock, 4 left
    assert restored.stop_all() is False  # 3 s used, 1 left
    assert restored.stop_all() is True


@pytest.mark.parametrize("bad", ["10", None, [10]])
def test_timeout_stopper_rejects_bad_timeout(bad):
    with pytest.raises(ValueError, match="timeout"):
        TimeoutStopper(bad)


# --------------------------------------------------------------------- combined / function


class CountingStopper(Stopper):
    def __init__(self, stop=False, stop_all=False):
        self.calls = 0
        self._stop = stop
        self._stop_all = stop_all

    def __call__(self, trial_id, result):
        self.calls += 1
        return self._stop

    def stop_all(self):
        return self._stop_all


def test_combined_stopper_any_and_every_stopper_sees_every_result():
    first = CountingStopper(stop=True)
    second = CountingStopper(stop=False)
    combined = CombinedStopper(first, second)
    assert combined("t", {}) is True
    assert (first.calls, second.calls) == (1, 1)
    assert combined.stop_all() is False
    assert CombinedStopper(CountingStopper(), CountingStopper(stop_all=True)).stop_all() is True


def test_combined_stopper_with_real_stoppers():
    combined = CombinedStopper(
        MaximumIterationStopper(3), FunctionStopper(lambda tid, r: r["loss"] < 0.1)
    )
    assert combined("t", {"loss": 1.0}) is False
    assert combined("t", {"loss": 0.05}) is True
    assert combined("u", {"loss": 1.0}) is False
    assert combined("u", {"loss": 1.0}) is False
    assert combined("u", {"loss": 1.0}) is True


def test_combined_stopper_rejects_non_stoppers():
    with pytest.raises(TypeError):
        CombinedStopper(MaximumIterationStopper(1), lambda tid, r: True)


def test_function_stopper():
    s = FunctionStopper(lambda trial_id, result: trial_id == "b" and result["x"] > 1)
    assert s("a", {"x": 5}) is False
    assert s("b", {"x": 1}) is False
    assert s("b", {"x": 2}) is True
    assert s.stop_all() is False


def test_function_stopper_rejects_stopper_lookalikes():
    class LooksLikeStopper:
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return True

    with pytest.raises(TypeError, match="Stopper"):
        FunctionStopper(LooksLikeStopper())
    with pytest.raises(TypeError, match="Stopper"):
        make_stopper(LooksLikeStopper())


# --------------------------------------------------------------------- dict criteria / make_stopper


def test_make_stopper_none_and_empty():
    assert make_stopper(None) == (None, None)
    assert make_stopper({}) == (None, {})
    assert make_stopper([]) == (None, None)


def test_dict_criteria_stop_once_any_key_reaches_threshold():
    stopper, criteria = make_stopper({"training_iteration": 3, "mean_accuracy": 0.9})
    assert isinstance(stopper, CriteriaStopper)
    assert criteria == {"training_iteration": 3, "mean_accuracy": 0.9}
    assert stopper("t", {"training_iteration": 1, "mean_accuracy": 0.5}) is False
    assert stopper("t", {"training_iteration": 2, "mean_accuracy": 0.9}) is True  # >= is inclusive
    assert stopper("t", {"training_iteration": 3, "mean_accuracy": 0.1}) is True
    assert stopper.stop_all() is False


def test_dict_criteria_nested_keys():
    stopper, criteria = make_stopper({"info": {"steps": 100}})
    assert criteria == {"info/steps": 100}
    assert stopper("t", {"info": {"steps": 99}}) is False
    assert stopper("t", {"info": {"steps": 100}}) is True
    # an already flattened result works too
    assert stopper("t", {"info/steps": 150}) is True
    slash, _ = make_stopper({"info/steps": 10})
    assert slash("t", {"info": {"steps": 10}}) is True


def test_dict_criteria_missing_key_is_a_clear_error():
    stopper, _ = make_stopper({"training_iteraton": 10})  # misspelt
    with pytest.raises(StopCriterionError) as info:
        stopper("trial_1", {"training_iteration": 1, "loss": 0.3})
    message = str(info.value)
    assert "training_iteraton" in message
    assert "'loss'" in message and "'training_iteration'" in message
    assert "trial_1" in message


def test_dict_criteria_final_result_is_not_checked():
    stopper, _ = make_stopper({"loss": 0.1})
    assert stopper("t", {"done": True, "training_iteration": 4}) is True


def test_dict_criteria_uncomparable_value():
    stopper, _ = make_stopper({"loss": 0.1})
    with pytest.raises(StopCriterionError, match="compare"):
        stopper("t", {"loss": "low"})


def test_make_stopper_callable_stopper_and_list():
    fn_stopper, criteria = make_stopper(lambda tid, r: r["x"] > 1)
    assert isinstance(fn_stopper, FunctionStopper) and criteria is None
    assert fn_stopper("t", {"x": 2}) is True

    mine = MaximumIterationStopper(2)
    assert make_stopper(mine) == (mine, None)

    combined, _ = make_stopper([MaximumIterationStopper(5), FunctionStopper(lambda t, r: True)])
    assert isinstance(combined, CombinedStopper)
    assert combined("t", {}) is True
    single = MaximumIterationStopper(1)
    assert make_stopper([single])[0] is single


@pytest.mark.parametrize("bad", [5, "training_iteration", 1.5, object()])
def test_make_stopper_rejects_other_types(bad):
    with pytest.raises(TypeError, match="stop"):
        make_stopper(bad)


def test_make_stopper_rejects_lists_with_non_stoppers():
    with pytest.raises(TypeError, match="Stopper"):
        make_stopper([MaximumIterationStopper(1), {"a": 1}])


def test_make_stopper_with_time_budget():
    stopper, criteria = make_stopper({"training_iteration": 2}, time_budget_s=30)
    assert isinstance(stopper, CombinedStopper)
    assert criteria == {"training_iteration": 2}
    kinds = [type(s) for s in stopper.stoppers]
    assert kinds == [CriteriaStopper, TimeoutStopper]
    assert stopper("t", {"training_iteration": 2}) is True
    only_timeout, _ = make_stopper(None, time_budget_s=datetime.timedelta(seconds=5))
    assert isinstance(only_timeout, TimeoutStopper)
