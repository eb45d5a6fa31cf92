"""OptunaSearch (tunekit-optuna) with the real Optuna library."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest

optuna = pytest.importorskip("optuna")

import tunekit as tune  # noqa: E402
from tunekit.search import ConcurrencyLimiter, Searcher  # noqa: E402
from tunekit.search.optuna import OptunaSearch  # noqa: E402
from tunekit_core import registry  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
TrialState = optuna.trial.TrialState


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
        tune.report({"loss": (config["x"] - 0.3) ** 2 + (config.get("y", 0) or 0) ** 2})

    def steps(config):
        for i in range(1, 5):
            tune.report({"loss": (config["x"] - 0.3) ** 2 + 1.0 / i})

    def two_objectives(config):
        tune.report({"a": config["x"] ** 2, "b": config["y"], "x": config["x"]})

    return quadratic, steps, two_objectives


quadratic, steps, two_objectives = _trainables()


# -- helpers --------------------------------------------------------------------------------


def drive(searcher, n, loss, prefix="t", results=1):
    """Suggest/complete ``n`` trials one after the other; return the configs."""
    configs = []
    for i in range(n):
        tid = f"{prefix}{i}"
        config = searcher.suggest(tid)
        assert isinstance(config, dict)
        for step in range(1, results + 1):
            searcher.on_trial_result(tid, {"loss": loss(config) + 1 / step, "training_iteration": step})
        searcher.on_trial_complete(tid, {"loss": loss(config)})
        configs.append(config)
    return configs


FULL_SPACE = {
    "uniform": tune.uniform(-1.0, 2.0),
    "loguniform": tune.loguniform(1e-4, 1e-1),
    "quniform": tune.quniform(0.05, 1.0, 0.1),
    "randint": tune.randint(3, 7),
    "qrandint": tune.qrandint(0, 20, 5),
    "lograndint": tune.lograndint(1, 1000),
    "qlograndint_1": tune.qlograndint(1, 8, 1),
    "choice": tune.choice(["relu", "tanh", 3, None, True]),
    "objects": tune.choice([[1, 2], {"k": "v"}, "plain"]),
    "nested": {"deep": {"lr": tune.loguniform(1e-5, 1e-2)}, "const": "kept"},
    "layers": [tune.randint(1, 4), 64, tune.uniform(0, 1)],
    "pair": (tune.choice(["a", "b"]), 1),
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
    assert isinstance(c["uniform"], float) and -1.0 <= c["uniform"] < 2.0
    assert 1e-4 <= c["loguniform"] < 1e-1
    assert c["quniform"] in {round(0.1 * k, 1) for k in range(1, 11)}
    assert type(c["randint"]) is int and 3 <= c["randint"] <= 6
    assert c["qrandint"] in {0, 5, 10, 15, 20}
    assert type(c["lograndint"]) is int and 1 <= c["lograndint"] <= 999
    assert type(c["qlograndint_1"]) is int and 1 <= c["qlograndint_1"] <= 8
    assert c["choice"] in ["relu", "tanh", 3, None, True]
    assert c["objects"] in [[1, 2], {"k": "v"}, "plain"]
    assert c["nested"]["const"] == "kept" and 1e-5 <= c["nested"]["deep"]["lr"] < 1e-2
    assert type(c["layers"]) is list and c["layers"][1] == 64
    assert 1 <= c["layers"][0] <= 3 and 0 <= c["layers"][2] < 1
    assert type(c["pair"]) is tuple and c["pair"][0] in ("a", "b") and c["pair"][1] == 1
    model = c["model"]
    assert model == "none" or model["type"] in ("svm", "forest")
    if isinstance(model, dict) and model["type"] == "svm":
        assert set(model) == {"type", "C"} and 1e-3 <= model["C"] < 1e3
    if isinstance(model, dict) and model["type"] == "forest":
        assert set(model) == {"type", "depth", "extra"} and 2 <= model["depth"] <= 4
        assert model["extra"]["m"] in (1, 2)
    assert c["constant"] == 42


# -- the search space -----------------------------------------------------------------------


def test_suggestions_honour_every_primitive_of_the_space():
    searcher = OptunaSearch(
        FULL_SPACE, metric="loss", mode="min", sampler=optuna.samplers.RandomSampler(seed=3)
    )
    configs = drive(searcher, 150, lambda c: c["uniform"] ** 2)
    for c in configs:
        check_full_space(c)
    # both ends of the inclusive (quantized) ranges are reached, the exclusive ones never
    seen = lambda key: {c[key] for c in configs}  # noqa: E731
    assert {0, 20} <= seen("qrandint") and seen("randint") == {3, 4, 5, 6}
    assert {0.1, 1.0} <= seen("quniform") and seen("qlograndint_1") >= {1, 8}
    assert {"none", "svm", "forest"} <= {
        m if isinstance(m, str) else m["type"] for m in seen_models(configs)
    }
    # the same space in TPE (past its random startup trials) stays inside the space too
    tpe = OptunaSearch(FULL_SPACE, metric="loss", mode="min", seed=0)
    for c in drive(tpe, 25, lambda c: c["uniform"] ** 2):
        check_full_space(c)


def seen_models(configs):
    return [c["model"] for c in configs]


def test_native_distributions_of_a_converted_space():
    dists = OptunaSearch.convert_search_space(
        {
            "lr": tune.loguniform(1e-4, 1e-1),
            "q": tune.quniform(0.05, 1.0, 0.1),
            "n": tune.randint(3, 7),
            "m": tune.qrandint(1, 21, 5),
            "l": tune.lograndint(1, 100),
            "c": tune.choice(["a", "b"]),
            "nested": {"x": tune.uniform(0, 1)},
        }
    )
    D = optuna.distributions
    assert dists["lr"] == D.FloatDistribution(1e-4, 1e-1, log=True)
    assert dists["q"] == D.FloatDistribution(0.1, 1.0, step=0.1)
    assert dists["n"] == D.IntDistribution(3, 6)
    assert dists["m"] == D.IntDistribution(5, 20, step=5)
    assert dists["l"] == D.IntDistribution(1, 99, log=True)
    assert dists["c"] == D.CategoricalDistribution(["a", "b"])
    assert dists["nested/x"] == D.FloatDistribution(0, 1)


@pytest.mark.parametrize(
    "space, path, what",
    [
        ({"a": {"b": tune.grid_search([1, 2])}}, "a/b", "grid_search"),
        ({"opt": {"lr": tune.sample_from(lambda spec: 0.1)}}, "opt/lr", "sample_from"),
        ({"x": tune.randn(0, 1)}, "x", "normal"),
        ({"net": [tune.qloguniform(1, 100, 5)]}, "net/0", "qloguniform"),
        ({"x": {"eval": "1 + 1"}}, "x", "sample_from"),
        ({"k": tune.qlograndint(1, 100, 5)}, "k", "qlograndint"),
    ],
)
def test_what_optuna_cannot_express_names_the_parameter(space, path, what):
    with pytest.raises(ValueError, match=f"'{path}'.*{what}"):
        OptunaSearch(space, metric="loss", mode="min")
    with pytest.raises(ValueError, match=f"'{path}'"):
        OptunaSearch().set_search_properties("loss", "min", space, num_samples=1)


def test_a_run_with_a_grid_search_fails_before_any_trial(tmp_path):
    with pytest.raises(ValueError, match="'x'.*grid_search"):
        run(quadratic, tmp_path, config={"x": tune.grid_search([0.1, 0.2])},
            search_alg="optuna", metric="loss", mode="min", num_samples=2)


def test_optuna_distribution_dicts_and_nested_names():
    D = optuna.distributions
    searcher = OptunaSearch(
        {"opt/lr": D.FloatDistribution(1e-3, 1, log=True), "n": D.IntDistribution(1, 3)},
        metric="loss", mode="max", seed=1,
    )
    for c in drive(searcher, 5, lambda c: c["opt"]["lr"]):
        assert set(c) == {"opt", "n"} and 1e-3 <= c["opt"]["lr"] <= 1 and c["n"] in (1, 2, 3)
    assert searcher.study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert not searcher.set_search_properties("loss", "max", {"z": 1}, num_samples=1)


# -- results reach the study ----------------------------------------------------------------


def test_results_and_intermediate_values_reach_the_study():
    searcher = OptunaSearch({"x": tune.uniform(0, 1)}, metric="loss", mode="min", seed=0)
    configs = drive(searcher, 4, lambda c: c["x"] * 10, results=3)
    trials = searcher.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for config, trial in zip(configs, trials):
        assert trial.params == {"x": config["x"]}
        assert trial.value == pytest.approx(config["x"] * 10)
        assert trial.intermediate_values == {s: pytest.approx(config["x"] * 10 + 1 / s) for s in (1, 2, 3)}
    # an errored trial fails, one without the metric is pruned, a NaN fails (with a warning)
    for tid, kwargs in [("e", {"error": True}), ("p", {"result": {"other": 1}}),
                        ("n", {"result": {"loss": math.nan}})]:
        searcher.suggest(tid)
        searcher.on_trial_complete(tid, **kwargs)
    states = [t.state for t in searcher.study.trials[4:]]
    assert states == [TrialState.FAIL, TrialState.PRUNED, TrialState.FAIL]
    # a repeated step (a trial restarted from a checkpoint) is reported once
    searcher.suggest("r")
    for step in (1, 2, 2, 1, 3):
        searcher.on_trial_result("r", {"loss": float(step), "training_iteration": step})
    searcher.on_trial_complete("r", {"loss": 3.0})
    assert searcher.study.trials[-1].intermediate_values == {1: 1.0, 2: 2.0, 3: 3.0}


def test_run_by_name_takes_space_metric_and_constants_from_run(tmp_path):
    analysis = run(
        quadratic, tmp_path,
        config={"x": tune.uniform(0, 1), "y": 0, "tag": {"name": "exp"}},
        search_alg="optuna", metric="loss", mode="min", num_samples=8,
    )
    assert len(analysis.trials) == 8
    for trial in analysis.trials:
        assert trial.status == "TERMINATED"
        assert 0 <= trial.config["x"] < 1 and trial.config["tag"] == {"name": "exp"}
        assert set(trial.evaluated_params) == {"x"}
    assert len({t.config["x"] for t in analysis.trials}) == 8


def test_run_with_a_searcher_object_records_every_trial_in_the_study(tmp_path):
    searcher = OptunaSearch(metric="loss", mode="min", seed=5)
    analysis = run(
        steps, tmp_path, config={"x": tune.uniform(0, 1)}, search_alg=searcher,
        num_samples=4, max_concurrent_trials=2,
    )
    study_by_x = {t.params["x"]: t for t in searcher.study.trials}
    assert len(study_by_x) == 4
    for trial in analysis.trials:
        ot = study_by_x[trial.config["x"]]
        assert ot.state == TrialState.COMPLETE
        assert ot.value == pytest.approx(trial.last_result["loss"])
        assert sorted(ot.intermediate_values) == [1, 2, 3, 4]


def test_own_space_refuses_run_config_but_merges_its_constants(tmp_path):
    searcher = OptunaSearch({"x": tune.uniform(0, 1)}, seed=2)
    analysis = run(
        quadratic, tmp_path, config={"y": 0.5, "meta": "m"}, search_alg=searcher,
        metric="loss", mode="min", num_samples=4,
    )
    assert searcher.metric == "loss" and searcher.mode == "min"  # adopted from run()
    assert all(t.config["y"] == 0.5 and t.config["meta"] == "m" for t in analysis.trials)
    with pytest.raises(ValueError, match="own search space"):
        run(quadratic, tmp_path, config={"y": tune.uniform(0, 1)},
            search_alg=OptunaSearch({"x": tune.uniform(0, 1)}), metric="loss", mode="min",
            num_samples=1)


def test_missing_space_or_metric_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no search space"):
        OptunaSearch(metric="loss", mode="min").suggest("t")
    with pytest.raises(RuntimeError, match="`metric` and `mode`"):
        OptunaSearch({"x": tune.uniform(0, 1)}).suggest("t")
    with pytest.raises(ValueError, match="nothing to optimise"):
        OptunaSearch({"x": 1}, metric="loss", mode="min")
    with pytest.raises(ValueError, match="optuna.samplers.BaseSampler"):
        OptunaSearch(sampler="tpe")


def test_study_is_created_once_space_metric_and_mode_are_known(tmp_path):
    """As in Ray Tune: set_search_properties creates the study (and its sampler), so a
    searcher process forked after it inherits them; with a storage, the study (and its
    database connections) is created only where the searcher runs, at its first use."""
    searcher = OptunaSearch(seed=1)
    assert searcher.study is None
    searcher.set_search_properties("loss", "min", {"x": tune.uniform(0, 1)})
    assert isinstance(searcher.study, optuna.study.Study)
    assert searcher.study.direction == optuna.study.StudyDirection.MINIMIZE

    own_space = OptunaSearch({"x": tune.uniform(0, 1)}, seed=1)
    assert own_space.study is None  # no mode yet
    own_space.set_search_properties("loss", "max", {})
    assert own_space.study.direction == optuna.study.StudyDirection.MAXIMIZE

    url = f"sqlite:///{tmp_path / 'study.db'}"
    stored = OptunaSearch(seed=1, storage=url)
    stored.set_search_properties("loss", "min", {"x": tune.uniform(0, 1)})
    assert stored.study is None
    assert 0 <= stored.suggest("t0")["x"] <= 1
    assert stored.study is not None


# -- seeds, save/restore and resume ---------------------------------------------------------


def test_seeded_searchers_are_reproducible(tmp_path):
    space = {"x": tune.uniform(0, 1), "n": tune.randint(0, 10), "c": tune.choice(["a", "b"])}
    loss = lambda c: (c["x"] - 0.2) ** 2 + c["n"] / 10  # noqa: E731
    first = drive(OptunaSearch(space, metric="loss", mode="min", seed=11), 20, loss)
    second = drive(OptunaSearch(space, metric="loss", mode="min", seed=11), 20, loss)
    other = drive(OptunaSearch(space, metric="loss", mode="min", seed=12), 20, loss)
    assert first == second and first != other
    # the same through tunekit.run, one trial at a time
    runs = [
        run(quadratic, tmp_path / str(i), config={"x": tune.uniform(0, 1)},
            search_alg=OptunaSearch(seed=7), metric="loss", mode="min", num_samples=5,
            max_concurrent_trials=1)
        for i in range(2)
    ]
    xs = [[t.config["x"] for t in a.trials] for a in runs]
    assert xs[0] == xs[1] and len(set(xs[0])) == 5


@pytest.mark.parametrize("space", [
    {"x": tune.uniform(0, 1), "m": tune.choice([{"k": tune.randint(0, 5)}, "off"])},
    "define_by_run",
])
def test_save_restore_continues_the_study_without_repeating(tmp_path, space):
    if space == "define_by_run":
        space = define_by_run_space
    loss = lambda c: (c["x"] - 0.4) ** 2  # noqa: E731
    reference = OptunaSearch(space, metric="loss", mode="min", seed=4)
    expected = drive(reference, 30, loss)

    searcher = OptunaSearch(space, metric="loss", mode="min", seed=4)
    first = drive(searcher, 18, loss)
    live = searcher.suggest("live")  # still running when saved
    path = str(tmp_path / "searcher.pkl")
    searcher.save(path)

    restored = OptunaSearch(metric="loss", mode="min")
    restored.restore(path)
    assert len(restored.study.trials) == 19
    assert [t.params for t in restored.study.trials[:18]] == [
        t.params for t in searcher.study.trials[:18]
    ]
    restored.on_trial_result("live", {"loss": 0.5, "training_iteration": 1})
    restored.on_trial_complete("live", {"loss": 0.25})
    assert restored.study.trials[18].state == TrialState.COMPLETE
    assert restored.study.trials[18].intermediate_values == {1: 0.5}
    searcher.on_trial_complete("live", {"loss": 0.25})
    rest = drive(restored, 11, loss, prefix="r")
    assert first == expected[:18] and live == expected[18]
    assert rest == expected[19:]  # the restored sampler continues its random stream
    xs = [c["x"] for c in first + [live] + rest]
    assert len(set(xs)) == len(xs)


def define_by_run_space(trial):
    trial.suggest_float("x", 0, 1)
    if trial.suggest_categorical("deep", [True, False]):
        trial.suggest_int("net/layers", 1, 4)
    return {"source": "dbr"}


class StopAfter(tune.Stopper):
    """Ends the whole experiment once ``n`` trials have reported."""

    def __init__(self, n):
        self.n = n
        self.seen = set()

    def __call__(self, trial_id, result):
        self.seen.add(trial_id)
        return False

    def stop_all(self):
        return len(self.seen) >= self.n


def test_resume_after_a_stopper_continues_the_study(tmp_path):
    kwargs = dict(
        name="exp", config={"x": tune.uniform(0, 1), "y": 0}, metric="loss", mode="min",
        num_samples=10, max_concurrent_trials=2,
    )
    first = run(quadratic, tmp_path, search_alg=OptunaSearch(seed=3), stop=StopAfter(4),
                **kwargs)
    before = {t.trial_id: t.config["x"] for t in first.trials}
    assert 4 <= len(before) < 10

    searcher = OptunaSearch(seed=3)
    analysis = run(quadratic, tmp_path, search_alg=searcher, resume=True, **kwargs)
    trials = analysis.trials
    assert len(trials) == 10 and all(t.status == "TERMINATED" for t in trials)
    assert {t.trial_id: t.config["x"] for t in trials if t.trial_id in before} == before
    xs = [t.config["x"] for t in trials]
    assert len(set(xs)) == 10  # nothing suggested twice
    study_xs = [t.params["x"] for t in searcher.study.trials]
    assert set(xs) <= set(study_xs)
    assert len(study_xs) == len(set(study_xs))
    completed = [t for t in searcher.study.trials if t.state == TrialState.COMPLETE]
    assert len(completed) >= 10 - (len(before) - 4)


DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    import optuna
    import tunekit as tune
    from tunekit.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
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
                os.close(os.open(os.path.join(OUT, f"killed{KILL_AT}"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(int(os.environ["DRIVER_PID"]), signal.SIGKILL)
        tune.report({"loss": (config["x"] - 0.3) ** 2})

    searcher = OptunaSearch(seed=1)
    analysis = tune.run(
        train, name="exp", local_dir=OUT, config={"x": tune.uniform(0, 1)},
        search_alg=searcher, metric="loss", mode="min", num_samples=12,
        max_concurrent_trials=2, resume="AUTO", verbose=0,
    )
    done = [t for t in searcher.study.trials if t.state.name == "COMPLETE"]
    print("DONE", len(analysis.trials), len(searcher.study.trials), len(done), flush=True)
    """
)


