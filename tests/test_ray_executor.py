"""The Ray executor plugin on a real Ray cluster of separate nodes on loopback.

A module-scoped fixture starts the cluster with the ``ray`` command line: a head
node at 127.0.0.2 and a worker node at 127.0.0.3, one CPU each (the worker also
has the custom resource ``side``), under a private temporary directory, with
token authentication off (``RAY_AUTH_MODE=disabled``) and a short node health
check so that a killed node is noticed within seconds. Its processes are stopped
by pid at the end, whatever the tests did (``ray stop`` would stop every Ray
session on the machine).

The tests run in file order: the last ones kill the worker node and add another.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tunekit_ray")
pytest.importorskip("ray")

from tunekit_ray import (  # noqa: E402
    RayExecutor,
    _transfer,  # noqa: E402
    run_remote,
)
from tunekit_ray.cluster import LoopbackCluster  # noqa: E402
from tunekit_ray.executor import _place  # noqa: E402

import tunekit  # noqa: E402
from tunekit import Callback  # noqa: E402

try:
    from _schedulers import pause_once_at_two  # noqa: E402
except ImportError:  # tests imported as a package
    from tests._schedulers import pause_once_at_two  # noqa: E402

from tunekit_core.resources import PlacementGroupFactory  # noqa: E402

HEAD = "127.0.0.2"
WORKER = "127.0.0.3"
JOINER = "127.0.0.4"

# Node health checks every 0.5 s, declared dead after 3 misses (Ray's default is ~30 s).
_FAST_HEALTH = {
    "RAY_health_check_initial_delay_ms": "500",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}


# -- no cluster needed ----------------------------------------------------------------------
def test_placement_simulation_follows_the_strategies():
    view = {"a": {"CPU": 2.0}, "b": {"CPU": 1.0, "GPU": 1.0}}
    assert _place({k: dict(v) for k, v in view.items()}, [{"CPU": 1}, {"CPU": 1}], "STRICT_PACK") == ["a", "a"]
    assert _place({k: dict(v) for k, v in view.items()}, [{"CPU": 1}] * 3, "STRICT_PACK") is None
    assert _place({k: dict(v) for k, v in view.items()}, [{"CPU": 1}] * 3, "PACK") == ["a", "a", "b"]
    assert _place({k: dict(v) for k, v in view.items()}, [{"CPU": 1}] * 2, "STRICT_SPREAD") == ["a", "b"]
    assert _place({k: dict(v) for k, v in view.items()}, [{"CPU": 1}] * 3, "STRICT_SPREAD") is None
    assert _place({k: dict(v) for k, v in view.items()}, [{"CPU": 1, "GPU": 0.5}], "PACK") == ["b"]
    assert _place({k: dict(v) for k, v in view.items()}, [{"side": 1}], "PACK") is None
    consumed = {k: dict(v) for k, v in view.items()}
    assert _place(consumed, [{"CPU": 2}], "PACK") == ["a"]
    assert consumed["a"]["CPU"] == 0.0  # a successful placement is deducted


def test_transferred_checkpoints_and_files_are_installed_atomically(tmp_path):
    source = tmp_path / "node" / "checkpoint_000002"
    source.mkdir(parents=True)
    (source / "model.bin").write_bytes(b"weights")
    (source / "sub").mkdir()
    (source / "sub" / "a.txt").write_text("a")
    trial_dir = tmp_path / "driver" / "trial"
    trial_dir.mkdir(parents=True)
    blob = _transfer.pack_directory(str(source))
    path = _transfer.install_checkpoint(blob, str(trial_dir), "checkpoint_000002")
    assert path == str(trial_dir / "checkpoint_000002")
    assert (trial_dir / "checkpoint_000002" / "model.bin").read_bytes() == b"weights"
    assert (trial_dir / "checkpoint_000002" / "sub" / "a.txt").read_text() == "a"
    # the same iteration again (a retry) replaces it; nothing temporary is left behind
    (source / "model.bin").write_bytes(b"better")
    _transfer.install_checkpoint(_transfer.pack_directory(str(source)), str(trial_dir), "checkpoint_000002")
    assert (trial_dir / "checkpoint_000002" / "model.bin").read_bytes() == b"better"
    assert sorted(os.listdir(trial_dir)) == ["checkpoint_000002"]
    with pytest.raises(ValueError):
        _transfer.install_checkpoint(blob, str(trial_dir), "../escape")
    # trial files: logs are appended, other files replaced
    staged = tmp_path / "node" / "trial"
    staged.mkdir()
    (staged / "stdout").write_text("second run\n")
    (staged / "artifact.txt").write_text("new")
    (trial_dir / "stdout").write_text("first run\n")
    (trial_dir / "artifact.txt").write_text("old")
    _transfer.merge_files(_transfer.pack_directory(str(staged)), str(trial_dir), frozenset({"stdout"}))
    assert (trial_dir / "stdout").read_text() == "first run\nsecond run\n"
    assert (trial_dir / "artifact.txt").read_text() == "new"


def test_no_cluster_gives_a_clear_error(monkeypatch):
    import ray

    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(RuntimeError, match="RAY_ADDRESS"):
        RayExecutor()._connect()


# -- the cluster ------------------------------------------------------------------------------
# For the drivers (this process and the ones it starts). Under `uv run` (the test command),
# Ray would otherwise run every worker through `uv run` in a copy of the working directory.
_DRIVER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


@pytest.fixture
def cluster(_cluster):
    """The module's cluster, once the actors of earlier tests have released their CPUs.

    Ray frees an actor's resources a moment after it is killed; a test that starts while
    an earlier test's actor still holds a CPU would see one node only.
    """
    import time

    import ray

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        total = ray.cluster_resources().get("CPU", 0)
        if total and ray.available_resources().get("CPU", 0) >= total:
            break
        time.sleep(0.1)
    return _cluster


@pytest.fixture(scope="module")
def _cluster():
    import ray
    from ray._private import ray_constants

    cluster = LoopbackCluster(env=_FAST_HEALTH)
    saved = {name: os.environ.get(name) for name in _DRIVER_ENV}
    saved_uv = ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV
    try:
        address = cluster.start_head(HEAD, num_cpus=1)
        cluster.add_node(WORKER, num_cpus=1, resources={"side": 1})
        os.environ.update(_DRIVER_ENV)
        ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False  # read when ray.init runs
        ray.init(address=address, _node_ip_address=HEAD, log_to_driver=False)
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()
        ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = saved_uv
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _node_ids() -> dict[str, str]:
    import ray

    return {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}


def _rows(trial) -> list[dict]:
    with open(os.path.join(trial.local_path, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _spread_train(config):
    print(f"hello from trial {config['x']}")
    for i in range(3):
        tunekit.report(
            {"score": config["x"] * i, "where": tunekit.get_trial_dir()},
            checkpoint=tunekit.Checkpoint.from_dict({"x": config["x"], "i": i}),
        )


def test_trials_on_both_nodes_with_checkpoints_in_the_driver_directory(cluster, tmp_path):
    analysis = tunekit.run(
        _spread_train,
        config={"x": tunekit.grid_search([1, 2, 3, 4])},
        trial_executor=RayExecutor(shared_storage=False),
        local_dir=str(tmp_path),
        log_to_file=True,
        verbose=0,
    )
    ids = _node_ids()
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    seen = set()
    for trial in analysis.trials:
        rows = _rows(trial)
        assert [r["training_iteration"] for r in rows] == [1, 2, 3]
        for row in rows:
            assert row["node_ip"] in (HEAD, WORKER)
            assert row["node_id"] == ids[row["node_ip"]]
            assert row["hostname"] and row["pid"] > 0
        node = rows[-1]["node_ip"]
        seen.add(node)
        # every checkpoint is in the driver's trial directory, whichever node wrote it
        checkpoint = trial.checkpoint
        assert os.path.dirname(checkpoint.path) == trial.local_path
        assert checkpoint.to_dict() == {"x": trial.config["x"], "i": 2}
        for i in (1, 2, 3):
            assert os.path.isdir(os.path.join(trial.local_path, f"checkpoint_{i:06d}"))
        with open(os.path.join(trial.local_path, "stdout")) as f:
            assert f"hello from trial {trial.config['x']}" in f.read()
        if node == WORKER:
            # on the other node the trial wrote into a staging directory there...
            assert rows[-1]["where"] != trial.local_path
            assert not os.path.exists(rows[-1]["where"])  # ...emptied once sent
        else:
            assert rows[-1]["where"] == trial.local_path
    assert seen == {HEAD, WORKER}


def _group_train(config):
    import ray
    from ray.util.placement_group import get_current_placement_group, placement_group_table
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    @ray.remote
    def where():
        return ray.util.get_node_ip_address()

    result = {
        "resources": tunekit.get_trial_resources(),
        "actor_holds": ray.get_runtime_context().get_assigned_resources(),
    }
    group = get_current_placement_group()  # every trial has one
    table = placement_group_table(group)
    result["bundles"] = [dict(b) for b in table["bundles"].values()]
    result["strategy"] = table["strategy"]
    if len(result["bundles"]) > 1:
        result["child_node"] = ray.get(
            where.options(
                num_cpus=1,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=1),
            ).remote()
        )
    tunekit.report(result)


def test_placement_group_bundles_strategy_and_a_custom_resource(cluster, tmp_path):
    group = PlacementGroupFactory([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    analysis = tunekit.run(
        _group_train,
        resources_per_trial=group,
        trial_executor="ray",
        local_dir=str(tmp_path),
        name="group",
        verbose=0,
    )
    (trial,) = analysis.trials
    result = trial.last_result
    assert result["bundles"] == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert result["strategy"] == "STRICT_SPREAD"
    # bundle 0 holds the trial's actor, bundle 1 its own task: one on each node
    assert {result["node_ip"], result["child_node"]} == {HEAD, WORKER}

    # an empty head bundle: the actor holds nothing, the group has the rest
    analysis = tunekit.run(
        _group_train,
        resources_per_trial=PlacementGroupFactory([{}, {"CPU": 1}]),
        trial_executor="ray",
        local_dir=str(tmp_path),
        name="empty_head",
        verbose=0,
    )
    (trial,) = analysis.trials
    assert trial.last_result["bundles"] == [{"CPU": 1.0}]
    assert not any(trial.last_result["actor_holds"].values())

    analysis = tunekit.run(
        _group_train,
        resources_per_trial={"cpu": 0.5, "custom_resources": {"side": 1}},
        trial_executor="ray",
        local_dir=str(tmp_path),
        name="custom",
        verbose=0,
    )
    (trial,) = analysis.trials
    assert trial.last_result["node_ip"] == WORKER  # the only node with `side`
    assert trial.last_result["resources"] == {"CPU": 0.5, "side": 1.0}


class _Counter(tunekit.Trainable):
    instances = 0

    def setup(self, config):
        type(self).instances += 1
        self.created = type(self).instances
        self.value = 0

    def step(self):
        self.value += self.config["step"]
        return {"value": self.value, "created": self.created, "ip": self.get_current_ip()}

    def save_checkpoint(self, checkpoint_dir):
        return {"value": self.value}

    def load_checkpoint(self, state):
        self.value = state["value"]

    def reset_config(self, new_config):
        self.value = 0
        return True


def test_class_trainable_reuse_stop_and_checkpoints_on_the_other_node(cluster, tmp_path):
    analysis = tunekit.run(
        _Counter,
        config={"step": tunekit.grid_search([1, 10, 100])},
        resources_per_trial={"cpu": 1, "side": 1},  # all on the worker node
        stop={"training_iteration": 3},
        checkpoint_freq=2,
        checkpoint_at_end=True,
        reuse_actors=True,
        trial_executor=RayExecutor(shared_storage=False, reuse_actors=True),
        local_dir=str(tmp_path),
        verbose=0,
    )
    trials = sorted(analysis.trials, key=lambda t: t.config["step"])
    assert [t.last_result["value"] for t in trials] == [3, 30, 300]
    # one actor, one instance reset for each next trial
    assert {t.last_result["pid"] for t in trials} == {trials[0].last_result["pid"]}
    assert [t.last_result["created"] for t in trials] == [1, 1, 1]
    assert {t.last_result["node_ip"] for t in trials} == {WORKER}
    assert {t.last_result["ip"] for t in trials} == {WORKER}
    for trial in trials:
        names = sorted(n for n in os.listdir(trial.local_path) if n.startswith("checkpoint_"))
        assert names == ["checkpoint_000002", "checkpoint_000003"]
        assert trial.checkpoint.path == os.path.join(trial.local_path, "checkpoint_000003")
        assert trial.checkpoint.to_dict() == {"value": trial.last_result["value"]}


def test_paused_trials_checkpoint_on_their_node_and_continue(cluster, tmp_path):
    analysis = tunekit.run(
        _Counter,
        config={"step": tunekit.grid_search([1, 10, 100])},
        scheduler=pause_once_at_two(),
        stop={"training_iteration": 4},
        trial_executor=RayExecutor(shared_storage=False),
        local_dir=str(tmp_path),
        verbose=0,
    )
    for trial in analysis.trials:
        history = [s for s, _ in trial.status_history]
        assert history == ["PENDING", "RUNNING", "PAUSED", "RUNNING", "TERMINATED"]
        # 4 steps in all: the last two continued from the state saved at the pause
        assert trial.last_result["value"] == 4 * trial.config["step"]
        assert [r["training_iteration"] for r in _rows(trial)] == [1, 2, 3, 4]
        assert os.path.isdir(os.path.join(trial.local_path, "checkpoint_000002"))


def _crash_once(config):
    start = 0
    checkpoint = tunekit.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint.to_dict()["i"]
    for i in range(start + 1, 6):
        if i == 3 and checkpoint is None:
            os._exit(1)  # the actor's process dies
        tunekit.report({"i": i}, checkpoint=tunekit.Checkpoint.from_dict({"i": i}))


def test_a_dead_actor_fails_its_trial_which_retries_from_its_checkpoint(cluster, tmp_path):
    analysis = tunekit.run(
        _crash_once,
        max_failures=1,
        trial_executor="ray",
        local_dir=str(tmp_path),
        verbose=0,
    )
    (trial,) = analysis.trials
    assert trial.status == "TERMINATED"
    assert trial.num_failures == 1
    with open(trial.error_file) as f:
        assert "Ray actor" in f.read()
    rows = _rows(trial)
    assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[2]["iterations_since_restore"] == 1  # continued after checkpoint 2


_RESUME_MODULE = '''
import time
import tunekit

def slow(config):
    start = 0
    checkpoint = tunekit.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint.to_dict()["i"]
    for i in range(start + 1, 9):
        time.sleep(0.2)
        tunekit.report({"i": i, "started_at": start}, checkpoint=tunekit.Checkpoint.from_dict({"i": i}))

class Announce(tunekit.Callback):
    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if checkpoint.get_metadata().get("iteration", 0) >= 3:
            print("CHECKPOINTED", flush=True)
'''


def test_resume_after_the_driver_is_killed(cluster, tmp_path):
    (tmp_path / "resume_mod.py").write_text(_RESUME_MODULE)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import tunekit, resume_mod
        tunekit.run(resume_mod.slow, name="resumed", local_dir={str(tmp_path)!r},
                    trial_executor="ray", callbacks=[resume_mod.Announce()], verbose=0)
        """
    )
    env = dict(os.environ, RAY_ADDRESS=cluster.address, **_DRIVER_ENV)
    driver = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        for line in driver.stdout:
            if "CHECKPOINTED" in line:
                break
        driver.kill()  # SIGKILL: no chance to save anything more
    finally:
        driver.kill()
        driver.wait()
    sys.path.insert(0, str(tmp_path))
    try:
        import resume_mod

        analysis = tunekit.run(
            resume_mod.slow,
            name="resumed",
            local_dir=str(tmp_path),
            resume=True,
            trial_executor="ray",
            verbose=0,
        )
    finally:
        sys.path.remove(str(tmp_path))
    (trial,) = analysis.trials
    assert trial.status == "TERMINATED"
    rows = _rows(trial)
    assert [r["training_iteration"] for r in rows] == list(range(1, 9))
    assert trial.last_result["started_at"] >= 2  # continued from a saved checkpoint


