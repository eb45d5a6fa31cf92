"""HyperOptSearch (tunekit-hyperopt) with the real Hyperopt library."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest

hyperopt = pytest.importorskip("hyperopt")

from hyperopt import hp  # noqa: E402

import tunekit as tune  # noqa: E402
from tunekit.search.hyperopt import HyperOptSearch  # noqa: E402
from tunekit_core import registry  # noqa: E402

DONE, ERROR = hyperopt.JOB_STATE_DONE, hyperopt.JOB_STATE_ERROR


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch):
    monkeypatch.setenv("TUNEKIT_STOP_GRACE_S", "2")


def run(trainable, tmp_path, **kwargs):
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("local_dir", str(tmp_path))
    return tune.run(trainable, **kwargs)


# -- trainables --------------------------------------------------------------------------
# Defined inside a function so that they are shipped to the workers by value: a worker
# then need not import this module (and the search library it imports, which is slow).


def _trainables():
    def quadratic(config):
        tune.report({"loss": (config["x"] - 0.3) ** 2})

    def steps(config):
        for i in range(1, 5):
            tune.report({"loss": (config["x"] - 0.3) ** 2 + 1.0 / i})

    return quadratic, steps


quadratic, steps = _trainables()


# -- helpers --------------------------------------------------------------------------------


def drive(searcher, n, loss, prefix="t"):
    configs = []
    for i in range(n):
        tid = f"{prefix}{i}"
        config = searcher.suggest(tid)
        assert isinstance(config, dict)
        searcher.on_trial_complete(tid, {"loss": loss(config)})
        configs.append(config)
    return configs


FULL_SPACE = {
    "uniform": tune.uniform(-1.0, 2.0),
    "loguniform": tune.loguniform(1e-4, 1e-1),
    "quniform": tune.quniform(0.05, 1.0, 0.1),
    "qloguniform": tune.qloguniform(1, 100, 5),
    "randn": tune.randn(10, 2),
    "qrandn": tune.qrandn(0, 1, 0.25),
    "randint": tune.randint(3, 7),
    "qrandint": tune.qrandint(0, 20, 5),
    "lograndint": tune.lograndint(1, 1000),
    "qlograndint": tune.qlograndint(2, 64, 2),
    "choice": tune.choice(["relu", "tanh", 3, None, True]),
    "objects": tune.choice([[1, 2], {"k": "v"}, "plain"]),
    "nested": {"deep": {"lr": tune.loguniform(1e-5, 1e-2)}, "const": "kept"},
    "layers": [tune.randint(1, 4), 64, tune.uniform(0, 1)],
    "model": tune.choice(
        [
            {"type": "svm", "C": tune.loguniform(1e-3, 1e3)},
            {"type": "forest", "depth": tune.randint(2, 5), "extra": {"m": tune.choice([1, 2])}},
            "none",
        ]
    ),
    "constant": 42,
}


def check_full_space(c):
    assert isinstance(c["uniform"], float) and -1.0 <= c["uniform"] <= 2.0
    assert 1e-4 <= c["loguniform"] <= 1e-1
    assert c["quniform"] in {round(0.1 * k, 1) for k in range(1, 11)}
    assert c["qloguniform"] in {float(5 * k) for k in range(1, 21)}
    assert isinstance(c["randn"], float)
    assert c["qrandn"] == round(c["qrandn"] / 0.25) * 0.25
    assert type(c["randint"]) is int and 3 <= c["randint"] <= 6
    assert c["qrandint"] in {0, 5, 10, 15, 20}
    assert type(c["lograndint"]) is int and 1 <= c["lograndint"] <= 999
    assert type(c["qlograndint"]) is int and c["qlograndint"] % 2 == 0
    assert 2 <= c["qlograndint"] <= 64
    assert c["choice"] in ["relu", "tanh", 3, None, True]
    assert c["objects"] in [[1, 2], {"k": "v"}, "plain"]
    assert c["nested"]["const"] == "kept" and 1e-5 <= c["nested"]["deep"]["lr"] <= 1e-2
    assert c["layers"][1] == 64 and 1 <= c["layers"][0] <= 3 and 0 <= c["layers"][2] <= 1
    model = c["model"]
    if isinstance(model, dict) and model["type"] == "svm":
        assert set(model) == {"type", "C"} and 1e-3 <= model["C"] <= 1e3
    elif isinstance(model, dict):
        assert model["type"] == "forest" and set(model) == {"type", "depth", "extra"}
        assert 2 <= model["depth"] <= 4 and model["extra"]["m"] in (1, 2)
    else:
        assert model == "none"
    assert c["constant"] == 42


# -- the search space -----------------------------------------------------------------------


def test_suggestions_honour_every_primitive_of_the_space():
    searcher = HyperOptSearch(FULL_SPACE, metric="loss", mode="min", random_state_seed=0,
                              n_initial_points=50)
    configs = drive(searcher, 70, lambda c: c["uniform"] ** 2)  # 50 random, then TPE
    for c in configs:
        check_full_space(c)
    seen = lambda key: {c[key] for c in configs}  # noqa: E731
    assert {0, 20} <= seen("qrandint") and seen("randint") == {3, 4, 5, 6}
    assert {0.1, 1.0} <= seen("quniform")
    assert {"svm", "forest", "none"} == {
        c["model"] if isinstance(c["model"], str) else c["model"]["type"] for c in configs
    }
    assert sum(c["randn"] for c in configs[:50]) / 50 == pytest.approx(10, abs=1)


def test_native_space_of_a_converted_config():
    space = HyperOptSearch.convert_search_space(
        {"opt": {"lr": tune.loguniform(1e-4, 1e-1)}, "m": tune.choice([{"d": tune.randint(1, 3)}, "x"])}
    )
    assert set(space) == {"opt/lr", "m"}
    sample = hyperopt.pyll.stochastic.sample(space, rng=__import__("numpy").random.default_rng(0))
    assert 1e-4 <= sample["opt/lr"] <= 1e-1
    labels = set(hyperopt.Domain(lambda c: c, space).params)
    assert labels == {"opt/lr", "m", "m/0/d"}


@pytest.mark.parametrize(
    "space, path, what",
    [
        ({"a": {"b": tune.grid_search([1, 2])}}, "a/b", "grid_search"),
        ({"opt": {"lr": tune.sample_from(lambda spec: 0.1)}}, "opt/lr", "sample_from"),
        ({"x": {"eval": "1 + 1"}}, "x", "sample_from"),
        ({"net": [1, tune.sample_from(lambda: 3)]}, "net/1", "sample_from"),
    ],
)
def test_what_hyperopt_cannot_express_names_the_parameter(space, path, what):
    with pytest.raises(ValueError, match=f"'{path}'.*{what}"):
        HyperOptSearch(space, metric="loss", mode="min")
    with pytest.raises(ValueError, match=f"'{path}'"):
        HyperOptSearch().set_search_properties("loss", "min", space, num_samples=1)


def test_native_space_with_nested_conditional_choices():
    space = {
        "lr": hp.loguniform("lr", math.log(1e-4), math.log(1e-1)),
        "model": hp.choice(
            "model",
            [
                {"type": "linear", "reg": hp.uniform("reg", 0, 1)},
                {
                    "type": "tree",
                    "depth": hp.randint("depth", 1, 5),
                    "split": hp.choice("split", [{"kind": "gini"}, {"kind": "entropy", "t": hp.uniform("t", 0, 1)}]),
                },
            ],
        ),
    }
    points = [{"lr": 0.01, "model": {"type": "tree", "depth": 3, "split": {"kind": "entropy", "t": 0.5}}}]
    searcher = HyperOptSearch(space, metric="acc", mode="max", points_to_evaluate=points,
                              random_state_seed=1, n_initial_points=5)
    configs = []
    for i in range(25):
        c = searcher.suggest(str(i))
        configs.append(c)
        searcher.on_trial_complete(str(i), {"acc": -abs(math.log10(c["lr"]) + 2)})
    assert configs[0] == points[0]
    for c in configs:
        assert 1e-4 <= c["lr"] <= 1e-1
        m = c["model"]
        if m["type"] == "linear":
            assert set(m) == {"type", "reg"} and 0 <= m["reg"] <= 1
        else:
            assert set(m) == {"type", "depth", "split"} and 1 <= m["depth"] <= 4
            assert m["split"] in ({"kind": "gini"},) or (
                m["split"]["kind"] == "entropy" and 0 <= m["split"]["t"] <= 1
            )
    assert {c["model"]["type"] for c in configs} == {"linear", "tree"}
    # the tree branch's labels are only set when that branch was chosen
    doc = searcher.trials.trials[0]
    assert doc["misc"]["vals"]["model"] == [1] and doc["misc"]["vals"]["reg"] == []
    assert not searcher.set_search_properties("acc", "max", {"c": 1}, num_samples=1)
    with pytest.raises(ValueError, match="not one of the options"):
        HyperOptSearch(space, metric="acc", mode="max",
                       points_to_evaluate=[{"lr": 0.1, "model": {"type": "svm"}}])


def test_points_to_evaluate_come_first_and_must_be_complete():
    space = {"x": tune.uniform(0, 1), "opt": {"n": tune.randint(1, 5), "c": tune.choice(["a", "b"])}}
    points = [{"x": 0.25, "opt": {"n": 2, "c": "b"}}, {"x": 0.75, "opt": {"n": 4, "c": "a"}}]
    searcher = HyperOptSearch(space, metric="loss", mode="min", points_to_evaluate=points,
                              random_state_seed=0)
    configs = drive(searcher, 4, lambda c: c["x"])
    assert configs[:2] == points and configs[2] not in points
    with pytest.raises(ValueError, match="'opt/c'"):
        HyperOptSearch(space, metric="loss", mode="min",
                       points_to_evaluate=[{"x": 0.1, "opt": {"n": 2}}])


# -- results reach the Trials object --------------------------------------------------------


def test_results_reach_the_trials_object():
    searcher = HyperOptSearch({"x": tune.uniform(0, 1)}, metric="score", mode="max",
                              random_state_seed=0)
    configs = []
    for i in range(4):
        configs.append(searcher.suggest(str(i)))
        searcher.on_trial_complete(str(i), {"score": configs[-1]["x"] * 10})
    trials = searcher.trials
    assert [d["state"] for d in trials.trials] == [DONE] * 4
    # hyperopt minimises: mode="max" stores the negated metric
    assert trials.losses() == pytest.approx([-c["x"] * 10 for c in configs])
    assert [d["misc"]["vals"]["x"][0] for d in trials.trials] == pytest.approx(
        [c["x"] for c in configs])
    searcher.suggest("err")
    searcher.on_trial_complete("err", error=True)
    assert searcher.trials._dynamic_trials[-1]["state"] == ERROR
    searcher.suggest("nometric")
    with pytest.raises(ValueError, match="'score'"):
        searcher.on_trial_complete("nometric", {"other": 1.0})


def test_run_by_name_takes_space_metric_and_constants_from_run(tmp_path):
    analysis = run(
        quadratic, tmp_path, config={"x": tune.uniform(0, 1), "tag": {"name": "exp"}},
        search_alg="hyperopt", metric="loss", mode="min", num_samples=8,
    )
    assert len(analysis.trials) == 8
    for trial in analysis.trials:
        assert trial.status == "TERMINATED"
        assert 0 <= trial.config["x"] <= 1 and trial.config["tag"] == {"name": "exp"}
    assert len({t.config["x"] for t in analysis.trials}) == 8


def test_run_with_a_native_space_merges_run_constants(tmp_path):
    searcher = HyperOptSearch({"x": hp.uniform("x", 0, 1)}, random_state_seed=3)
    analysis = run(quadratic, tmp_path, config={"c": "const"}, search_alg=searcher,
                   metric="loss", mode="min", num_samples=5, max_concurrent_trials=2)
    assert all(t.config["c"] == "const" for t in analysis.trials)
    losses = sorted(searcher.trials.losses())
    assert losses == pytest.approx(sorted(t.last_result["loss"] for t in analysis.trials))


def test_missing_space_or_metric_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no search space"):
        HyperOptSearch(metric="loss", mode="min").suggest("t")
    with pytest.raises(RuntimeError, match="`metric` and `mode`"):
        HyperOptSearch({"x": tune.uniform(0, 1)}).suggest("t")
    with pytest.raises(ValueError, match="nothing to optimise"):
        HyperOptSearch({"x": 1}, metric="loss", mode="min")
    with pytest.raises(ValueError, match="mixes"):
        HyperOptSearch({"x": tune.uniform(0, 1), "y": hp.uniform("y", 0, 1)})


# -- seeds, n_initial_points, save/restore and resume ---------------------------------------


def test_seeds_and_initial_points(tmp_path):
    space = {"x": tune.uniform(0, 1), "n": tune.randint(0, 10), "c": tune.choice(["a", "b"])}
    loss = lambda c: (c["x"] - 0.2) ** 2 + c["n"] / 10  # noqa: E731
    make = lambda seed, n0=5: HyperOptSearch(  # noqa: E731
        space, metric="loss", mode="min", random_state_seed=seed, n_initial_points=n0)
    first, second = drive(make(11), 20, loss), drive(make(11), 20, loss)
    assert first == second and first != drive(make(12), 20, loss)
    # the first n_initial_points suggestions are random draws, TPE takes over after them
    random_only = drive(make(11, n0=100), 20, loss)
    assert random_only[:5] == first[:5] and random_only[5:] != first[5:]
    runs = [
        run(quadratic, tmp_path / str(i), config={"x": tune.uniform(0, 1)},
            search_alg=HyperOptSearch(random_state_seed=7, n_initial_points=2),
            metric="loss", mode="min", num_samples=5, max_concurrent_trials=1)
        for i in range(2)
    ]
    xs = [[t.config["x"] for t in a.trials] for a in runs]
    assert xs[0] == xs[1] and len(set(xs[0])) == 5


def test_gamma_reaches_tpe(monkeypatch):
    import hyperopt.tpe

    seen = []
    original = hyperopt.tpe.suggest

    def spy(*args, **kwargs):
        seen.append(kwargs.get("gamma"))
        return original(*args, **kwargs)

    monkeypatch.setattr(hyperopt.tpe, "suggest", spy)
    space = {"x": tune.uniform(0, 1), "y": tune.uniform(0, 1)}
    loss = lambda c: (c["x"] - 0.3) ** 2 + (c["y"] - 0.6) ** 2  # noqa: E731
    make = lambda gamma: HyperOptSearch(  # noqa: E731
        space, metric="loss", mode="min", random_state_seed=3, n_initial_points=4, gamma=gamma)
    narrow = drive(make(0.1), 12, loss)
    assert seen and set(seen) == {0.1}
    seen.clear()
    wide = drive(make(0.9), 12, loss)
    assert set(seen) == {0.9}
    # same seed: the same random start, then TPE's split by gamma makes them differ
    assert narrow[:4] == wide[:4] and narrow[4:] != wide[4:]


def test_save_restore_continues_without_repeating(tmp_path):
    space = {"x": tune.uniform(0, 1), "m": tune.choice([{"k": tune.randint(0, 5)}, "off"])}
    loss = lambda c: (c["x"] - 0.4) ** 2  # noqa: E731
    make = lambda: HyperOptSearch(space, metric="loss", mode="min", random_state_seed=4,  # noqa: E731
                                  n_initial_points=10)
    expected = drive(make(), 60, loss)

    searcher = make()
    first = drive(searcher, 45, loss)
    live = searcher.suggest("live")
    path = str(tmp_path / "searcher.pkl")
    searcher.save(path)
    restored = HyperOptSearch(metric="loss", mode="min")
    restored.restore(path)
    assert len(restored.trials.trials) == 46
    restored.on_trial_complete("live", {"loss": loss(live)})
    assert restored.trials.trials[45]["state"] == DONE
    rest = drive(restored, 14, loss, prefix="r")
    assert first == expected[:45] and live == expected[45] and rest == expected[46:]
    xs = [c["x"] for c in first + [live] + rest]
    assert len(set(xs)) == len(xs)


class StopAfter(tune.Stopper):
    def __init__(self, n):
        self.n = n
        self.seen = set()

    def __call__(self, trial_id, result):
        self.seen.add(trial_id)
        return False

    def stop_all(self):
        return len(self.seen) >= self.n


def test_resume_after_a_stopper_continues_the_search(tmp_path):
    kwargs = dict(name="exp", config={"x": tune.uniform(0, 1)}, metric="loss", mode="min",
                  num_samples=10, max_concurrent_trials=2)
    first = run(quadratic, tmp_path, search_alg=HyperOptSearch(random_state_seed=3,
                n_initial_points=3), stop=StopAfter(4), **kwargs)
    before = {t.trial_id: t.config["x"] for t in first.trials}
    assert 4 <= len(before) < 10
    searcher = HyperOptSearch(random_state_seed=3, n_initial_points=3)
    analysis = run(quadratic, tmp_path, search_alg=searcher, resume=True, **kwargs)
    trials = analysis.trials
    assert len(trials) == 10 and all(t.status == "TERMINATED" for t in trials)
    assert {t.trial_id: t.config["x"] for t in trials if t.trial_id in before} == before
    xs = [t.config["x"] for t in trials]
    assert len(set(xs)) == 10
    docs = searcher.trials._dynamic_trials
    assert {d["misc"]["vals"]["x"][0] for d in docs} >= set(xs)
    assert sum(d["state"] == DONE for d in docs) >= 10 - (len(before) - 4)


DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    import tunekit as tune
    from tunekit.search.hyperopt import HyperOptSearch

    OUT, KILL_AT = sys.argv[1], int(sys.argv[2])
    os.environ["DRIVER_PID"] = str(os.getpid())

    def train(config):
        log = os.path.join(OUT, "started.log")
        with open(log, "a") as f:
            f.write(f"{tune.get_trial_id()} {config['x']!r}\\n")
        with open(log) as f:
            started = len(f.readlines())
        if KILL_AT and started >= KILL_AT:
            try:  # the first trial to get here kills the driver, once
                os.close(os.open(os.path.join(OUT, "killed"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(int(os.environ["DRIVER_PID"]), signal.SIGKILL)
        tune.report({"loss": (config["x"] - 0.3) ** 2})

    searcher = HyperOptSearch(random_state_seed=1, n_initial_points=4)
    analysis = tune.run(
        train, name="exp", local_dir=OUT, config={"x": tune.uniform(0, 1)},
        search_alg=searcher, metric="loss", mode="min", num_samples=12,
        max_concurrent_trials=2, resume="AUTO", verbose=0,
    )
    done = [d for d in searcher.trials._dynamic_trials if d["state"] == 2]
    print("DONE", len(analysis.trials), len(done), flush=True)
    """
)


