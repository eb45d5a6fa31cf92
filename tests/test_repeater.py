"""Repeater (tunekit.search.Repeater): each suggestion evaluated several times."""

from __future__ import annotations

import math

import pytest

import tunekit as tune
from tunekit.search import BasicVariantGenerator, ConcurrencyLimiter, Repeater, Searcher
from tunekit_core.repeater import TRIAL_INDEX


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch):
    monkeypatch.setenv("TUNEKIT_STOP_GRACE_S", "2")


class Recorder(Searcher):
    """Suggests x = 0, 1, 2, ... and records what it is told."""

    def __init__(self, metric="loss", mode="min", limit=None):
        super().__init__(metric=metric, mode=mode)
        self.count = 0
        self.limit = limit
        self.completed = []
        self.properties = None

    def set_search_properties(self, metric, mode, config, **spec):
        self.properties = (metric, mode, config, spec)
        return True

    def suggest(self, trial_id):
        if self.limit is not None and self.count >= self.limit:
            return Searcher.FINISHED
        self.count += 1
        return {"x": self.count - 1, "nested": {"a": [1, 2]}}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append((trial_id, result, error))


def _trainables():
    # Defined inside a function: shipped to the workers by value (they need not import
    # this module and the search libraries it uses).
    index_key = TRIAL_INDEX

    def noisy(config):
        # the same x gives a different loss per repeat: x + index / 10
        tune.report({"loss": config["x"] + config[index_key] / 10, "x": config["x"]})

    return noisy


noisy = _trainables()


def test_each_suggestion_is_repeated_and_the_searcher_told_the_mean():
    inner = Recorder()
    rep = Repeater(inner, repeat=3)
    configs = [rep.suggest(f"t{i}") for i in range(6)]
    assert [c["x"] for c in configs] == [0, 0, 0, 1, 1, 1]
    assert [c[TRIAL_INDEX] for c in configs] == [0, 1, 2, 0, 1, 2]
    assert inner.count == 2
    configs[0]["nested"]["a"].append(3)  # configs are independent copies
    assert configs[1]["nested"]["a"] == [1, 2]
    rep.on_trial_complete("t1", {"loss": 1.0})
    rep.on_trial_complete("t0", {"loss": 2.0})
    assert inner.completed == []  # the group is not complete yet
    rep.on_trial_complete("t2", {"loss": 6.0})
    assert inner.completed == [("t0", {"loss": 3.0}, False)]
    # a failed repeat is left out of the mean; a group that all failed is an error
    rep.on_trial_complete("t3", None, error=True)
    rep.on_trial_complete("t4", {"loss": 1.0})
    rep.on_trial_complete("t5", {"other": 1.0})
    assert inner.completed[-1] == ("t3", {"loss": 1.0}, False)
    for i in range(6, 9):
        rep.suggest(f"t{i}")
    for i in range(6, 9):
        rep.on_trial_complete(f"t{i}", None, error=True)
    assert inner.completed[-1] == ("t6", None, True)
    rep.on_trial_complete("unknown", {"loss": 1.0})  # ignored


def test_set_index_false_and_finished_and_validation():
    rep = Repeater(Recorder(limit=1), repeat=2, set_index=False)
    assert rep.suggest("a") == {"x": 0, "nested": {"a": [1, 2]}}
    assert TRIAL_INDEX not in rep.suggest("b")
    assert rep.suggest("c") == Searcher.FINISHED
    with pytest.raises(ValueError, match="repeat"):
        Repeater(Recorder(), repeat=0)
    with pytest.raises(ValueError, match="wraps a Searcher"):
        Repeater(object(), repeat=2)


def test_forwarding_and_num_samples_per_suggestion(caplog):
    inner = Recorder(metric=None, mode=None)
    rep = Repeater(inner, repeat=3)
    assert rep.set_search_properties("m", "max", {"x": 1}, num_samples=10, experiment_name="e")
    assert inner.properties[3]["num_samples"] == 3  # suggestions, not trials
    assert "not a multiple of repeat" in caplog.text
    inner._metric, inner._mode = "m", "max"
    assert rep.metric == "m" and rep.mode == "max"
    grid = BasicVariantGenerator()
    rep = Repeater(grid, repeat=2)
    rep.set_search_properties(None, None, {"a": tune.grid_search([1, 2, 3])}, num_samples=2,
                              experiment_name="e")
    assert grid.total_samples == 3 and rep.total_samples == 6


def test_save_restore_keeps_open_groups(tmp_path):
    inner = Recorder()
    rep = Repeater(inner, repeat=3)
    for i in range(4):
        rep.suggest(f"t{i}")
    rep.on_trial_complete("t0", {"loss": 1.0})
    path = str(tmp_path / "state.pkl")
    rep.save(path)

    restored_inner = Recorder()
    restored = Repeater(restored_inner, repeat=3)
    restored.restore(path)
    assert restored_inner.count == 4 // 3 + 1  # the wrapped searcher's own state came back
    assert restored.suggest("t4")["x"] == 1 and restored.suggest("t5")[TRIAL_INDEX] == 2
    restored.on_trial_complete("t1", {"loss": 2.0})
    restored.on_trial_complete("t2", {"loss": 3.0})
    assert restored_inner.completed == [("t0", {"loss": 2.0}, False)]


def test_repeater_in_a_run_tells_optuna_the_means(tmp_path):
    optuna = pytest.importorskip("optuna")
    from tunekit.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    inner = OptunaSearch(seed=0)
    analysis = tune.run(
        noisy, config={"x": tune.uniform(0, 1)}, search_alg=Repeater(inner, repeat=3),
        metric="loss", mode="min", num_samples=9, max_concurrent_trials=2, verbose=0,
        local_dir=str(tmp_path),
    )
    trials = analysis.trials
    assert len(trials) == 9 and all(t.status == "TERMINATED" for t in trials)
    groups = {}
    for trial in trials:
        groups.setdefault(trial.config["x"], []).append(trial)
    assert len(groups) == 3
    assert all(sorted(t.config[TRIAL_INDEX] for t in g) == [0, 1, 2] for g in groups.values())
    study = inner.study
    assert len(study.trials) == 3
    for ot in study.trials:
        group = groups[ot.params["x"]]
        assert ot.value == pytest.approx(sum(t.last_result["loss"] for t in group) / 3)
        assert ot.value == pytest.approx(ot.params["x"] + 0.1)


def test_concurrency_limiter_around_a_repeater():
    inner = Recorder()
    limited = ConcurrencyLimiter(Repeater(inner, repeat=2), max_concurrent=3)
    configs = [limited.suggest(f"t{i}") for i in range(4)]
    assert [c is None for c in configs] == [False, False, False, True]
    limited.on_trial_complete("t0", {"loss": 1.0})
    limited.on_trial_complete("t1", {"loss": 3.0})
    assert inner.completed == [("t0", {"loss": 2.0}, False)]
    assert limited.suggest("t4")["x"] == 1
    assert not math.isnan(inner.completed[0][1]["loss"])