def _drive(tmp_path, kill_at):
    """Run DRIVER in a fresh process: killed (SIGKILL by a trial) once ``kill_at`` trials have
    started, or to the end with 0. Returns the finished process."""
    script = tmp_path / "driver.py"
    if not script.exists():
        script.write_text(DRIVER)
    env = dict(os.environ, TUNEKIT_STOP_GRACE_S="2")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(kill_at)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == (-9 if kill_at else 0), proc.stderr
    return proc


def test_resume_after_the_driver_is_killed(tmp_path):
    _drive(tmp_path, 7)
    resumed = _drive(tmp_path, 0)
    line = next(ln for ln in resumed.stdout.splitlines() if ln.startswith("DONE"))
    n_trials, n_study, n_complete = map(int, line.split()[1:])
    assert n_trials == 12
    assert n_complete >= 12 - 2  # at most the two trials running at the kill are orphaned
    analysis = tune.ExperimentAnalysis(str(tmp_path / "exp"))
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    xs = [t.config["x"] for t in analysis.trials]
    assert len(xs) == 12 and len(set(xs)) == 12  # no suggestion repeated after the resume


def test_resume_twice_replays_only_the_last_runs_calls(tmp_path):
    """Killed, resumed and killed again: the second resume restores the state the first
    resumed run saved and replays that run's calls only (not the first run's as well)."""
    _drive(tmp_path, 5)
    _drive(tmp_path, 9)
    resumed = _drive(tmp_path, 0)
    assert "suggested a different config" not in resumed.stderr  # the replay matched
    line = next(ln for ln in resumed.stdout.splitlines() if ln.startswith("DONE"))
    n_trials, n_study, n_complete = map(int, line.split()[1:])
    assert n_trials == 12
    assert n_study <= 12 + 2 * 3  # at most two asked-ahead suggestions left per run
    xs = [t.config["x"] for t in tune.ExperimentAnalysis(str(tmp_path / "exp")).trials]
    assert len(set(xs)) == 12