# -- schedulers, searchers and storage on the cluster -----------------------------------------
# ASHA's curves, one list of scores per trial (mode max); with grace_period=1,
# reduction_factor=2 and max_t=6 the rungs are 1, 2 and 4, and a trial that reaches a
# rung below the median of the earlier trials' scores there stops:
#   [1..6] first everywhere -> 6;  [.5] < 1 -> 1;  [2, 3, ., 5] above 0.75, 2, 4 -> 6;
#   [1.5, 1.5] above 1 at rung 1, below 2.5 at rung 2 -> 2;
#   [3, 4, ., 4] above 1.25 and 2, below 4.5 at rung 4 -> 4;  [.9] < 1.5 -> 1.
_ASHA_CURVES = [
    [1, 2, 3, 4, 5, 6],
    [0.5, 9, 9, 9, 9, 9],
    [2, 3, 3.5, 5, 6, 7],
    [1.5, 1.5, 9, 9, 9, 9],
    [3, 4, 4, 4, 9, 9],
    [0.9, 9, 9, 9, 9, 9],
]
_ASHA_STOPS = [6, 1, 6, 2, 4, 1]


def _curve(config):
    for i, score in enumerate(config["curve"], start=1):
        tunekit.report({"acc": score}, checkpoint=tunekit.Checkpoint.from_dict({"i": i}))


