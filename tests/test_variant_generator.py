"""BasicVariantGenerator, Searcher and ConcurrencyLimiter (tunekit.search)."""

from __future__ import annotations

import itertools
import sys
from importlib.metadata import entry_points

import pytest

from tunekit.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from tunekit_core.space import choice, grid_search, randint, sample_from, uniform

FINISHED = Searcher.FINISHED


def make(config, num_samples=1, **kwargs):
    gen = BasicVariantGenerator(**kwargs)
    assert gen.set_search_properties(
        None, None, config, num_samples=num_samples, experiment_name="e"
    )
    return gen


def drain(searcher, limit=100_000, prefix="t"):
    """Suggest until FINISHED (completing nothing); return the configs."""
    out = []
    for i in range(limit):
        cfg = searcher.suggest(f"{prefix}{i}")
        if cfg == FINISHED:
            return out
        assert cfg is not None
        out.append(cfg)
    raise AssertionError("searcher did not finish")


# --------------------------------------------------------------------------- #
# BasicVariantGenerator
# --------------------------------------------------------------------------- #


def test_grid_times_num_samples_in_ray_order():
    config = {"a": grid_search([1, 2]), "b": grid_search(["x", "y"]), "r": uniform(0, 1)}
    gen = make(config, num_samples=3, random_state=0)
    assert gen.total_samples == 12
    configs = drain(gen)
    assert len(configs) == 12
    expected = [(1, "x"), (2, "x"), (1, "y"), (2, "y")] * 3
    assert [(c["a"], c["b"]) for c in configs] == expected
    assert len({c["r"] for c in configs}) == 12  # fresh random values every time
    assert gen.suggest("again") == FINISHED


def test_plain_random_search_counts_num_samples():
    gen = make({"lr": uniform(0, 1), "x": 5}, num_samples=7, seed=1)
    assert gen.total_samples == 7
    configs = drain(gen)
    assert len(configs) == 7 and all(c["x"] == 5 and 0 <= c["lr"] <= 1 for c in configs)


def test_empty_config_yields_num_samples_empty_configs():
    gen = make({}, num_samples=2)
    assert drain(gen) == [{}, {}]


def test_points_to_evaluate_first_and_partial_points_filled():
    points = [{"a": 2, "b": 2}, {"a": 1}, {"b": 2}]
    gen = make(
        {"a": grid_search([1, 2]), "b": randint(0, 3)},
        num_samples=4,
        points_to_evaluate=points,
        random_state=0,
    )
    # Ray's counting: each point replaces one sample; a point without the grid key expands it.
    assert gen.total_samples == 1 + 1 + 2 + 2
    configs = drain(gen)
    assert len(configs) == 6
    assert configs[0] == {"a": 2, "b": 2}
    assert configs[1]["a"] == 1 and 0 <= configs[1]["b"] < 3
    assert configs[2] == {"a": 1, "b": 2} and configs[3] == {"a": 2, "b": 2}
    assert [c["a"] for c in configs[4:]] == [1, 2]


def test_points_beyond_num_samples_are_all_evaluated():
    gen = make({"b": randint(0, 3)}, num_samples=1, points_to_evaluate=[{"b": 0}, {"b": 1}])
    assert gen.total_samples == 2
    assert drain(gen) == [{"b": 0}, {"b": 1}]


def test_nested_point_overlays_nested_space():
    space = {"opt": {"lr": uniform(0, 1), "name": "sgd"}, "x": randint(0, 10)}
    gen = make(space, num_samples=2, points_to_evaluate=[{"opt": {"lr": 0.5}}], seed=3)
    first, second = drain(gen)
    assert first["opt"] == {"lr": 0.5, "name": "sgd"} and 0 <= first["x"] < 10
    assert second["opt"]["lr"] != 0.5


def test_point_with_unknown_key_is_an_error():
    with pytest.raises(ValueError, match="'nope'"):
        make({"a": uniform(0, 1)}, points_to_evaluate=[{"nope": 1}])


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError):
        BasicVariantGenerator(max_concurrent=-1)
    with pytest.raises(ValueError):
        BasicVariantGenerator(points_to_evaluate=[1, 2])
    with pytest.raises(ValueError):
        BasicVariantGenerator(random_state=1, seed=2)


def test_malformed_space_rejected_at_set_search_properties():
    with pytest.raises(ValueError, match="'a/b'"):
        make({"a": {"b": grid_search([])}})


def test_seeded_runs_reproducible_and_seeds_differ():
    config = {"x": uniform(0, 1), "c": choice(list(range(1000))), "g": grid_search([1, 2])}
    a = drain(make(config, num_samples=5, random_state=123))
    b = drain(make(config, num_samples=5, seed=123))
    c = drain(make(config, num_samples=5, random_state=124))
    assert a == b
    assert a != c


def test_max_concurrent_limits_live_trials():
    gen = make({"x": uniform(0, 1)}, num_samples=5, max_concurrent=2)
    assert isinstance(gen.suggest("t0"), dict) and isinstance(gen.suggest("t1"), dict)
    assert gen.suggest("t2") is None
    gen.on_trial_complete("t0", {"m": 1})
    assert isinstance(gen.suggest("t2"), dict)
    assert gen.suggest("t3") is None