def test_resume_reads_a_replay_log_in_the_older_one_blob_format(tmp_path):
    """Databases written before the searcher_log table kept the whole log in one kv blob."""
    import pickle
    import sqlite3

    from tunekit_core.state_store import find_databases

    _drive(tmp_path, 7)
    (path,) = find_databases(str(tmp_path / "exp"))
    conn = sqlite3.connect(path)
    with conn:
        rows = conn.execute("SELECT entry FROM searcher_log WHERE source=0 ORDER BY seq").fetchall()
        assert rows  # the calls since the saved state
        calls = [pickle.loads(entry) for (entry,) in rows]
        conn.execute("INSERT OR REPLACE INTO kv VALUES ('searcher_log/0', ?)", (pickle.dumps(calls),))
        conn.execute("DROP TABLE searcher_log")
    conn.close()
    resumed = _drive(tmp_path, 0)
    assert "suggested a different config" not in resumed.stderr
    xs = [t.config["x"] for t in tune.ExperimentAnalysis(str(tmp_path / "exp")).trials]
    assert len(xs) == 12 and len(set(xs)) == 12


# -- ASHA, multi-objective, define-by-run, warm starts ---------------------------------------


def test_works_with_asha(tmp_path):
    pytest.importorskip("tunekit_hyperband")
    searcher = OptunaSearch(seed=0)
    analysis = run(
        steps, tmp_path, config={"x": tune.uniform(0, 1)}, search_alg=searcher,
        scheduler="asha", metric="loss", mode="min", num_samples=12, max_concurrent_trials=2,
    )
    iterations = [t.last_result["training_iteration"] for t in analysis.trials]
    assert len(iterations) == 12 and all(t.status == "TERMINATED" for t in analysis.trials)
    assert all(1 <= i <= 4 for i in iterations)
    study = searcher.study
    assert len(study.trials) == 12
    for trial in analysis.trials:
        ot = next(t for t in study.trials if t.params["x"] == trial.config["x"])
        assert ot.state == TrialState.COMPLETE
        # every result reaches the Optuna trial, except one on which ASHA stops the trial
        # (the run loop does not pass a stopping result to the searcher, as in Ray Tune)
        n = trial.last_result["training_iteration"]
        assert sorted(ot.intermediate_values) in (list(range(1, n + 1)), list(range(1, n)))
    assert any(i < 4 for i in iterations)  # ASHA stopped some trials early