def _asha():
    from tunekit.schedulers import ASHAScheduler

    return ASHAScheduler(metric="acc", mode="max", max_t=6, grace_period=1, reduction_factor=2)


def _checkpoint_names(trial) -> list[str]:
    return sorted(n for n in os.listdir(trial.local_path) if n.startswith("checkpoint_"))


def test_asha_stops_trials_at_the_rungs_the_local_executor_gives(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEKIT_STOP_GRACE_S", "2")
    common = dict(config={"curve": tunekit.grid_search(_ASHA_CURVES)}, max_concurrent_trials=1,
                  local_dir=str(tmp_path), verbose=0)
    local = tunekit.run(_curve, scheduler=_asha(), name="local", **common)
    # on the worker node, its checkpoints sent to the driver
    ray_run = tunekit.run(_curve, scheduler=_asha(), name="ray",
                          resources_per_trial={"cpu": 1, "side": 1},
                          trial_executor=RayExecutor(shared_storage=False), **common)
    for analysis in (local, ray_run):
        trials = sorted(analysis.trials, key=lambda t: _ASHA_CURVES.index(t.config["curve"]))
        assert [t.status for t in trials] == ["TERMINATED"] * 6
        assert [t.last_result["training_iteration"] for t in trials] == _ASHA_STOPS
        for trial, last in zip(trials, _ASHA_STOPS):
            assert [r["training_iteration"] for r in _rows(trial)] == list(range(1, last + 1))
            # a checkpoint for each iteration it ran, in the driver's directory (a trial may
            # have run ahead of the driver's decision: ASHA accepts buffered results)
            names = _checkpoint_names(trial)
            assert names[:last] == [f"checkpoint_{i:06d}" for i in range(1, last + 1)]
            assert trial.checkpoint.path == os.path.join(trial.local_path, names[last - 1])
            assert trial.checkpoint.to_dict() == {"i": last}
    assert {r["node_ip"] for t in ray_run.trials for r in _rows(t)} == {WORKER}


def _milestones(config):
    import time

    start = 0
    checkpoint = tunekit.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint.to_dict()["i"]
    elif config["x"] in (4, 3):
        # the best trial of their bracket (x=5, started first) reaches milestone 1 before
        # the last of them does, so it waits there, paused
        time.sleep(0.75)
    for i in range(start + 1, 6):
        tunekit.report({"acc": config["x"] * i, "resumed_from": start},
                       checkpoint=tunekit.Checkpoint.from_dict({"i": i}))


def test_hyperband_pauses_and_resumes_trials_from_checkpoints_across_nodes(cluster, tmp_path):
    from tunekit.schedulers import HyperBandScheduler

    # max_t=3, eta=3, as in Ray Tune: a bracket of 2 trials run to 3, then a bracket of 3
    # trials run to 1 whose best then goes on to 3
    scheduler = HyperBandScheduler(metric="acc", mode="max", max_t=3, reduction_factor=3)
    analysis = tunekit.run(
        _milestones,
        config={"x": tunekit.grid_search([2, 1, 5, 4, 3])},
        scheduler=scheduler,
        trial_executor=RayExecutor(shared_storage=False),
        local_dir=str(tmp_path),
        verbose=0,
    )
    by_x = {t.config["x"]: t for t in analysis.trials}
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    assert [by_x[x].last_result["training_iteration"] for x in (2, 1, 5, 4, 3)] == [3, 3, 3, 1, 1]
    best = by_x[5]
    history = [s for s, _ in best.status_history]
    assert "PAUSED" in history, history  # it waited at milestone 1 for its bracket
    assert history[history.index("PAUSED") + 1:][-2:] == ["RUNNING", "TERMINATED"]
    rows = _rows(best)
    # paused at 1, continued from the checkpoint of iteration 1: each iteration once
    assert [r["training_iteration"] for r in rows] == [1, 2, 3]
    assert [r["resumed_from"] for r in rows] == [0, 1, 1]
    assert [r["iterations_since_restore"] for r in rows] == [1, 1, 2]
    assert _checkpoint_names(best) == ["checkpoint_000001", "checkpoint_000002", "checkpoint_000003"]
    for x in (4, 3):
        assert _checkpoint_names(by_x[x]) == ["checkpoint_000001"]
    nodes = {r["node_ip"] for t in analysis.trials for r in _rows(t)}
    assert nodes == {HEAD, WORKER}


class _Climber(tunekit.Trainable):
    """Climbs by ``rate`` per step; says which state it was restored from and how often
    its instance was reset for another trial."""

    def setup(self, config):
        self.rate = config["rate"]
        self.score = 0.0
        self.restored = {}
        self.resets = 0

    def step(self):
        self.score += self.rate
        return {
            "score": self.score,
            "restored_owner": self.restored.get("owner"),
            "restored_iter": self.restored.get("iter"),
            "restored_score": self.restored.get("score"),
            "resets": self.resets,
        }

    def save_checkpoint(self, checkpoint_dir):
        return {"score": self.score, "owner": self.trial_id, "iter": self.iteration}

    def load_checkpoint(self, state):
        self.score = state["score"]
        self.restored = dict(state)

    def reset_config(self, new_config):
        self.rate = new_config["rate"]
        self.score = 0.0
        self.restored = {}
        self.resets += 1
        return True


def test_pbt_exploits_continue_from_the_donor_checkpoint_with_reused_actors(cluster, tmp_path):
    import random

    from tunekit.schedulers import PopulationBasedTraining

    random.seed(7)
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=2,
        hyperparam_mutations={"rate": [1.0, 2.0, 3.0, 4.0]},
        synch=True,
    )
    # Two trials at a time (one per node) take turns; top trials pause to save their
    # checkpoint (no checkpoint_freq), which the exploiting trials then restore, on
    # whichever node they run next.
    analysis = tunekit.run(
        _Climber,
        name="pbt",
        config={"rate": tunekit.grid_search([1.0, 2.0, 3.0, 4.0])},
        stop={"training_iteration": 6},
        metric="score",
        mode="max",
        scheduler=scheduler,
        reuse_actors=True,
        trial_executor=RayExecutor(shared_storage=False, reuse_actors=True),
        local_dir=str(tmp_path),
        verbose=0,
    )
    trials = analysis.trials
    assert {t.status for t in trials} == {"TERMINATED"}
    assert {t.last_result["training_iteration"] for t in trials} == {6}
    by_tag = {t.experiment_tag.split("@")[0]: t for t in trials}
    rows = {t.trial_id: _rows(t) for t in trials}
    with open(tmp_path / "pbt" / "pbt_global.txt") as f:
        exploits = [json.loads(line) for line in f if line.strip()]
    assert exploits, "PBT never exploited"
    for target_tag, donor_tag, _, donor_iter, donor_config, new_config in exploits:
        target, donor = by_tag[target_tag], by_tag[donor_tag]
        restarts = [
            r for r in rows[target.trial_id]
            if r["iterations_since_restore"] == 1 and r["restored_owner"] == donor.trial_id
            and r["restored_iter"] == donor_iter and r["config"] == new_config
        ]
        assert restarts, (target_tag, donor_tag, donor_iter, new_config)
        for row in restarts:
            # it went on from the donor's iteration, with the donor's state at that iteration
            assert row["training_iteration"] == donor_iter + 1
            assert row["score"] == row["restored_score"] + new_config["rate"]
            assert any(
                r["training_iteration"] == donor_iter and r["score"] == row["restored_score"]
                and r["config"] == donor_config
                for r in rows[donor.trial_id]
            )
    # reuse_actors: instances were kept and reset for other trials, on both nodes
    assert max(r["resets"] for t in trials for r in rows[t.trial_id]) > 0
    assert {r["node_ip"] for t in trials for r in rows[t.trial_id]} == {HEAD, WORKER}


