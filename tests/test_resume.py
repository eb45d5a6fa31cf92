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

# A driver whose trials count to STEPS with a checkpoint per step. Each trial logs every
# start with the step it restored from (starts.log) and every step it computes
# (executed.log); each line carries the driver's round (DRIVER_ROUND), so a test can tell
# which driver process did what, even if a killed driver's worker wrote a last line late.
DRIVER = textwrap.dedent(
    """
    import os, sys, time
    import tunekit as tune
    from tunekit.search import BasicVariantGenerator

    OUT, NAME, SAMPLES, STEPS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    SLEEP = float(os.environ.get("STEP_SLEEP", "0.02"))
    ROUND = os.environ.get("DRIVER_ROUND", "0")

    def log(name, *fields):
        with open(os.path.join(OUT, name), "a") as f:
            f.write(" ".join(str(field) for field in fields) + "\\n")

    def train(config):
        start = 0
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            start = ckpt.to_dict()["i"]
        log("starts.log", ROUND, tune.get_trial_id(), start, os.getpid())
        for i in range(start + 1, STEPS + 1):
            time.sleep(SLEEP)
            log("executed.log", ROUND, tune.get_trial_id(), i)
            tune.report({"i": i, "x": config["x"]}, checkpoint=tune.Checkpoint.from_dict({"i": i}))

    class SlowCheckpointHook(tune.Callback):
        # a driver with work to do between taking a checkpoint and saving its state
        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            time.sleep(float(os.environ["CHECKPOINT_HOOK_S"]))

    analysis = tune.run(
        train,
        name=NAME,
        local_dir=OUT,
        config={"x": tune.uniform(0, 1)},
        num_samples=SAMPLES,
        search_alg=BasicVariantGenerator(random_state=int(os.environ.get("SEED", "0"))),
        resources_per_trial={"cpu": 0.5},
        keep_checkpoints_num=int(os.environ.get("KEEP", "2")),
        resume="AUTO",
        callbacks=[SlowCheckpointHook()] if os.environ.get("CHECKPOINT_HOOK_S") else [],
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


def _log_lines(tmp_path, name):
    path = tmp_path / name
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _executed(tmp_path):
    """Steps the trials computed: [(round, trial_id, step), ...] in the order computed."""
    return [(int(r), t, int(step)) for r, t, step in _log_lines(tmp_path, "executed.log")]


def _starts(tmp_path):
    """Trial starts: [(round, trial_id, step restored from (0: scratch), pid), ...]."""
    return [(int(r), t, int(start), int(pid)) for r, t, start, pid in _log_lines(tmp_path, "starts.log")]


def _check_final(tmp_path, samples, steps, name="exp"):
    analysis = tune.ExperimentAnalysis(str(tmp_path / name))
    trials = analysis.trials
    assert len(trials) == samples
    assert len({t.trial_id for t in trials}) == samples
    for trial in trials:
        assert trial.status == "TERMINATED", trial.trial_id
        with open(os.path.join(trial.local_path, "result.json")) as f:
            rows = [json.loads(line) for line in f]
        iters = [row["training_iteration"] for row in rows]
        assert iters == list(range(1, steps + 1)), (trial.trial_id, iters)
        # the iteration count continued from each checkpoint's iteration
        assert [row["i"] for row in rows] == iters, (trial.trial_id, rows)
        csv_rows = open(os.path.join(trial.local_path, "progress.csv")).read().splitlines()
        assert len(csv_rows) == steps + 1
    return analysis


def _terminated_in_state(tmp_path, name="exp"):
    """Trials the saved state calls TERMINATED (what a resume must not run again)."""
    try:
        analysis = tune.ExperimentAnalysis(str(tmp_path / name))
    except (FileNotFoundError, ValueError):
        return set()
    return {t.trial_id for t in analysis.trials if t.status == "TERMINATED"}


def _wait_until(condition, what, proc, timeout=60.0):
    """Poll ``condition`` (cheap) until it holds; fail clearly on a timeout or a driver exit."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(
                f"The driver exited (rc {proc.returncode}) while the test waited for {what}; "
                f"if it finished its work, the workload is too small for the rounds.\n"
                f"stdout: {out[-2000:]}\nstderr: {err[-4000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"Waited {timeout:.0f} s for {what}; the driver made no such progress.")
        time.sleep(0.01)


def _process_state(pid):
    """The state letter of process ``pid`` ("R", "S", "Z"...), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _children(pid):
    """The processes whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    kids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return kids
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return kids


def _kill_mid_work(proc, tmp_path, round_no, rng, *, warmup, stretch, step_s):
    """SIGKILL the driver of ``round_no`` at a random moment of its work.

    Waits until this driver's trials have computed ``warmup`` steps (real progress since the
    previous kill, however slowly the driver starts on a loaded machine), then until a random
    number of further steps in [0, stretch) is done, then for a random part of a step, and
    kills it. Returns once the driver's worker processes have exited too, so nothing of this
    round changes the experiment afterwards. Returns the steps this round computed.
    """

    def computed():
        return sum(1 for r, _, _ in _executed(tmp_path) if r == round_no)

    target = warmup + rng.randrange(stretch)
    _wait_until(lambda: computed() >= target, f"round {round_no} to compute {target} steps", proc)
    time.sleep(rng.uniform(0, step_s))
    workers = _children(proc.pid)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while any(_process_state(w) not in (None, "Z") for w in workers):
        assert time.monotonic() < deadline, (
            f"round {round_no}: worker processes {workers} still run 30 s after their driver "
            "was killed"
        )
        time.sleep(0.01)
    return computed()


def _saved_trials(tmp_path, name):
    """The state a resume reads now: {trial_id: (status, latest checkpoint's iteration or 0)}.

    Also checks that every checkpoint it lists exists on disk.
    """
    from tunekit_core.state_store import load_database

    experiment_dir = tmp_path / name
    state = load_database(str(experiment_dir))
    assert state is not None, f"no readable experiment state in {experiment_dir} after the kill"
    trials = {}
    for record in state["trials"]:
        iterations = []
        for entry in record["checkpoints"]:
            path = os.path.join(experiment_dir, entry["path"])
            assert os.path.isdir(path), (
                f"the saved state lists checkpoint {path} of trial {record['trial_id']}, which is "
                "gone: a resume could not continue from it"
            )
            iterations.append(entry["iteration"])
        trials[record["trial_id"]] = (record["status"], max(iterations, default=0))
    return trials


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
    assert not [e for e in executed[lines_before:] if e[1] in finished_before]
    assert {t for _, t, _ in executed} == {t.trial_id for t in analysis.trials}


@pytest.mark.parametrize("seed", [0])
def test_kill_at_random_moments_many_times(tmp_path, seed):
    """SIGKILL a real driver at random moments of its work and resume it, many times in a row.

    Each round starts the driver (resume="AUTO"), waits until its trials have computed a
    few steps, and kills it at a random moment of the next stretch of work; the state a
    resume will read is taken right after each kill. Checked:

    - the kills landed mid-run: in several rounds some trials had terminated and others
      were running when the driver died;
    - a trial the saved state calls TERMINATED never starts or computes a step again;
    - every (re)start continues from the trial's latest checkpoint in the saved state
      (never from scratch when it had one) and computes no step at or before it; in several
      rounds a trial that was running continued from its checkpoint;
    - the saved state lists only checkpoints that exist on disk;
    - at the end: exactly num_samples trials, all TERMINATED, with the configs an
      uninterrupted run of the seeded searcher suggests (none repeated, none skipped), and
      result.json/progress.csv holding every iteration once, in order.
    """
    rng = random.Random(seed)
    rounds = int(os.environ.get("TUNEKIT_KILL_ROUNDS", "10"))
    # 3 trials at a time, 6 steps each: a trial ends every couple of rounds, and a round
    # uses at most ~16 of the 18 steps per round available, so the work outlives the kills.
    samples, steps, step_s = 3 * rounds, 6, 0.05
    env = {"STEP_SLEEP": str(step_s), "SEED": str(seed), "TUNEKIT_NUM_CPUS": "1.5"}
    saved = [{}]  # the state a resume reads before each round (none before the first)
    for round_no in range(1, rounds + 1):
        proc = _driver(tmp_path, samples, steps, env={**env, "DRIVER_ROUND": str(round_no)})
        _kill_mid_work(proc, tmp_path, round_no, rng, warmup=2, stretch=2 * steps, step_s=step_s)
        saved.append(_saved_trials(tmp_path, "exp"))
    final = rounds + 1
    proc = _driver(tmp_path, samples, steps, env={**env, "DRIVER_ROUND": str(final)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"DONE {samples}" in out

    executed, starts = _executed(tmp_path), _starts(tmp_path)
    mid_run = continued_rounds = 0
    for round_no in range(1, final + 1):
        state = saved[round_no - 1]  # taken after the kill that ended the previous round
        statuses = {status for status, _ in state.values()}
        mid_run += {"TERMINATED", "RUNNING"} <= statuses
        terminated = {t for t, (status, _) in state.items() if status == "TERMINATED"}
        again = [e for e in starts + executed if e[0] >= round_no and e[1] in terminated]
        assert not again, f"trials TERMINATED before round {round_no} ran again: {again}"
        this_round = [(t, start) for r, t, start, _ in starts if r == round_no]
        assert len({t for t, _ in this_round}) == len(this_round), (round_no, this_round)
        continued = False
        for trial_id, start in this_round:
            status, latest = state.get(trial_id, ("not saved", 0))
            assert start == latest, (
                f"round {round_no}: trial {trial_id} ({status}, latest checkpoint {latest} in "
                f"the saved state) restarted from step {start}"
            )
            computed = [step for r, t, step in executed if r == round_no and t == trial_id]
            assert computed == list(range(start + 1, start + 1 + len(computed))), (
                f"round {round_no}: trial {trial_id} restored from step {start} computed {computed}"
            )
            continued |= status == "RUNNING" and 0 < latest < steps  # killed mid-trial
        continued_rounds += continued
    print(
        f"{rounds} kills; at {mid_run} of them trials had terminated and others were running; "
        f"in {continued_rounds} rounds running trials continued from their checkpoints"
    )
    assert mid_run >= max(1, rounds // 3), f"only {mid_run} of {rounds} kills landed mid-run"
    assert continued_rounds >= max(1, rounds // 3), (
        f"running trials continued from a checkpoint in only {continued_rounds} rounds"
    )

    analysis = _check_final(tmp_path, samples, steps)
    assert {t for _, t, _ in executed} == {t.trial_id for t in analysis.trials}
    from tunekit.search import BasicVariantGenerator

    reference = BasicVariantGenerator(random_state=seed)
    reference.set_search_properties(None, None, {"x": tune.uniform(0, 1)}, num_samples=samples)
    suggested = [reference.suggest(f"reference_{i}")["x"] for i in range(samples)]
    by_creation = sorted(analysis.trials, key=lambda t: t.trial_id)
    assert [t.config["x"] for t in by_creation] == suggested


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
    """keep_checkpoints_num=1: after a kill at any moment, every checkpoint the saved state
    lists (the one a resume continues from) exists on disk.

    A slow on_checkpoint callback widens the stretch between a new checkpoint replacing the
    previous one and the next state commit, where the kills mostly land.
    """
    rng = random.Random(1)
    samples, steps, step_s = 6, 10, 0.05
    env = {"STEP_SLEEP": str(step_s), "KEEP": "1", "TUNEKIT_NUM_CPUS": "1",
           "CHECKPOINT_HOOK_S": "0.02"}
    for round_no in range(1, 4):
        proc = _driver(tmp_path, samples, steps, name="prune",
                       env={**env, "DRIVER_ROUND": str(round_no)})
        _kill_mid_work(proc, tmp_path, round_no, rng, warmup=2, stretch=steps, step_s=step_s)
        saved = _saved_trials(tmp_path, "prune")  # checks the listed checkpoints exist
        assert any(latest for _, latest in saved.values()), saved
    proc = _driver(tmp_path, samples, steps, name="prune", env={**env, "DRIVER_ROUND": "4"})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    _check_final(tmp_path, samples, steps, name="prune")


def test_fresh_runs_in_the_same_second_get_their_own_state(tmp_path):
    tune.run(steps, local_dir=str(tmp_path), name="same", verbose=0)
    tune.run(steps, local_dir=str(tmp_path), name="same", verbose=0)
    databases = [p for p in os.listdir(tmp_path / "same") if p.endswith(".db")]
    assert len(databases) == 2
    resumed = tune.run(steps, local_dir=str(tmp_path), name="same", resume=True, verbose=0)
    assert len(resumed.trials) == 1