def test_multi_objective_with_nsga2(tmp_path):
    searcher = OptunaSearch(
        {"x": tune.uniform(-1, 1), "y": tune.uniform(0, 1)},
        metric=["a", "b"], mode=["min", "max"],
        sampler=optuna.samplers.NSGAIISampler(seed=0, population_size=4),
    )
    # (not with max_concurrent_trials: the core ConcurrencyLimiter rejects list modes)
    analysis = run(two_objectives, tmp_path, search_alg=searcher, num_samples=10)
    study = searcher.study
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert len(study.trials) == 10
    by_xy = {(t.params["x"], t.params["y"]): t for t in study.trials}
    for trial in analysis.trials:
        values = by_xy[trial.config["x"], trial.config["y"]].values
        assert values == pytest.approx([trial.config["x"] ** 2, trial.config["y"]])
    assert study.best_trials
    with pytest.raises(ValueError, match="same"):
        OptunaSearch(metric=["a", "b"], mode=["min"])
    with pytest.raises(ValueError, match="lists"):
        OptunaSearch(metric="a", mode=["min", "max"])


def test_cma_es_sampler():
    searcher = OptunaSearch(
        {"x": tune.uniform(-3, 3), "y": tune.uniform(-3, 3)}, metric="loss", mode="min",
        sampler=optuna.samplers.CmaEsSampler(seed=0, n_startup_trials=3),
    )
    configs = drive(searcher, 20, lambda c: (c["x"] - 1) ** 2 + c["y"] ** 2)
    assert all(-3 <= c["x"] <= 3 and -3 <= c["y"] <= 3 for c in configs)
    assert searcher.study.best_value < 2
    # CMA-ES is a relative sampler: its later suggestions are in the trials' system attrs
    assert any(any(k.startswith("cma:") for k in t.system_attrs) for t in searcher.study.trials)