def _bowl(config):
    for step in range(1, 3):
        tunekit.report({"loss": (config["x"] - 0.3) ** 2 + 1.0 / step})


def test_optuna_and_hyperopt_receive_results_from_the_cluster(cluster, tmp_path):
    import optuna

    from tunekit.search.hyperopt import HyperOptSearch
    from tunekit.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"x": tunekit.uniform(0, 1)}
    common = dict(config=space, metric="loss", mode="min", num_samples=4, max_concurrent_trials=2,
                  trial_executor="ray", local_dir=str(tmp_path), verbose=0)
    optuna_search = OptunaSearch(seed=3)
    analysis = tunekit.run(_bowl, search_alg=optuna_search, name="optuna", **common)
    nodes = {r["node_ip"] for t in analysis.trials for r in _rows(t)}
    by_x = {t.params["x"]: t for t in optuna_search.study.trials}
    assert len(by_x) == 4 and len(analysis.trials) == 4
    for trial in analysis.trials:
        assert trial.status == "TERMINATED"
        study_trial = by_x[trial.config["x"]]
        assert study_trial.state == optuna.trial.TrialState.COMPLETE
        assert study_trial.value == pytest.approx(trial.last_result["loss"])
        assert sorted(study_trial.intermediate_values) == [1, 2]

    hyperopt_search = HyperOptSearch(random_state_seed=3)
    analysis = tunekit.run(_bowl, search_alg=hyperopt_search, name="hyperopt", **common)
    nodes |= {r["node_ip"] for t in analysis.trials for r in _rows(t)}
    documents = hyperopt_search.trials.trials
    assert len(documents) == 4 and len(analysis.trials) == 4
    for trial in analysis.trials:
        assert trial.status == "TERMINATED"
        (document,) = [d for d in documents if d["misc"]["vals"]["x"][0] == pytest.approx(trial.config["x"])]
        assert document["result"]["loss"] == pytest.approx(trial.last_result["loss"])
    assert nodes == {HEAD, WORKER}