def test_resume_after_the_driver_is_killed(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, TUNEKIT_STOP_GRACE_S="2")
    killed = subprocess.run([sys.executable, str(script), str(tmp_path), "7"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert killed.returncode == -9, killed.stderr
    resumed = subprocess.run([sys.executable, str(script), str(tmp_path), "0"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert resumed.returncode == 0, resumed.stderr
    line = next(ln for ln in resumed.stdout.splitlines() if ln.startswith("DONE"))
    n_trials, n_done = map(int, line.split()[1:])
    assert n_trials == 12 and n_done >= 12 - 2
    analysis = tune.ExperimentAnalysis(str(tmp_path / "exp"))
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    xs = [t.config["x"] for t in analysis.trials]
    assert len(xs) == 12 and len(set(xs)) == 12


def test_works_with_asha(tmp_path):
    pytest.importorskip("tunekit_hyperband")
    searcher = HyperOptSearch(random_state_seed=0, n_initial_points=4)
    analysis = run(
        steps, tmp_path, config={"x": tune.uniform(0, 1)}, search_alg=searcher,
        scheduler="asha", metric="loss", mode="min", num_samples=12, max_concurrent_trials=2,
    )
    iterations = [t.last_result["training_iteration"] for t in analysis.trials]
    assert len(iterations) == 12 and all(t.status == "TERMINATED" for t in analysis.trials)
    assert any(i < 4 for i in iterations)  # ASHA stopped some trials early
    # each trial, stopped early or not, is recorded with its last loss
    assert sorted(searcher.trials.losses()) == pytest.approx(
        sorted(t.last_result["loss"] for t in analysis.trials))


# -- packaging ------------------------------------------------------------------------------


def test_registered_and_exported():
    assert isinstance(registry.create("searcher", "hyperopt"), HyperOptSearch)
    assert tune.search.HyperOptSearch is HyperOptSearch
    with pytest.raises(ValueError, match="gamma"):
        HyperOptSearch(gamma=0)
    with pytest.raises(ValueError, match="n_initial_points"):
        HyperOptSearch(n_initial_points=-1)


def test_facade_import_error_names_the_distribution():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tunekit_hyperopt"] = None
        try:
            import tunekit.search.hyperopt
        except ImportError as exc:
            print("ERR", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "ERR" in out and "tunekit-hyperopt" in out and "pip install" in out
