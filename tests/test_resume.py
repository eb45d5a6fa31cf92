"""Experiment state and resume: killed drivers, resume modes, corrupt state."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import tunekit as tune

# A driver whose trials count to N with a checkpoint per step and record every
# iteration they execute in a log, so a test can tell what ran twice.
DRIVER = textwrap.dedent(
    """
    import json, os, sys, time
    import tunekit as tune

    OUT, NAME, SAMPLES, STEPS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    SLEEP = float(os.environ.get("STEP_SLEEP", "0.02"))

    def train(config):
        start = 0
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            start = ckpt.to_dict()["i"]
        for i in range(start + 1, STEPS + 1):
            time.sleep(SLEEP)
            with open(os.path.join(OUT, "executed.log"), "a") as f:
                f.write(f"{tune.get_trial_id()} {i}\\n")
            tune.report({"i": i, "x": config["x"]}, checkpoint=tune.Checkpoint.from_dict({"i": i}))

    analysis = tune.run(
        train,
        name=NAME,
        local_dir=OUT,
        config={"x": tune.uniform(0, 1)},
        num_samples=SAMPLES,
        resources_per_trial={"cpu": 0.5},
        keep_checkpoints_num=2,
        resume="AUTO",
        verbose=0,
    )
    print("DONE", len(analysis.trials), flush=True)
    """
)


def _driver(tmp_path, samples, steps, name="exp", env=None):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), name, str(samples), str(steps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, **(env or {})),
    )


def _executed(tmp_path):
    path = tmp_path / "executed.log"
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines() if line.strip()]


def _check_final(tmp_path, samples, steps, name="exp"):
    analysis = tune.ExperimentAnalysis(str(tmp_path / name))
    trials = analysis.trials
    assert len(trials) == samples
    assert len({t.trial_id for t in trials}) == samples
    for trial in trials:
        assert trial.status == "TERMINATED", trial.trial_id
        with open(os.path.join(trial.local_path, "result.json")) as f:
            iters = [json.loads(line)["training_iteration"] for line in f]
        assert iters == list(range(1, steps + 1)), (trial.trial_id, iters)
        rows = (open(os.path.join(trial.local_path, "progress.csv")).read().splitlines())
        assert len(rows) == steps + 1
    return analysis


def _terminated_in_state(tmp_path, name="exp"):
    """Trials the saved state calls TERMINATED (what a resume must not run again)."""
    try:
        analysis = tune.ExperimentAnalysis(str(tmp_path / name))
    except (FileNotFoundError, ValueError):
        return set()
    return {t.trial_id for t in analysis.trials if t.status == "TERMINATED"}


def test_killed_driver_resumes_without_repeating_finished_trials(tmp_path):
    samples, steps = 6, 10
    proc = _driver(tmp_path, samples, steps)
    # Wait until at least two trials have finished, then kill the driver outright.
    deadline = time.time() + 60
    while time.time() < deadline and len(_terminated_in_state(tmp_path)) < 2:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    finished_before = _terminated_in_state(tmp_path)
    assert len(finished_before) >= 2
    lines_before = len(_executed(tmp_path))

    proc = _driver(tmp_path, samples, steps)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"DONE {samples}" in out
    executed = _executed(tmp_path)
    analysis = _check_final(tmp_path, samples, steps)
    # trials that had finished were not run again
    assert not [e for e in executed[lines_before:] if e[0] in finished_before]
    assert {t for t, _ in executed} == {t.trial_id for t in analysis.trials}


@pytest.mark.parametrize("seed", [0])
def test_kill_at_random_moments_many_times(tmp_path, seed):
    """Kill the driver with SIGKILL at random moments, resume each time, check the end state.

    After every kill: every trial the saved state calls TERMINATED never executes again.
    At the end: exactly num_samples trials, all TERMINATED, each result file holding every
    iteration exactly once, and no trial beyond those the searcher suggested.
    """
    rng = random.Random(seed)
    rounds = int(os.environ.get("TUNEKIT_KILL_ROUNDS", "10"))
    samples, steps = 2 * rounds, 10  # enough work to outlive every kill
    slow = {"STEP_SLEEP": "0.1"}
    killed = 0
    checks = []  # (lines executed so far, trials terminated by then)
    for _ in range(rounds):
        proc = _driver(tmp_path, samples, steps, env=slow)
        time.sleep(rng.uniform(0.3, 0.9))
        if proc.poll() is not None:
            break
        proc.kill()
        proc.wait()
        killed += 1
        checks.append((len(_executed(tmp_path)), _terminated_in_state(tmp_path)))
    proc = _driver(tmp_path, samples, steps)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert killed >= rounds // 2
    print(f"killed and resumed {killed} times")
    analysis = _check_final(tmp_path, samples, steps)
    executed = _executed(tmp_path)
    assert {t for t, _ in executed} == {t.trial_id for t in analysis.trials}
    for lines, terminated in checks:
        assert not [e for e in executed[lines:] if e[0] in terminated]


# -- resume modes ---------------------------------------------------------------------------


def steps(config):
    start = 0
    if tune.get_checkpoint() is not None:
        start = tune.get_checkpoint().to_dict()["i"]
    for i in range(start + 1, 4):
        if config.get("fail") and not os.path.exists(config["fail"]):
            raise RuntimeError("fails until the file exists")
        tune.report(i=i, checkpoint=tune.Checkpoint.from_dict({"i": i}))


def test_resume_without_state(tmp_path):
    with pytest.raises(ValueError, match="no experiment state"):
        tune.run(steps, local_dir=str(tmp_path), name="none", resume=True, verbose=0)
    analysis = tune.run(steps, local_dir=str(tmp_path), name="auto", resume="AUTO", verbose=0)
    assert len(analysis.trials) == 1
    with pytest.raises(ValueError, match="resume must be"):
        tune.run(steps, local_dir=str(tmp_path), name="x", resume="SOMETIMES", verbose=0)


def test_resume_finished_experiment_runs_nothing_and_errored_only(tmp_path):
    flag = tmp_path / "ok"
    first = tune.run(steps, local_dir=str(tmp_path), name="e",
                     config={"fail": tune.grid_search([None, str(flag)])},
                     raise_on_failed_trial=False, verbose=0)
    assert sorted(t.status for t in first.trials) == ["ERROR", "TERMINATED"]
    again = tune.run(steps, local_dir=str(tmp_path), name="e", resume=True,
                     raise_on_failed_trial=False, verbose=0)
    assert sorted(t.status for t in again.trials) == ["ERROR", "TERMINATED"]
    assert {t.trial_id for t in again.trials} == {t.trial_id for t in first.trials}
    flag.write_text("now it works")
    fixed = tune.run(steps, local_dir=str(tmp_path), name="e", resume="ERRORED_ONLY", verbose=0)
    assert [t.status for t in fixed.trials] == ["TERMINATED", "TERMINATED"]
    errored = next(t for t in fixed.trials if t.config["fail"])
    assert errored.last_result["i"] == 3


def test_resume_prompt(tmp_path, monkeypatch):
    tune.run(steps, local_dir=str(tmp_path), name="p", verbose=0)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    fresh = tune.run(steps, local_dir=str(tmp_path), name="p", resume="PROMPT", verbose=0)
    assert len(fresh.trials) == 1
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    resumed = tune.run(steps, local_dir=str(tmp_path), name="p", resume="PROMPT", verbose=0)
    assert resumed.trials[0].trial_id == fresh.trials[0].trial_id


def test_corrupt_database_falls_back_to_backup(tmp_path, caplog):
    tune.run(steps, local_dir=str(tmp_path), name="c", num_samples=2, verbose=0)
    exp = tmp_path / "c"
    db = next(p for p in exp.iterdir() if p.name.endswith(".db"))
    assert (exp / (db.name + ".bak")).exists()
    db.write_bytes(b"this is not a database" * 100)
    with caplog.at_level("WARNING", logger="tunekit"):
        analysis = tune.run(steps, local_dir=str(tmp_path), name="c", resume=True, verbose=0)
    assert len(analysis.trials) == 2
    assert any("unreadable" in r.message for r in caplog.records)


def test_half_written_json_snapshot_is_skipped(tmp_path, caplog):
    from tunekit_core.experiment_state import load_experiment_state

    tune.run(steps, local_dir=str(tmp_path), name="j", verbose=0)
    exp = tmp_path / "j"
    for p in exp.iterdir():
        if ".db" in p.name:
            p.unlink()
    snapshot = next(p for p in exp.iterdir() if p.name.endswith(".json"))
    good = snapshot.read_text()
    (exp / "experiment_state-2999-01-01_00-00-00.json").write_text(good[: len(good) // 2])
    with caplog.at_level("WARNING", logger="tunekit"):
        state = load_experiment_state(str(exp))
    assert len(state["trials"]) == 1
    assert any("previous" in r.message for r in caplog.records)


def test_state_database_saves_only_what_changed(tmp_path):
    from tunekit_core.state_store import StateStore
    from tunekit_core.trial import Trial

    store = StateStore(str(tmp_path), "t")
    trials = [Trial("f", {"i": i}, trial_id=f"t{i}") for i in range(50)]
    store.save(trials)
    trials[3].last_result = {"loss": 1.0}
    store.save([trials[3]])
    conn = sqlite3.connect(store.path)
    rows = conn.execute("SELECT trial_id, data FROM trials ORDER BY seq").fetchall()
    assert len(rows) == 50
    assert json.loads(rows[3][1])["last_result"] == {"loss": 1.0}
    store.close()


def test_pruned_checkpoint_is_deleted_only_after_the_state_stops_listing_it(tmp_path):
    """keep_checkpoints_num=1: after any kill, the saved latest checkpoint exists on disk."""
    for attempt in range(3):
        proc = _driver(tmp_path, 4, 10, name="prune", env={"STEP_SLEEP": "0.05"})
        time.sleep(0.8 + 0.3 * attempt)
        proc.kill()
        proc.wait()
        from tunekit_core.state_store import load_database

        state = load_database(str(tmp_path / "prune"))
        if state is None:
            continue
        for record in state["trials"]:
            for entry in record["checkpoints"]:
                path = os.path.join(tmp_path / "prune", entry["path"])
                assert os.path.isdir(path), path
    proc = _driver(tmp_path, 4, 10, name="prune")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    _check_final(tmp_path, 4, 10, name="prune")


def test_fresh_runs_in_the_same_second_get_their_own_state(tmp_path):
    tune.run(steps, local_dir=str(tmp_path), name="same", verbose=0)
    tune.run(steps, local_dir=str(tmp_path), name="same", verbose=0)
    databases = [p for p in os.listdir(tmp_path / "same") if p.endswith(".db")]
    assert len(databases) == 2
    resumed = tune.run(steps, local_dir=str(tmp_path), name="same", resume=True, verbose=0)
    assert len(resumed.trials) == 1