# shared_storage=False: the worker node sends its checkpoints to the driver, which uploads
# them; None: the worker node sees the experiment directory and writes into it.
@pytest.mark.parametrize("shared_storage", [False, None], ids=["sent", "shared"])
def test_sync_config_uploads_checkpoints_written_on_the_worker_node(cluster, tmp_path, shared_storage):
    remote = tmp_path / "remote"
    analysis = tunekit.run(
        _spread_train,
        name="synced",
        config={"x": tunekit.grid_search([1, 2, 3, 4])},
        trial_executor=RayExecutor(shared_storage=shared_storage),
        sync_config=tunekit.SyncConfig(upload_dir=f"file://{remote}"),
        local_dir=str(tmp_path / "local"),
        log_to_file=True,
        verbose=0,
    )
    nodes = set()
    for trial in analysis.trials:
        rows = _rows(trial)
        nodes.add(rows[-1]["node_ip"])
        # where the trial wrote: a node that sees the directory (the marker) writes into it
        wrote_in_place = rows[-1]["where"] == trial.local_path
        assert wrote_in_place is (shared_storage is None or rows[-1]["node_ip"] == HEAD)
        uploaded = remote / "synced" / os.path.basename(trial.local_path)
        assert sorted(os.listdir(uploaded)) == sorted(os.listdir(trial.local_path))
        for name in ("params.json", "params.pkl", "result.json", "progress.csv", "stdout"):
            with open(os.path.join(trial.local_path, name), "rb") as f:
                assert (uploaded / name).read_bytes() == f.read(), name
        for i in (1, 2, 3):
            copy = tunekit.Checkpoint(str(uploaded / f"checkpoint_{i:06d}"))
            assert copy.to_dict() == {"x": trial.config["x"], "i": i - 1}
    assert nodes == {HEAD, WORKER}
    # nothing of the executor's own (staging, markers) went up
    experiment = remote / "synced"
    assert sorted(p.name for p in experiment.iterdir() if p.is_dir()) == sorted(
        os.path.basename(t.local_path) for t in analysis.trials
    )
    assert not [p.name for p in experiment.iterdir() if p.name.startswith(".")]