def test_infinite_num_samples_is_lazy():
    grid = {f"k{i}": grid_search(list(range(10))) for i in range(8)}  # 10**8 grid points
    gen = make({**grid, "x": uniform(0, 1)}, num_samples=-1, seed=0)
    assert gen.total_samples is None
    configs = [gen.suggest(f"t{i}") for i in range(1000)]
    assert all(isinstance(c, dict) for c in configs)
    assert [c["k0"] for c in configs[:12]] == list(range(10)) + [0, 1]
    assert configs[10]["k1"] == 1


def test_infinite_num_samples_without_grid_keeps_yielding():
    gen = make({"x": uniform(0, 1)}, num_samples=-1, seed=0)
    assert gen.total_samples is None
    assert all(isinstance(gen.suggest(f"t{i}"), dict) for i in range(1000))


def test_sample_from_in_basic_variant_generator():
    config = {"a": randint(1, 5), "b": sample_from(lambda spec: spec.config.a + 10)}
    for cfg in drain(make(config, num_samples=20, seed=0)):
        assert cfg["b"] == cfg["a"] + 10


def test_suggest_before_set_search_properties_is_an_error():
    with pytest.raises(RuntimeError, match="set_search_properties"):
        BasicVariantGenerator().suggest("t0")


def test_save_restore_continues_without_repeating(tmp_path):
    config = {"g": grid_search([1, 2, 3]), "x": uniform(0, 1)}
    reference = drain(make(config, num_samples=4, seed=9))

    gen = make(config, num_samples=4, seed=9)
    first = [gen.suggest(f"t{i}") for i in range(5)]
    path = str(tmp_path / "searcher.pkl")
    gen.save(path)

    # Resume like the run loop: new instance, set_search_properties, then restore.
    resumed = BasicVariantGenerator(seed=9)
    resumed.set_search_properties(None, None, config, num_samples=4)
    resumed.restore(path)
    rest = drain(resumed, prefix="r")
    assert first + rest == reference
    assert resumed.total_samples == 12

    # Restore first, then set_search_properties: the position is kept too.
    other = BasicVariantGenerator()
    other.restore(path)
    other.set_search_properties(None, None, config, num_samples=4)
    assert drain(other, prefix="o") == rest


def test_save_restore_with_points_and_lambdas(tmp_path):
    config = {"a": randint(0, 100), "b": sample_from(lambda spec: spec.config.a * 2)}
    points = [{"a": 1}, {"a": 2}]
    reference = drain(make(config, num_samples=5, points_to_evaluate=points, seed=4))
    gen = make(config, num_samples=5, points_to_evaluate=points, seed=4)
    first = [gen.suggest("t0")]
    path = str(tmp_path / "s.pkl")
    gen.save(path)
    restored = BasicVariantGenerator()  # the space comes from the checkpoint
    restored.restore(path)
    assert first + drain(restored) == reference


def test_save_restore_infinite(tmp_path):
    gen = make({"x": uniform(0, 1)}, num_samples=-1, seed=5)
    [gen.suggest(f"t{i}") for i in range(10)]
    path = str(tmp_path / "s.pkl")
    gen.save(path)
    expected = [gen.suggest(f"u{i}") for i in range(10)]
    restored = BasicVariantGenerator()
    restored.set_search_properties(None, None, {"x": uniform(0, 1)}, num_samples=-1)
    restored.restore(path)
    assert [restored.suggest(f"u{i}") for i in range(10)] == expected


# --------------------------------------------------------------------------- #
# Searcher base class
# --------------------------------------------------------------------------- #


class CountingSearcher(Searcher):
    def __init__(self, total=None, **kwargs):
        super().__init__(**kwargs)
        self.counter = 0
        self.total = total
        self.completed = []
        self.results = []
        self.properties = None

    def set_search_properties(self, metric, mode, config, **spec):
        self.properties = (metric, mode, config, spec)
        return True

    def suggest(self, trial_id):
        if self.total is not None and self.counter >= self.total:
            return FINISHED
        self.counter += 1
        return {"i": self.counter}

    def on_trial_result(self, trial_id, result):
        self.results.append(trial_id)

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append((trial_id, error))


def test_searcher_validates_mode():
    with pytest.raises(ValueError, match="mode"):
        Searcher(metric="loss", mode="minimize")
    s = Searcher(metric="loss", mode="min")
    assert (s.metric, s.mode) == ("loss", "min")
    assert s.set_search_properties("m", "max", {}) is False
    assert s.total_samples is None
    with pytest.raises(NotImplementedError):
        s.suggest("t0")


def test_searcher_default_save_restore_pickles_dict(tmp_path):
    s = CountingSearcher(metric="m", mode="max")
    s.suggest("a")
    s.suggest("b")
    path = str(tmp_path / "s.pkl")
    s.save(path)
    fresh = CountingSearcher()
    fresh.restore(path)
    assert fresh.counter == 2 and fresh.metric == "m" and fresh.mode == "max"
    s.save_to_dir(str(tmp_path), "x")
    again = CountingSearcher()
    again.restore_from_dir(str(tmp_path))
    assert again.counter == 2