def test_define_by_run_space_in_a_run(tmp_path):
    searcher = OptunaSearch(define_by_run_space, metric="loss", mode="min", seed=0)
    analysis = run(quadratic, tmp_path, search_alg=searcher, num_samples=8,
                   config={"y": 0.1})
    for trial in analysis.trials:
        c = trial.config
        assert 0 <= c["x"] <= 1 and c["source"] == "dbr" and c["y"] == 0.1
        if c["deep"]:
            assert 1 <= c["net"]["layers"] <= 4
        else:
            assert "net" not in c
    assert len(searcher.study.trials) == 8
    with pytest.raises(TypeError, match="define-by-run"):
        searcher.add_evaluated_point({"x": 0.5, "deep": False}, 1.0)
    with pytest.raises(TypeError, match="None or a dict"):
        OptunaSearch(lambda t: [t.suggest_float("x", 0, 1)], metric="l", mode="min").suggest("t")


def test_points_to_evaluate_are_suggested_first():
    space = {"x": tune.uniform(0, 1), "opt": {"n": tune.randint(1, 5), "c": tune.choice(["a", "b"])}}
    points = [{"x": 0.25, "opt": {"n": 2, "c": "b"}}, {"x": 0.75}, {"opt/n": 4, "x": 0.5}]
    searcher = OptunaSearch(space, metric="loss", mode="min", points_to_evaluate=points, seed=0)
    configs = drive(searcher, 5, lambda c: c["x"])
    assert configs[0] == {"x": 0.25, "opt": {"n": 2, "c": "b"}}
    assert configs[1]["x"] == 0.75 and 1 <= configs[1]["opt"]["n"] <= 4  # the rest sampled
    assert configs[2]["x"] == 0.5 and configs[2]["opt"]["n"] == 4
    with pytest.raises(ValueError, match="not one of the categories"):
        OptunaSearch(space, metric="loss", mode="min", points_to_evaluate=[{"opt": {"c": "z"}}])