def _holds(config):
    import ray

    start = 0
    checkpoint = tunekit.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint.to_dict()["i"]
    for i in range(start + 1, 5):
        held = ray.get_runtime_context().get_assigned_resources()
        tunekit.report({"cpus": tunekit.get_trial_resources().get("CPU"), "held": held.get("CPU"),
                        "resumed_from": start, "score": i},
                       checkpoint=tunekit.Checkpoint.from_dict({"i": i}))


def test_resource_changing_scheduler_restarts_trials_in_bigger_actors(cluster, tmp_path):
    from tunekit.schedulers import FIFOScheduler as Fifo
    from tunekit.schedulers import ResourceChangingScheduler

    def whole_cpu_from_2(runner, trial, result, scheduler):
        return {"cpu": 1} if result["training_iteration"] >= 2 else None

    analysis = tunekit.run(
        _holds,
        config={"x": tunekit.grid_search([1, 2])},
        resources_per_trial={"cpu": 0.5},
        scheduler=ResourceChangingScheduler(Fifo(), whole_cpu_from_2),
        metric="score",
        mode="max",
        trial_executor=RayExecutor(shared_storage=False),
        local_dir=str(tmp_path),
        verbose=0,
    )
    late_nodes = set()
    for trial in analysis.trials:
        rows = _rows(trial)
        assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4]
        assert [r["cpus"] for r in rows] == [0.5, 0.5, 1, 1]
        assert [r["held"] for r in rows] == [0.5, 0.5, 1, 1]  # what its Ray actor holds
        assert [r["resumed_from"] for r in rows] == [0, 0, 2, 2]
        late_nodes.add(rows[-1]["node_ip"])
    # Each node has one CPU: a resized trial holds a whole node. Whether the two resized
    # trials overlapped (one per node) or ran one after the other depends on timing.
    assert late_nodes <= {HEAD, WORKER}


