"""Search-space primitives and variant resolution (tunekit_core.space)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from tunekit_core import space
from tunekit_core.space import (
    Categorical,
    Float,
    Function,
    Integer,
    LogUniform,
    Normal,
    Quantized,
    Uniform,
    choice,
    count_grid_points,
    flatten_dict,
    format_vars,
    generate_variants,
    get_path,
    grid_search,
    has_unresolved_values,
    lograndint,
    loguniform,
    qlograndint,
    qloguniform,
    qrandint,
    qrandn,
    quniform,
    randint,
    randn,
    sample_from,
    searched_paths,
    uniform,
)

N = 3000


def _draw(domain, n=N, seed=0):
    return domain.sample(size=n, random_state=seed)


def _is_multiple(value, q):
    return math.isclose(value / q, round(value / q), abs_tol=1e-9)


# --------------------------------------------------------------------------- #
# Primitives: bounds, quantisation, types
# --------------------------------------------------------------------------- #


def test_uniform_within_bounds_and_float():
    values = _draw(uniform(-2.0, 3.0))
    assert all(isinstance(v, float) and -2.0 <= v < 3.0 for v in values)
    assert min(values) < -1.5 and max(values) > 2.5  # spread over the range


def test_quniform_quantized_inclusive_upper():
    values = _draw(quniform(0, 1, 0.25))
    assert set(values) == {0.0, 0.25, 0.5, 0.75, 1.0}
    assert all(isinstance(v, float) for v in values)
    tenth = _draw(quniform(0.1, 0.5, 0.1))
    assert set(tenth) <= {0.1, 0.2, 0.3, 0.4, 0.5}
    assert all(0.1 <= v <= 0.5 for v in tenth)


def test_loguniform_bounds_and_log_spread():
    values = _draw(loguniform(1e-4, 1e-1))
    assert all(isinstance(v, float) and 1e-4 <= v <= 1e-1 for v in values)
    # Log-uniform: about a third of the mass per decade.
    low_decade = sum(v < 1e-3 for v in values) / len(values)
    assert 0.25 < low_decade < 0.42


def test_qloguniform_quantized_within_bounds():
    values = _draw(qloguniform(1e-3, 1.0, 5e-4))
    assert all(1e-3 <= v <= 1.0 and _is_multiple(v, 5e-4) for v in values)


def test_randn_mean_and_sd():
    values = _draw(randn(5.0, 2.0), n=5000)
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    assert abs(mean - 5.0) < 0.2 and abs(sd - 2.0) < 0.2
    assert all(isinstance(v, float) for v in values)


def test_qrandn_quantized():
    values = _draw(qrandn(0.0, 1.0, 0.5))
    assert all(_is_multiple(v, 0.5) for v in values)


def test_randint_upper_exclusive():
    values = _draw(randint(3, 7))
    assert set(values) == {3, 4, 5, 6}
    assert all(type(v) is int for v in values)


def test_qrandint_upper_inclusive():
    assert set(_draw(qrandint(0, 10, 2))) == {0, 2, 4, 6, 8, 10}
    assert set(_draw(qrandint(1, 4))) == {1, 2, 3, 4}
    assert set(_draw(qrandint(1, 10, 3))) == {3, 6, 9}
    assert all(type(v) is int for v in _draw(qrandint(0, 10, 2), n=50))


def test_lograndint_upper_exclusive():
    values = _draw(lograndint(1, 100))
    assert all(type(v) is int and 1 <= v < 100 for v in values)
    assert sum(v < 10 for v in values) / len(values) > 0.4  # log-spread


def test_qlograndint_inclusive_quantized():
    values = _draw(qlograndint(2, 64, 2))
    assert all(type(v) is int and 2 <= v <= 64 and v % 2 == 0 for v in values)
    assert 64 in values


def test_choice_samples_every_category_and_keeps_types():
    values = _draw(choice(["a", 2, None]))
    assert set(values) == {"a", 2, None}


def test_sample_size_one_returns_a_value():
    assert isinstance(uniform(0, 1).sample(), float)
    assert len(uniform(0, 1).sample(size=5)) == 5


def test_sampling_is_reproducible_with_seed_and_random_instance():
    dom = uniform(0, 1)
    assert dom.sample(size=10, random_state=7) == dom.sample(size=10, random_state=7)
    assert dom.sample(size=10, random_state=7) != dom.sample(size=10, random_state=8)
    assert dom.sample(size=3, random_state=random.Random(1)) == dom.sample(
        size=3, random_state=random.Random(1)
    )


def test_numpy_generator_accepted_as_random_state():
    np = pytest.importorskip("numpy")
    a = randint(0, 1000).sample(size=5, random_state=np.random.default_rng(3))
    b = randint(0, 1000).sample(size=5, random_state=np.random.default_rng(3))
    assert a == b
    c = randint(0, 1000).sample(size=5, random_state=np.random.RandomState(3))
    assert all(0 <= v < 1000 for v in c)


# --------------------------------------------------------------------------- #
# Introspection (for Optuna / Hyperopt converters)
# --------------------------------------------------------------------------- #


def test_domain_introspection():
    f = uniform(1, 2)
    assert isinstance(f, Float) and (f.lower, f.upper) == (1.0, 2.0)
    assert isinstance(f.get_sampler(), Uniform)
    lu = loguniform(1e-3, 1, base=2)
    assert isinstance(lu.sampler, LogUniform) and lu.sampler.base == 2
    q = qloguniform(1e-3, 1, 1e-3)
    assert isinstance(q.sampler, Quantized) and q.sampler.q == 1e-3
    assert isinstance(q.sampler.get_sampler(), LogUniform)
    n = randn(1.0, 3.0)
    assert isinstance(n.sampler, Normal) and (n.sampler.mean, n.sampler.sd) == (1.0, 3.0)
    i = qrandint(0, 10, 5)
    assert isinstance(i, Integer) and isinstance(i.sampler, Quantized) and i.sampler.q == 5
    c = choice([1, 2])
    assert isinstance(c, Categorical) and c.categories == [1, 2] and not c.is_grid()
    fn = sample_from(lambda spec: 1)
    assert isinstance(fn, Function) and fn.is_function() and not f.is_function()


def test_is_valid():
    assert uniform(0, 1).is_valid(0.5) and not uniform(0, 1).is_valid(2)
    assert randint(0, 5).is_valid(4) and not randint(0, 5).is_valid(5)
    assert qrandint(0, 10, 2).is_valid(10) and not qrandint(0, 10, 2).is_valid(3)
    assert choice(["a"]).is_valid("a") and not choice(["a"]).is_valid("b")


# --------------------------------------------------------------------------- #
# Argument validation
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "make",
    [
        lambda: uniform(1, 1),
        lambda: uniform(2, 1),
        lambda: quniform(0, 1, 0),
        lambda: quniform(0, 1, -0.1),
        lambda: loguniform(0, 1),
        lambda: loguniform(-1, 1),
        lambda: loguniform(1, 10, base=1),
        lambda: qloguniform(1e-3, 1, 0),
        lambda: randn(0, 0),
        lambda: randn(0, -1),
        lambda: qrandn(0, 1, 0),
        lambda: randint(5, 5),
        lambda: randint(1.5, 3),
        lambda: qrandint(0, 10, 0),
        lambda: qrandint(1, 3, 5),
        lambda: lograndint(0, 10),
        lambda: qlograndint(0, 10, 2),
        lambda: choice([]),
        lambda: choice("abc"),
        lambda: sample_from(42),
        lambda: sample_from(lambda a, b: 1),
    ],
)
def test_invalid_arguments_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_error_messages_say_what_was_wrong():
    with pytest.raises(ValueError, match="lower"):
        uniform(3, 1)
    with pytest.raises(ValueError, match="positive"):
        loguniform(0, 1)
    with pytest.raises(ValueError, match="non-empty"):
        choice([])


# --------------------------------------------------------------------------- #
# Variant generation
# --------------------------------------------------------------------------- #


def test_grid_order_first_sorted_path_varies_fastest():
    config = {"b": grid_search([1, 2]), "a": grid_search(["x", "y", "z"])}
    combos = [(c["a"], c["b"]) for _, c in generate_variants(config)]
    assert combos == [("x", 1), ("y", 1), ("z", 1), ("x", 2), ("y", 2), ("z", 2)]


def test_grid_count_and_nested_lists():
    config = {
        "model": {"layers": [grid_search([16, 32]), 8], "act": grid_search(["relu", "tanh"])},
        "opt": {"name": "sgd", "lr": uniform(0, 1)},
        "seed": grid_search([0, 1, 2]),
    }
    assert count_grid_points(config) == 12
    variants = list(generate_variants(config, random_state=0))
    assert len(variants) == 12
    assert len({(c["model"]["layers"][0], c["model"]["act"], c["seed"]) for _, c in variants}) == 12
    for resolved, cfg in variants:
        assert cfg["model"]["layers"][1] == 8 and cfg["opt"]["name"] == "sgd"
        assert 0 <= cfg["opt"]["lr"] <= 1
        assert resolved[("opt", "lr")] == cfg["opt"]["lr"]
        assert resolved[("model", "layers", 0)] == cfg["model"]["layers"][0]
        assert not has_unresolved_values(cfg)


def test_random_values_resampled_per_grid_point_and_constant_mode():
    config = {"g": grid_search([1, 2, 3]), "x": uniform(0, 1)}
    xs = [c["x"] for _, c in generate_variants(config, random_state=0)]
    assert len(set(xs)) == 3
    xs_const = [c["x"] for _, c in generate_variants(config, 0, constant_grid_search=True)]
    assert len(set(xs_const)) == 1


def test_tuples_are_resolved_and_kept_tuples():
    ((_, cfg),) = generate_variants({"t": (1, uniform(0, 1))}, random_state=0)
    assert isinstance(cfg["t"], tuple) and cfg["t"][0] == 1 and 0 <= cfg["t"][1] <= 1


def test_constants_are_copied_not_shared():
    const = {"list": [1, 2]}
    variants = list(generate_variants({"c": const, "g": grid_search([1, 2])}))
    variants[0][1]["c"]["list"].append(3)
    assert variants[1][1]["c"]["list"] == [1, 2] and const["list"] == [1, 2]


def test_sample_from_depends_on_other_values_and_sample_froms():
    config = {
        "a": randint(1, 10),
        "b": sample_from(lambda spec: spec.config.a * 2),
        "c": sample_from(lambda spec: spec["config"]["b"] + 1),
        "d": sample_from(lambda spec: spec.config.nested.e * 10),
        "nested": {"e": sample_from(lambda spec: spec.config.c - spec.config.a)},
        "f": sample_from(lambda: "no-arg"),
        "g": {"eval": "spec.config.a + 100"},
    }
    for resolved, cfg in generate_variants(config, random_state=1):
        assert cfg["b"] == 2 * cfg["a"]
        assert cfg["c"] == cfg["b"] + 1
        assert cfg["nested"]["e"] == cfg["c"] - cfg["a"]
        assert cfg["d"] == cfg["nested"]["e"] * 10
        assert cfg["f"] == "no-arg" and cfg["g"] == cfg["a"] + 100
        assert resolved[("nested", "e")] == cfg["nested"]["e"]


def test_sample_from_reads_grid_values():
    config = {"g": grid_search([1, 2]), "double": sample_from(lambda spec: spec.config.g * 2)}
    assert [c["double"] for _, c in generate_variants(config)] == [2, 4]


def test_sample_from_cycle_is_a_clear_error():
    config = {
        "a": sample_from(lambda spec: spec.config.b),
        "b": sample_from(lambda spec: spec.config.a),
    }
    with pytest.raises(ValueError, match="circular"):
        list(generate_variants(config))


def test_sample_from_error_names_path():
    config = {"x": {"y": sample_from(lambda spec: spec.config.missing)}}
    with pytest.raises(ValueError, match="x/y"):
        list(generate_variants(config))


def test_nested_domains_in_choice_and_grid_values_are_resolved():
    config = {
        "model": choice([{"kind": "a", "lr": uniform(0, 1)}, {"kind": "b"}]),
        "opt": grid_search([{"name": "sgd", "m": uniform(0.5, 0.9)}, {"name": "adam"}]),
    }
    variants = list(generate_variants(config, random_state=0))
    assert [c["opt"]["name"] for _, c in variants] == ["sgd", "adam"]
    assert 0.5 <= variants[0][1]["opt"]["m"] <= 0.9
    for _, cfg in variants:
        assert not has_unresolved_values(cfg)


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"x": grid_search(5)}, "x"),
        ({"x": grid_search("abc")}, "x"),
        ({"x": {"y": grid_search([])}}, "x/y"),
        ({"x": {"y": [grid_search([1, uniform(0, 1)])]}}, "x/y/0"),
        ({"x": grid_search([{"a": grid_search([1, 2])}])}, "x"),
        ({"m": choice([{"a": grid_search([1, 2])}])}, "m"),
    ],
)
def test_malformed_space_names_path(config, path):
    with pytest.raises(ValueError, match=f"'{path}'"):
        list(generate_variants(config))
    with pytest.raises(ValueError, match=f"'{path}'"):
        count_grid_points(config)


def test_non_dict_space_is_rejected():
    with pytest.raises(ValueError, match="dict"):
        list(generate_variants([uniform(0, 1)]))


def test_generation_is_lazy_for_huge_grids():
    config = {f"k{i}": grid_search(list(range(10))) for i in range(9)}  # 10**9 points
    assert count_grid_points(config) == 10**9
    gen = generate_variants(config)
    first = [next(gen)[1] for _ in range(3)]
    assert [c["k0"] for c in first] == [0, 1, 2] and first[0]["k8"] == 0


def test_seeded_generation_reproducible():
    config = {"x": uniform(0, 1), "y": choice(list(range(100))), "g": grid_search([1, 2])}
    a = [c for _, c in generate_variants(config, random_state=42)]
    b = [c for _, c in generate_variants(config, random_state=42)]
    c = [c for _, c in generate_variants(config, random_state=43)]
    assert a == b and a != c


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def test_searched_paths_and_has_unresolved():
    config = {"a": 1, "b": uniform(0, 1), "c": {"d": grid_search([1]), "e": [1, choice([1])]}}
    assert searched_paths(config) == [("b",), ("c", "d"), ("c", "e", 1)]
    assert has_unresolved_values(config)
    assert not has_unresolved_values({"a": 1, "b": [1, {"c": 2}]})
    assert has_unresolved_values({"a": [{"b": {"eval": "1"}}]})


def test_get_path():
    assert get_path({"a": [{"b": 3}]}, ("a", 0, "b")) == 3
    space.set_path(cfg := {"a": (1, 2)}, ("a", 1), 5)
    assert cfg == {"a": (1, 5)}


def test_flatten_dict():
    assert flatten_dict({"a": {"b": 1, "c": {"d": 2}}, "e": [1]}) == {
        "a/b": 1,
        "a/c/d": 2,
        "e": [1],
    }
    assert flatten_dict({"a": {"b": 1}}, delimiter=".") == {"a.b": 1}


def test_format_vars_like_ray():
    assert format_vars({("lr",): 0.01, ("momentum",): 0.9}) == "lr=0.0100,momentum=0.9000"
    tag = format_vars({("b",): "x y/z", ("a", "n"): 3, ("c",): True, ("l", 0): [1, 2]})
    assert tag == "n=3,b=x_y_z,c=True,0=1_2"


def test_domain_sample_many_values_are_distributed():
    counts = Counter(_draw(randint(0, 4), n=4000, seed=3))
    assert all(800 < counts[v] < 1200 for v in range(4))