def test_evaluated_rewards_seed_the_study_without_running():
    space = {"x": tune.uniform(0, 1), "m": tune.choice([{"k": tune.randint(0, 3)}, "off"])}
    points = [{"x": 0.1, "m": {"k": 2}}, {"x": 0.9, "m": "off"}]
    searcher = OptunaSearch(space, metric="loss", mode="max", points_to_evaluate=points,
                            evaluated_rewards=[3.0, 1.0], seed=0)
    trials = searcher.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [t.value for t in trials] == [3.0, 1.0]
    assert trials[0].params == {"x": 0.1, "m": 0, "m/0/k": 2}
    assert trials[1].params == {"x": 0.9, "m": 1}
    assert searcher.study.best_trial.number == 0
    first = searcher.suggest("t0")
    assert first["x"] not in (0.1, 0.9)  # the points were not run again
    searcher.add_evaluated_point({"x": 0.5, "m": "off"}, 0.0, intermediate_values=[1.0, 2.0])
    assert searcher.study.trials[-1].intermediate_values == {0: 1.0, 1: 2.0}
    with pytest.raises(ValueError, match="one reward per point"):
        OptunaSearch(space, points_to_evaluate=points, evaluated_rewards=[1.0])


# -- packaging ------------------------------------------------------------------------------


def test_registered_and_exported():
    assert isinstance(registry.create("searcher", "optuna"), OptunaSearch)
    assert tune.search.OptunaSearch is OptunaSearch
    limited = ConcurrencyLimiter(OptunaSearch(), max_concurrent=2)
    assert isinstance(limited, Searcher)


def test_facade_import_error_names_the_distribution():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tunekit_optuna"] = None
        try:
            import tunekit.search.optuna
        except ImportError as exc:
            print("ERR", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "ERR" in out and "tunekit-optuna" in out and "pip install" in out