class _KillWorkerNode(Callback):
    def __init__(self, cluster):
        self.cluster = cluster
        self.killed = 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not self.killed and result["node_ip"] == WORKER and result["training_iteration"] >= 3:
            self.killed = self.cluster.kill_node(WORKER)


def _steady(config):
    import time

    start = 0
    checkpoint = tunekit.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint.to_dict()["i"]
    for i in range(start + 1, 9):
        time.sleep(0.25)
        tunekit.report({"i": i}, checkpoint=tunekit.Checkpoint.from_dict({"i": i}))


def test_a_killed_worker_node_fails_its_trials_which_recover_on_the_head(cluster, tmp_path):
    killer = _KillWorkerNode(cluster)
    analysis = tunekit.run(
        _steady,
        num_samples=2,
        max_failures=2,
        trial_executor=RayExecutor(shared_storage=False),
        callbacks=[killer],
        local_dir=str(tmp_path),
        verbose=0,
    )
    assert killer.killed > 0
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    (moved,) = [t for t in analysis.trials if t.num_failures]
    assert moved.num_failures == 1
    rows = _rows(moved)
    assert [r["training_iteration"] for r in rows] == list(range(1, 9))
    nodes = [r["node_ip"] for r in rows]
    assert nodes[0] == WORKER and nodes[-1] == HEAD
    first_on_head = nodes.index(HEAD)
    assert first_on_head >= 3
    assert rows[first_on_head]["iterations_since_restore"] == 1  # from its checkpoint
    # its checkpoints written on the lost node survived: they had been sent to the driver
    assert os.path.isdir(os.path.join(moved.local_path, "checkpoint_000002"))