# --------------------------------------------------------------------------- #
# ConcurrencyLimiter
# --------------------------------------------------------------------------- #


def test_concurrency_limiter_limits_and_frees_slots():
    inner = CountingSearcher(metric="m", mode="min")
    lim = ConcurrencyLimiter(inner, max_concurrent=2)
    assert lim.metric == "m" and lim.mode == "min"
    assert lim.suggest("t1") == {"i": 1}
    assert lim.suggest("t2") == {"i": 2}
    assert lim.suggest("t3") is None
    assert inner.counter == 2  # the inner searcher is not asked while at the limit
    lim.on_trial_result("t1", {"m": 1})
    assert inner.results == ["t1"]
    lim.on_trial_complete("t1", {"m": 1})
    assert inner.completed == [("t1", False)]
    assert lim.suggest("t3") == {"i": 3}
    assert lim.suggest("t4") is None


def test_concurrency_limiter_batch_waits_for_whole_batch():
    inner = CountingSearcher()
    lim = ConcurrencyLimiter(inner, max_concurrent=2, batch=True)
    lim.suggest("t1")
    lim.suggest("t2")
    lim.on_trial_complete("t1", {"m": 1})
    assert lim.suggest("t3") is None  # batch not finished yet
    assert inner.completed == []  # nothing forwarded before the batch completes
    lim.on_trial_complete("t2", None, error=True)
    assert inner.completed == [("t1", False), ("t2", True)]
    assert lim.suggest("t3") == {"i": 3}


def test_concurrency_limiter_forwards_properties_and_total_samples(tmp_path):
    gen = BasicVariantGenerator(seed=0)
    lim = ConcurrencyLimiter(gen, max_concurrent=1)
    assert lim.set_search_properties("m", "max", {"g": grid_search([1, 2, 3])}, num_samples=2)
    assert lim.total_samples == 6 and lim.metric == "m" and lim.mode == "max"
    assert lim.suggest("a") == {"g": 1}
    assert lim.suggest("b") is None
    path = str(tmp_path / "s.pkl")
    lim.save(path)
    fresh = ConcurrencyLimiter(BasicVariantGenerator(), max_concurrent=1)
    fresh.restore(path)
    fresh.set_search_properties("m", "max", {"g": grid_search([1, 2, 3])}, num_samples=2)
    assert fresh.suggest("b") == {"g": 2}


def test_concurrency_limiter_passes_finished_through():
    lim = ConcurrencyLimiter(CountingSearcher(total=1), max_concurrent=3)
    assert lim.suggest("a") == {"i": 1}
    assert lim.suggest("b") == FINISHED
    assert lim.live_trials == {"a"}


@pytest.mark.parametrize("bad", [0, -1, 1.5, None])
def test_concurrency_limiter_rejects_bad_max_concurrent(bad):
    with pytest.raises(ValueError):
        ConcurrencyLimiter(CountingSearcher(), max_concurrent=bad)


def test_concurrency_limiter_requires_a_searcher():
    with pytest.raises(ValueError, match="Searcher"):
        ConcurrencyLimiter(object(), max_concurrent=1)


# --------------------------------------------------------------------------- #
# Public modules and plugin registration
# --------------------------------------------------------------------------- #


def test_public_module_paths():
    from tunekit.search import sample
    from tunekit.search.basic_variant import BasicVariantGenerator as BVG

    assert BVG is BasicVariantGenerator
    assert isinstance(sample.uniform(0, 1), sample.Float)
    assert sample.grid_search([1]) == {"grid_search": [1]}


def test_entry_points_resolve_to_basic_variant_generator():
    eps = {ep.name: ep for ep in entry_points(group="tunekit.searchers")}
    for name in ("random", "grid", "variant_generator"):
        assert eps[name].load() is BasicVariantGenerator


def test_missing_plugin_gives_install_hint(monkeypatch):
    import tunekit.search as search_mod

    monkeypatch.delitem(search_mod.__dict__, "BasicVariantGenerator", raising=False)
    monkeypatch.setitem(sys.modules, "tunekit_basic_search", None)
    with pytest.raises(ImportError, match="pip install tunekit-basic-search"):
        search_mod.BasicVariantGenerator  # noqa: B018
    monkeypatch.undo()
    assert search_mod.BasicVariantGenerator is BasicVariantGenerator


def test_suggest_cycle_many_trials_stays_exact():
    # Completing trials as they go: exactly total_samples configs, then FINISHED.
    gen = make(
        {"g": grid_search(list(range(7))), "x": uniform(0, 1)},
        num_samples=13,
        max_concurrent=3,
        seed=2,
    )
    seen = 0
    for i in itertools.count():
        cfg = gen.suggest(f"t{i}")
        if cfg == FINISHED:
            break
        assert isinstance(cfg, dict)
        seen += 1
        gen.on_trial_complete(f"t{i}")
    assert seen == gen.total_samples == 91