class _AddNode(Callback):
    def __init__(self, cluster):
        self.cluster = cluster
        self.process = None

    def on_step_begin(self, iteration, trials, **info):
        if self.process is None:
            self.process = self.cluster.add_node(JOINER, num_cpus=1, resources={"late": 1}, wait=False)


def _where(config):
    tunekit.report({"done_on": 1})


def test_a_trial_waits_for_a_node_that_joins(cluster, tmp_path):
    joiner = _AddNode(cluster)
    analysis = tunekit.run(
        _where,
        resources_per_trial={"cpu": 1, "late": 1},
        trial_executor="ray",
        callbacks=[joiner],
        local_dir=str(tmp_path),
        verbose=0,
    )
    joiner.process.wait()
    (trial,) = analysis.trials
    assert trial.status == "TERMINATED"
    assert trial.last_result["node_ip"] == JOINER


class _RecordDriver(Callback):
    def __init__(self, path):
        self.path = path

    def on_trial_start(self, iteration, trials, trial, **info):
        with open(self.path, "w") as f:
            f.write(str(os.getpid()))


def _quick(config):
    tunekit.report({"score": config["x"] * 2})


def test_run_remote_runs_the_driver_as_a_ray_task(cluster, tmp_path):
    record = tmp_path / "driver_pid"
    analysis = run_remote(
        _quick,
        config={"x": tunekit.grid_search([1, 2])},
        metric="score",
        mode="max",
        local_dir=str(tmp_path),
        callbacks=[_RecordDriver(str(record))],
        verbose=0,
    )
    assert int(record.read_text()) != os.getpid()
    assert analysis.best_config == {"x": 2}
    assert sorted(t.status for t in analysis.trials) == ["TERMINATED", "TERMINATED"]
    frames = analysis.trial_dataframes
    assert sorted(float(f["score"].iloc[-1]) for f in frames.values()) == [2.0, 4.0]
    pickle.dumps(analysis)  # plain records: it travelled back from the cluster


def test_run_with_remote_true_is_run_remote(cluster, tmp_path):
    record = tmp_path / "driver_pid"
    analysis = tunekit.run(
        _quick,
        config={"x": tunekit.grid_search([3, 1])},
        metric="score",
        mode="min",
        local_dir=str(tmp_path),
        name="remote_flag",
        callbacks=[_RecordDriver(str(record))],
        verbose=0,
        _remote=True,
    )
    assert int(record.read_text()) != os.getpid()  # the driver ran elsewhere
    assert analysis.best_config == {"x": 1}
    assert analysis.experiment_path == str(tmp_path / "remote_flag")
    with pytest.raises(ValueError, match="cannot use a custom trial_executor"):
        tunekit.run(_quick, config={"x": 1}, verbose=0, local_dir=str(tmp_path),
                    trial_executor="local", _remote=True)
