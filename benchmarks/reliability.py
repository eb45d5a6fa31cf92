"""Reliability figures: state-save cost, resume time, checkpoint overhead (tunekit vs Ray Tune).

Usage (from the repository root)::

    uv run python benchmarks/reliability.py \
        [--part save,resume,checkpoint-overhead] [--frameworks tunekit,ray] \
        [--large 10000] [--small 100] [--repeats 3] [--json PATH]
    uv run python benchmarks/reliability.py --prepare      # only create the cached experiments

Every measurement runs in a fresh subprocess (this file, called back with ``_worker NAME``),
so no imports, caches or worker pools leak between measurements. The tunekit side runs with
this interpreter; the Ray side with ``benchmarks/.venv-ray/bin/python`` (``--ray-python``),
the benchmark environment described in ``benchmarks/README.md``. Ray is never imported here.

Parts (what each figure is and how it is measured is written up in ``benchmarks/RELIABILITY.md``):

- ``save``: (a) ``StateStore.save`` of a few changed trials plus the run loop's kv, on
  stores holding 100 and 10,000 real ``Trial`` objects whose last results have the shape of a
  real run's, alternating between the two stores; (b) the run loop's own commits
  (``RunLoop._maybe_save_state``, wrapped) during real ``tunekit.run`` calls of 100 and 10,000
  one-result trials; (c) Ray Tune's experiment checkpoint (``TuneController.save_to_dir`` and
  ``checkpoint(force=True, wait=True)``, wrapped and repeated on the controller of a real run
  once all of its 100 or 10,000 trials have finished, plus every save it made during the run).
- ``resume``: an experiment of ``--large`` finished one-result trials created by each framework
  (cached under ``benchmarks/results/reliability/``, git-ignored; Ray's takes minutes), copied
  afresh before every timed resume. tunekit: ``tunekit.run(..., resume=True)`` end to end, the
  database load alone (``load_database``) and ``ExperimentAnalysis(path)``. Ray:
  ``Tuner.restore(path, trainable).fit()`` and ``Tuner.restore(...).get_results()``.
- ``checkpoint-overhead``: W4 (20 trials x 1.0 s of CPU, reporting every 0.1 s, 2 at a time)
  with a ``Checkpoint.from_dict`` on every report versus none, alternating, ``--repeats`` each.

Every line of output carries the 1-minute load average seen around the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / "results" / "reliability"
RESULT_PREFIX = "BENCH_RESULT "
PARTS = ("save", "resume", "checkpoint-overhead")
FRAMEWORKS = ("tunekit", "ray")
DEFAULT_RAY_PYTHON = HERE / ".venv-ray" / "bin" / "python"

# ---------------------------------------------------------------------------------------------
# Trainables (module level: both frameworks pickle them by value from __main__)
# ---------------------------------------------------------------------------------------------

_report: Any = None  # the framework's report function, bound by the worker


def train_once(config: dict) -> None:
    """One result and done (the trials of the save and resume experiments)."""
    _report({"score": config["x"], "loss": 1.0 - config["x"]})


def train_burn(config: dict) -> None:
    """W4: burn ``burn`` s of CPU, reporting every ``every`` s (with a checkpoint if asked)."""
    import tunekit

    burn, every, ckpt = config["burn"], config["every"], config["checkpoint"]
    start = time.process_time()
    next_report = every
    step = 0
    while True:
        used = time.process_time() - start
        if used >= next_report - 1e-9:
            step += 1
            if ckpt:
                tunekit.report({"cpu_used": used},
                               checkpoint=tunekit.Checkpoint.from_dict({"step": step, "used": used}))
            else:
                tunekit.report({"cpu_used": used})
            if used >= burn - 1e-9:
                return
            next_report += every


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest-rank."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q * (len(s) - 1)))))
    return s[k]


def summary(values: list[float]) -> dict[str, Any]:
    """n, median, p95, min, max, mean of ``values`` (seconds)."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": statistics.median(values), "p95": pct(values, 0.95),
            "min": min(values), "max": max(values), "mean": statistics.fmean(values)}


def _cpu_times() -> tuple[float, float]:
    with open("/proc/stat") as f:
        parts = [float(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)
    return sum(parts), idle


def uptime_line() -> str:
    """What ``uptime`` prints."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def emit(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def copy_experiment(src: Path, dst_root: str) -> str:
    """Copy a cached experiment directory to a fresh place (never resume the cache itself)."""
    dst = os.path.join(dst_root, src.name)
    shutil.copytree(src, dst, symlinks=True)
    return dst


# ---------------------------------------------------------------------------------------------
# Workers (run in fresh subprocesses; each prints one BENCH_RESULT line)
# ---------------------------------------------------------------------------------------------


def _template_result(tmp: str) -> tuple[dict, dict]:
    """A real one-result tunekit run: its trial's last result and the searcher state it saved.

    The benchmark copies their shape and size (the run loop commits the searcher's state with
    the trials whenever trials are created or complete).
    """
    global _report
    import tunekit
    from tunekit_core.state_store import load_database

    _report = tunekit.report
    analysis = tunekit.run(train_once, config={"x": tunekit.uniform(0, 1)}, num_samples=1,
                           verbose=0, local_dir=tmp, name="template")
    trial = analysis.trials[0]
    kv = load_database(os.path.join(tmp, "template"))["kv"]
    searcher_kv = {k: v for k, v in kv.items() if k.startswith("searcher/")}
    return dict(trial.last_result), searcher_kv


def _make_trials(n: int, exp_dir: str, template: dict, prefix: str) -> list:
    """``n`` finished ``Trial`` objects as a run of one-result trials leaves them."""
    from tunekit_core.trial import RUNNING, TERMINATED, Trial

    trials = []
    now = time.time()
    for i in range(n):
        x = random.random()
        trial_id = f"{prefix}{i:05d}"
        tag = f"{i + 1}_x={x:.4f}"
        trial = Trial(trainable_name="train_once", config={"x": x}, trial_id=trial_id,
                      experiment_tag=tag, evaluated_params={"x": x}, experiment_name="bench",
                      local_dir=exp_dir)
        trial.local_path = os.path.join(exp_dir, f"train_once_{trial_id}_{tag}")
        trial.set_status(RUNNING)
        result = dict(template)
        result.update(score=x, loss=1.0 - x, trial_id=trial_id, experiment_tag=tag,
                      config={"x": x}, timestamp=int(now), time_this_iter_s=random.random() / 100)
        result["time_total_s"] = result["time_this_iter_s"]
        trial.last_result = result
        trial.results_seen = 1
        trial.set_status(TERMINATED)
        trials.append(trial)
    return trials


def _touch(trial: Any, step: int) -> None:
    """What one loop step does to a trial: a new last result (a new dict, as the loop does)."""
    result = dict(trial.last_result)
    result["training_iteration"] = step
    result["iterations_since_restore"] = step
    result["time_this_iter_s"] = random.random() / 100
    result["time_total_s"] = result.get("time_total_s", 0.0) + result["time_this_iter_s"]
    result["timestamp"] = int(time.time())
    result["score"] = random.random()
    trial.last_result = result
    trial.results_seen += 1


def worker_tk_save_micro(args: dict) -> dict:
    """StateStore.save on 100- and 10,000-trial stores, alternating saves between them."""
    import tunekit_core
    from tunekit_core.state_store import StateStore

    sizes = args["sizes"]
    saves, changed = args["saves"], args["changed"]
    random.seed(0)
    tmp = tempfile.mkdtemp(prefix="tunekit-rel-")
    try:
        template, searcher_kv = _template_result(tmp)
        stores, trials, populate = {}, {}, {}
        for n in sizes:
            exp_dir = os.path.join(tmp, f"exp{n}")
            os.makedirs(exp_dir)
            trials[n] = _make_trials(n, exp_dir, template, uuid.uuid4().hex[:5] + "_")
            stores[n] = StateStore(exp_dir, f"2000-01-01_00-00-{n % 60:02d}")
            t0 = time.perf_counter()
            for start in range(0, n, 500):  # rows arrive as trials are created
                stores[n].save(trials[n][start:start + 500])
            populate[n] = time.perf_counter() - t0
        runner_data = {"start_time": time.time(), "iteration": 0, "id_prefix": "abcde_",
                       "trial_counter": 0, "source_index": 0, "created": [0],
                       "search_finished": False, "stop_reason": None, "interrupted": False}
        times: dict[int, list[float]] = {n: [] for n in sizes}
        for step in range(2, saves + 2):
            for n in sizes:  # alternate: the same machine noise hits both sizes
                dirty = random.sample(trials[n], changed)
                for trial in dirty:
                    _touch(trial, step)
                runner_data["iteration"] = step
                runner_data["trial_counter"] = n
                kv = {"runner_data": json.dumps(runner_data), **searcher_kv}
                t0 = time.perf_counter()
                stores[n].save(dirty, kv)
                times[n].append(time.perf_counter() - t0)
        backup, db_bytes = {}, {}
        for n in sizes:
            t0 = time.perf_counter()
            stores[n].maybe_backup(60.0, force=True)
            backup[n] = time.perf_counter() - t0
            stores[n].close()
            db_bytes[n] = os.path.getsize(stores[n].path)
        return {"sizes": sizes, "changed": changed, "saves": {str(n): summary(times[n]) for n in sizes},
                "populate_s": {str(n): populate[n] for n in sizes},
                "backup_s": {str(n): backup[n] for n in sizes},
                "db_bytes": {str(n): db_bytes[n] for n in sizes},
                "last_result_keys": len(template), "last_result_bytes": len(json.dumps(template)),
                "kv_bytes": len(json.dumps(runner_data)) + sum(len(v) for v in searcher_kv.values()),
                "tunekit_core": tunekit_core.__file__}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tunekit_one_result_run(n: int, local_dir: str, name: str) -> tuple[Any, float]:
    global _report
    import tunekit

    _report = tunekit.report
    t0 = time.perf_counter()
    analysis = tunekit.run(train_once, config={"x": tunekit.uniform(0, 1)}, num_samples=n,
                           resources_per_trial={"cpu": 1}, verbose=0, local_dir=local_dir,
                           name=name)
    return analysis, time.perf_counter() - t0


def worker_tk_save_e2e(args: dict) -> dict:
    """A real tunekit.run of ``n`` one-result trials with the run loop's commits timed."""
    import tunekit_core.runner as runner_mod
    from tunekit_core.state_store import StateStore

    n = args["n"]
    commits: list[dict] = []
    orig_maybe, orig_save = runner_mod.RunLoop._maybe_save_state, StateStore.save
    current: dict[str, Any] = {}

    def timed_store_save(self, trials, kv=None):
        t0 = time.perf_counter()
        try:
            return orig_save(self, trials, kv)
        finally:
            current["store_s"] = time.perf_counter() - t0
            current["dirty"] = len(trials)
            current["kv_bytes"] = sum(len(v) for v in (kv or {}).values())
            current["kv_keys"] = sorted((kv or {}).keys())

    def timed_maybe(self, force=False):
        current.clear()
        t0 = time.perf_counter()
        try:
            return orig_maybe(self, force=force)
        finally:
            total = time.perf_counter() - t0
            if "store_s" in current:  # this call committed
                rest = (total - current["store_s"] - current.get("plugin_state_s", 0.0)
                        - current.get("backup_s", 0.0))
                commits.append({"plugin_state_s": 0.0, "backup_s": 0.0, **current,
                                "trials": len(self._trials), "force": force, "total_s": total,
                                "rest_s": rest})

    orig_saved_state, orig_backup = runner_mod._saved_state, StateStore.maybe_backup

    def timed_saved_state(obj, experiment_dir):
        t0 = time.perf_counter()
        try:
            return orig_saved_state(obj, experiment_dir)
        finally:
            current["plugin_state_s"] = (current.get("plugin_state_s", 0.0)
                                         + time.perf_counter() - t0)

    def timed_backup(self, period_s, force=False):
        t0 = time.perf_counter()
        try:
            return orig_backup(self, period_s, force=force)
        finally:
            current["backup_s"] = time.perf_counter() - t0

    runner_mod.RunLoop._maybe_save_state = timed_maybe
    runner_mod._saved_state = timed_saved_state
    StateStore.save = timed_store_save
    StateStore.maybe_backup = timed_backup
    local_dir = args.get("local_dir") or tempfile.mkdtemp(prefix="tunekit-rel-")
    try:
        analysis, wall = _tunekit_one_result_run(n, local_dir, args.get("name", "bench"))
        ok = sum(1 for t in analysis.trials if t.status == "TERMINATED")
        loop_commits = [c for c in commits if not c["force"]]
        final = [c for c in commits if c["force"]]

        def pick(cs: list[dict], key: str) -> list[float]:
            return [c[key] for c in cs]

        early = [c for c in loop_commits if c["trials"] <= 100]
        late = [c for c in loop_commits if c["trials"] >= 0.9 * n]
        searcher_commits = [c for c in loop_commits if any(k.startswith("searcher/")
                                                          for k in c["kv_keys"])]
        return {
            "n": n, "trials": len(analysis.trials), "terminated": ok, "wall_s": wall,
            "commits": len(loop_commits),
            "commit_total": summary(pick(loop_commits, "total_s")),
            "commit_store": summary(pick(loop_commits, "store_s")),
            # searchers' and scheduler's save() through a temporary file
            "commit_plugin_state": summary(pick(loop_commits, "plugin_state_s")),
            "commit_backup": summary(pick(loop_commits, "backup_s")),
            # the rest: the loggers' flush hook (result files reach the disk first) and
            # the loop's bookkeeping
            "commit_rest": summary(pick(loop_commits, "rest_s")),
            "dirty": summary([float(c["dirty"]) for c in loop_commits]),
            "early_total": summary(pick(early, "total_s")),
            "late_total": summary(pick(late, "total_s")),
            "late_store": summary(pick(late, "store_s")),
            "with_searcher_total": summary(pick(searcher_commits, "total_s")),
            "kv_bytes_max": max((c["kv_bytes"] for c in loop_commits), default=0),
            "final_total_s": final[-1]["total_s"] if final else None,
            "sum_commit_s": sum(pick(loop_commits, "total_s")),
            "experiment_dir": os.path.join(local_dir, args.get("name", "bench")),
        }
    finally:
        if not args.get("local_dir"):
            shutil.rmtree(local_dir, ignore_errors=True)


def worker_tk_resume(args: dict) -> dict:
    """tunekit.run(resume=True) on a copy of the cached experiment, with a breakdown."""
    global _report
    t_import = time.perf_counter()
    import tunekit
    import tunekit_core.runner as runner_mod
    import tunekit_core.state_store as store_mod

    t_import = time.perf_counter() - t_import
    _report = tunekit.report
    tmp = tempfile.mkdtemp(prefix="tunekit-rel-")
    try:
        exp = copy_experiment(Path(args["cache"]), tmp)
        parts: dict[str, float] = {}

        def wrap(owner: Any, attr: str, label: str) -> None:
            orig = getattr(owner, attr)

            def timed(*a, **kw):
                t0 = time.perf_counter()
                try:
                    return orig(*a, **kw)
                finally:
                    parts[label] = parts.get(label, 0.0) + time.perf_counter() - t0
            setattr(owner, attr, timed)

        if args["mode"] == "run":
            wrap(store_mod, "load_database", "load_database")
            wrap(runner_mod.RunLoop, "restore_state", "restore_state")
            wrap(runner_mod.RunLoop, "run", "run_loop")
            wrap(runner_mod.RunLoop, "_maybe_save_state", "final_commit")
            wrap(runner_mod.RunLoop, "write_snapshot", "json_snapshot")
            t0 = time.perf_counter()
            analysis = tunekit.run(train_once, config={"x": tunekit.uniform(0, 1)},
                                   num_samples=args["n"], resources_per_trial={"cpu": 1},
                                   verbose=0, local_dir=tmp, name=os.path.basename(exp),
                                   resume=True)
            wall = time.perf_counter() - t0
            trials = analysis.trials
        elif args["mode"] == "load":
            t0 = time.perf_counter()
            state = store_mod.load_database(exp)
            wall = time.perf_counter() - t0
            trials = state["trials"]
        else:  # analysis: the read-only way to look at a finished experiment
            t0 = time.perf_counter()
            analysis = tunekit.ExperimentAnalysis(exp)
            trials = analysis.trials
            wall = time.perf_counter() - t0
        statuses = [t["status"] if isinstance(t, dict) else t.status for t in trials]
        return {"mode": args["mode"], "wall_s": wall, "import_s": t_import, "parts": parts,
                "trials": len(trials), "terminated": statuses.count("TERMINATED")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ray_init(temp_dir: str | None) -> float:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    kwargs: dict[str, Any] = dict(_node_ip_address="127.0.0.2", include_dashboard=False,
                                  num_cpus=2, log_to_driver=False)
    if temp_dir:
        kwargs["_temp_dir"] = temp_dir
    t0 = time.perf_counter()
    ray.init(**kwargs)
    return time.perf_counter() - t0


def _install_ray_probe(k: int, saves: list, probe: dict) -> None:
    """Time Ray's experiment checkpoints through its own code path.

    Every ``TuneController.save_to_dir`` call is recorded as (trials, seconds). At the final
    forced checkpoint (all trials finished), ``save_to_dir`` and ``checkpoint(force=True,
    wait=True)`` are each repeated ``k`` times on the live controller; ``probe`` gets their
    summaries and the size of the state file.
    """
    from ray.tune.execution.tune_controller import TuneController

    orig_save, orig_ckpt = TuneController.save_to_dir, TuneController.checkpoint

    def timed_save(self):
        t0 = time.perf_counter()
        try:
            return orig_save(self)
        finally:
            saves.append((len(self._trials), time.perf_counter() - t0))

    def checkpoint(self, force=False, wait=False):
        if force and not probe and self.is_finished():
            s, c = [], []
            for _ in range(k):
                t0 = time.perf_counter()
                orig_save(self)
                s.append(time.perf_counter() - t0)
            for _ in range(k):
                t0 = time.perf_counter()
                orig_ckpt(self, force=True, wait=True)
                c.append(time.perf_counter() - t0)
            probe.update(trials=len(self._trials), save_to_dir=summary(s),
                         checkpoint_force_wait=summary(c),
                         state_bytes=os.path.getsize(self.experiment_state_path))
        return orig_ckpt(self, force=force, wait=wait)

    TuneController.save_to_dir = timed_save
    TuneController.checkpoint = checkpoint


def worker_ray_run(args: dict) -> dict:
    """A real Ray Tune run of ``n`` one-result trials; its experiment checkpoints timed.

    Every ``TuneController.save_to_dir`` call is timed with the number of trials it saved.
    At the final forced checkpoint (all trials finished) ``save_to_dir`` and
    ``checkpoint(force=True, wait=True)`` are each repeated ``probe`` times on the live
    controller, through Ray's own code path.
    """
    global _report
    init_s = _ray_init(args.get("ray_temp_dir"))
    import ray
    from ray import tune

    _report = tune.report
    saves: list[tuple[int, float]] = []
    probe: dict[str, Any] = {}
    _install_ray_probe(args["probe"], saves, probe)
    storage, name = args["storage"], args["name"]
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(train_once, {"cpu": 1}),
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(num_samples=args["n"], reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage, name=name, verbose=0),
    )
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    n_ok = sum(1 for r in grid if r.error is None)
    ray.shutdown()
    in_run = [s for s in saves]
    return {"n": args["n"], "trials": len(grid), "terminated": n_ok, "wall_s": wall,
            "ray_init_s": init_s, "trials_per_s": len(grid) / wall, "probe": probe,
            "in_run_saves": in_run, "ray": ray.__version__}


def worker_ray_restore(args: dict) -> dict:
    """Tuner.restore(path, trainable) then fit() or get_results(), on a copy of the cache.

    ``mode`` "probe": fit() with Ray's final experiment checkpoint probed (see
    :func:`_install_ray_probe`): the save cost of a controller holding all the trials.
    """
    global _report
    init_s = _ray_init(args.get("ray_temp_dir"))
    import ray
    from ray import tune

    _report = tune.report
    saves: list[tuple[int, float]] = []
    probe: dict[str, Any] = {}
    if args["mode"] == "probe":  # fit() of the restored experiment, its final save probed
        _install_ray_probe(args["probe"], saves, probe)
    tmp = tempfile.mkdtemp(prefix="ray-rel-")
    try:
        exp = copy_experiment(Path(args["cache"]), tmp)
        t0 = time.perf_counter()
        tuner = tune.Tuner.restore(exp, trainable=tune.with_resources(train_once, {"cpu": 1}))
        restore_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        grid = tuner.get_results() if args["mode"] == "results" else tuner.fit()
        then_s = time.perf_counter() - t1
        wall = time.perf_counter() - t0
        n_ok = sum(1 for r in grid if r.error is None)
        n_iter = sum(int((r.metrics or {}).get("training_iteration", 0) or 0) for r in grid)
        ray.shutdown()
        return {"mode": args["mode"], "wall_s": wall, "restore_s": restore_s,
                "then_s": then_s, "ray_init_s": init_s, "trials": len(grid),
                "terminated": n_ok, "training_iterations": n_iter, "probe": probe}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def worker_tk_w4(args: dict) -> dict:
    """W4 with or without a Checkpoint.from_dict on every report."""
    import resource

    import tunekit

    tmp = tempfile.mkdtemp(prefix="tunekit-rel-")
    try:
        ru_self0 = resource.getrusage(resource.RUSAGE_SELF)
        ru_kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        analysis = tunekit.run(train_burn, config={"burn": 1.0, "every": 0.1,
                                                   "checkpoint": args["checkpoint"]},
                               num_samples=args["trials"], resources_per_trial={"cpu": 1},
                               verbose=0, local_dir=tmp, name="w4")
        wall = time.perf_counter() - t0
        ru_self1 = resource.getrusage(resource.RUSAGE_SELF)
        ru_kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU seconds (user + system): the driver, and the trial worker processes it reaped.
        # The trials burn 20 x 1.0 s; the rest is the framework's work (less sensitive to
        # other load on the machine than wall time).
        cpu_driver = (ru_self1.ru_utime + ru_self1.ru_stime) - (ru_self0.ru_utime + ru_self0.ru_stime)
        cpu_workers = (ru_kids1.ru_utime + ru_kids1.ru_stime) - (ru_kids0.ru_utime + ru_kids0.ru_stime)
        trials = analysis.trials
        with_ckpt = sum(1 for t in trials if t.checkpoint is not None)
        results = sum(int(t.last_result.get("training_iteration", 0)) for t in trials)
        ideal = args["trials"] * 1.0 / 2
        return {"checkpoint": args["checkpoint"], "wall_s": wall, "ideal_wall_s": ideal,
                "utilisation": ideal / wall, "trials": len(trials),
                "cpu_driver_s": cpu_driver, "cpu_workers_s": cpu_workers,
                "terminated": sum(1 for t in trials if t.status == "TERMINATED"),
                "results": results, "trials_with_checkpoint": with_ckpt}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


WORKERS = {
    "tk-save-micro": worker_tk_save_micro,
    "tk-save-e2e": worker_tk_save_e2e,
    "tk-resume": worker_tk_resume,
    "ray-run": worker_ray_run,
    "ray-restore": worker_ray_restore,
    "tk-w4": worker_tk_w4,
}


# ---------------------------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------------------------


def _tagged_pids(tag: str, marker: str | None) -> list[int]:
    """Processes (of this user) that carry BENCH_TAG=tag or the Ray temp dir on their cmdline."""
    me, found = os.getpid(), []
    needle = f"BENCH_TAG={tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0") or (marker and marker.encode() in cmd):
            found.append(int(entry))
    return found


def kill_leftovers(tag: str, marker: str | None) -> int:
    """Kill, by pid, what is left of one worker's run (Ray daemons); never by name."""
    pids = _tagged_pids(tag, marker)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + 5
        while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
        if not pids:
            break
    return len(pids)


class Runner:
    """Starts workers in fresh subprocesses and records the machine load around each."""

    def __init__(self, ray_python: str, log: list[str]):
        self.ray_python = ray_python
        self.log = log

    def call(self, worker: str, args: dict, *, ray: bool = False, timeout: float = 7200) -> dict:
        """Run one worker; a Ray worker whose ``ray.init`` timed out (an overloaded machine) is
        retried once, and the retry is recorded in the result."""
        r = self._call(worker, args, ray=ray, timeout=timeout)
        if ray and "error" in r and "timed out during startup" in r["error"]:
            self.say(f"  (ray.init timed out in {worker}; retrying once)")
            r = self._call(worker, args, ray=ray, timeout=timeout)
            r["retried_after_ray_init_timeout"] = True
        return r

    def _call(self, worker: str, args: dict, *, ray: bool, timeout: float) -> dict:
        tag = uuid.uuid4().hex[:10]
        marker = f"/tmp/rrel_{tag}" if ray else None
        if ray:
            args = dict(args, ray_temp_dir=marker)
        python = self.ray_python if ray else sys.executable
        env = dict(os.environ, BENCH_TAG=tag, PYTHONUNBUFFERED="1")
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled modules cached, as when installed
        env.setdefault("RAY_AUTH_MODE", "disabled")
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        cmd = [python, str(Path(__file__).resolve()), "_worker", worker, json.dumps(args)]
        load_before = os.getloadavg()[0]
        cpu_before = _cpu_times()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=str(ROOT), start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
            why = f"exit code {proc.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            why = f"timed out after {timeout:.0f} s"
        process_wall = time.perf_counter() - t0
        cpu_after = _cpu_times()
        load_after = os.getloadavg()[0]
        left = kill_leftovers(tag, marker)
        if marker:
            shutil.rmtree(marker, ignore_errors=True)
        result = None
        for line in out.splitlines():
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX):])
        if result is None:
            tail = "\n".join((out + "\n" + err).strip().splitlines()[-30:])
            return {"error": f"{worker} {json.dumps(args)}: {why}\n{tail}"}
        total = cpu_after[0] - cpu_before[0]
        idle = cpu_after[1] - cpu_before[1]
        result["machine_cpu_busy"] = (total - idle) / total if total > 0 else None
        result["loadavg_1m"] = [round(load_before, 2), round(load_after, 2)]
        result["process_wall_s"] = process_wall
        if left:
            result["leftovers_still_alive"] = left
        return result

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.log.append(line)


def _load(r: dict) -> str:
    la = r.get("loadavg_1m")
    busy = r.get("machine_cpu_busy")
    s = f"load {la[0]:.1f}->{la[1]:.1f}" if la else ""
    if busy is not None:
        s += f", CPU busy {busy * 100:.0f}%"
    return s


def _ms(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x * 1000:.2f} ms"


# -- part: save --------------------------------------------------------------------------------


def part_save(rn: Runner, opts: argparse.Namespace, fws: list[str]) -> dict:
    out: dict[str, Any] = {}
    small, large = opts.small, opts.large
    if "tunekit" in fws:
        rn.say(f"\n[save] tunekit StateStore.save: {opts.changed} changed trials + run-loop kv, "
               f"{opts.saves} saves per store, alternating {small}/{large}-trial stores")
        r = rn.call("tk-save-micro", {"sizes": [small, large], "saves": opts.saves,
                                      "changed": opts.changed})
        out["tunekit_micro"] = r
        if "error" in r:
            rn.say("  ERROR " + r["error"])
        else:
            for n in (small, large):
                s = r["saves"][str(n)]
                rn.say(f"  {n:>6} trials: median {_ms(s['median'])}, p95 {_ms(s['p95'])}, "
                       f"max {_ms(s['max'])}  (db {r['db_bytes'][str(n)] / 1e6:.1f} MB, "
                       f"60-s backup copy {_ms(r['backup_s'][str(n)])})")
            a, b = r["saves"][str(small)], r["saves"][str(large)]
            rn.say(f"  ratio {large}/{small}: median {b['median'] / a['median']:.2f}, "
                   f"p95 {b['p95'] / a['p95']:.2f}   [{_load(r)}]")
        rn.say(f"\n[save] tunekit run loop commits (RunLoop._maybe_save_state) during real "
               f"runs of {small} and {large} one-result trials")
        e2e = {}
        for n in (small, large):
            r = rn.call("tk-save-e2e", {"n": n})
            e2e[str(n)] = r
            if "error" in r:
                rn.say("  ERROR " + r["error"])
                continue
            c, late, early = r["commit_total"], r["late_total"], r["early_total"]
            rn.say(f"  run of {n:>6}: {r['commits']} commits, median {_ms(c['median'])}, "
                   f"p95 {_ms(c['p95'])} (store.save alone median "
                   f"{_ms(r['commit_store']['median'])}, searcher/scheduler save() "
                   f"{_ms(r['commit_plugin_state']['median'])}, flush hook and the rest "
                   f"{_ms(r['commit_rest']['median'])}); {r['dirty']['median']:.0f} trials "
                   f"changed per commit (median); run wall {r['wall_s']:.1f} s, commits "
                   f"{r['sum_commit_s']:.2f} s of it  [{_load(r)}]")
            rn.say(f"      commits while <=100 trials existed: median {_ms(early.get('median'))}"
                   f" (n={early['n']}); while >= {int(0.9 * n)} existed: median "
                   f"{_ms(late.get('median'))}, p95 {_ms(late.get('p95'))} (n={late['n']}); "
                   f"final forced save {_ms(r['final_total_s'])}")
        if all("error" not in e2e[str(n)] for n in (small, large)):
            a, b = e2e[str(small)]["commit_total"], e2e[str(large)]["commit_total"]
            rn.say(f"  ratio run-of-{large} / run-of-{small}: median "
                   f"{b['median'] / a['median']:.2f}, p95 {b['p95'] / a['p95']:.2f}")
        out["tunekit_e2e"] = e2e
    if "ray" in fws:
        rn.say(f"\n[save] Ray Tune experiment checkpoint (TuneController.save_to_dir / "
               f"checkpoint(force=True, wait=True)), repeated {opts.probe}x on the live "
               f"controller after all trials finished")
        ray_out: dict[str, Any] = {}
        for n in (small, large):
            created = ensure_ray_experiment(rn, n, opts)
            if "error" in created:
                rn.say("  ERROR " + created["error"])
                continue
            path = str(CACHE / f"ray_{n}" / "bench")
            r = rn.call("ray-restore", {"cache": path, "mode": "probe", "probe": opts.probe},
                        ray=True)
            ray_out[str(n)] = {"probe_run": r, "creation": created}
            if "error" in r:
                rn.say("  ERROR " + r["error"])
                continue
            p = r["probe"]
            near = [s for t, s in created["in_run_saves"] if t >= 0.9 * n]
            rn.say(f"  {n:>6} trials: save_to_dir median {_ms(p['save_to_dir']['median'])}, "
                   f"p95 {_ms(p['save_to_dir']['p95'])}; checkpoint(force, wait) median "
                   f"{_ms(p['checkpoint_force_wait']['median'])}; state file "
                   f"{p['state_bytes'] / 1e6:.1f} MB  [{_load(r)}]")
            rn.say(f"      during the run that created it ({created.get('created')}, "
                   f"{created['trials_per_s']:.1f} trials/s): {len(created['in_run_saves'])} "
                   f"saves, {len(near)} with >= {int(0.9 * n)} trials, median "
                   f"{_ms(statistics.median(near) if near else None)}")
        if all("error" not in ray_out.get(str(n), {}).get("probe_run", {"error": 1})
               for n in (small, large)):
            a = ray_out[str(small)]["probe_run"]["probe"]["save_to_dir"]
            b = ray_out[str(large)]["probe_run"]["probe"]["save_to_dir"]
            rn.say(f"  ratio {large}/{small}: median {b['median'] / a['median']:.1f}")
        out["ray"] = ray_out
    return out


def ensure_ray_experiment(rn: Runner, n: int, opts: argparse.Namespace) -> dict:
    """The cached Ray experiment of ``n`` trials (created once: minutes), with its run's figures."""
    base = CACHE / f"ray_{n}"
    meta = base / "meta.json"
    if meta.exists() and not opts.fresh_ray:
        r = json.loads(meta.read_text())
        r["cached_at"] = r.get("created", "?")
        return r
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    rn.say(f"  creating Ray Tune's {n}-trial experiment in {base} (reuse_actors=True; minutes)")
    r = rn.call("ray-run", {"n": n, "storage": str(base), "name": "bench",
                            "probe": opts.probe}, ray=True, timeout=4 * 3600)
    if "error" in r:
        return r
    r["created"] = time.strftime("%Y-%m-%d %H:%M:%S")
    r["uptime_at_creation"] = uptime_line()
    meta.write_text(json.dumps(r))
    return r


def ensure_tunekit_experiment(rn: Runner, n: int) -> dict:
    """The cached tunekit experiment of ``n`` finished one-result trials."""
    base = CACHE / f"tunekit_{n}"
    meta = base / "meta.json"
    if meta.exists():
        return json.loads(meta.read_text())
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    r = rn.call("tk-save-e2e", {"n": n, "local_dir": str(base), "name": "bench"})
    if "error" in r:
        return r
    r["created"] = time.strftime("%Y-%m-%d %H:%M:%S")
    meta.write_text(json.dumps(r))
    return r


# -- part: resume ------------------------------------------------------------------------------


def part_resume(rn: Runner, opts: argparse.Namespace, fws: list[str]) -> dict:
    n = opts.large
    out: dict[str, Any] = {}
    rn.say(f"\n[resume] experiments of {n} finished one-result trials, copied afresh before each "
           f"timed resume; {opts.repeats} repeats, frameworks alternating")
    caches = {}
    if "tunekit" in fws:
        caches["tunekit"] = ensure_tunekit_experiment(rn, n)
    if "ray" in fws:
        caches["ray"] = ensure_ray_experiment(rn, n, opts)
    for fw, c in caches.items():
        if "error" in c:
            rn.say(f"  ERROR creating the {fw} experiment: {c['error']}")
    runs: dict[str, list[dict]] = {k: [] for k in ("tk-run", "tk-load", "tk-analysis",
                                                   "ray-fit", "ray-results")}
    for i in range(opts.repeats):
        rn.say(f"  repeat {i + 1}/{opts.repeats} ({time.strftime('%H:%M:%S')}, "
               f"load {os.getloadavg()[0]:.1f})")
        if "tunekit" in caches and "error" not in caches["tunekit"]:
            path = str(CACHE / f"tunekit_{n}" / "bench")
            runs["tk-run"].append(rn.call("tk-resume", {"cache": path, "n": n, "mode": "run"}))
            runs["tk-load"].append(rn.call("tk-resume", {"cache": path, "n": n, "mode": "load"}))
            runs["tk-analysis"].append(rn.call("tk-resume", {"cache": path, "n": n,
                                                             "mode": "analysis"}))
        if "ray" in caches and "error" not in caches["ray"]:
            path = str(CACHE / f"ray_{n}" / "bench")
            runs["ray-fit"].append(rn.call("ray-restore", {"cache": path, "mode": "fit"},
                                           ray=True))
            runs["ray-results"].append(rn.call("ray-restore", {"cache": path, "mode": "results"},
                                               ray=True))
    labels = {
        "tk-run": "tunekit.run(resume=True), end to end",
        "tk-load": "tunekit load_database() alone",
        "tk-analysis": "tunekit ExperimentAnalysis(path)",
        "ray-fit": "Ray Tuner.restore(path, trainable).fit()",
        "ray-results": "Ray Tuner.restore(path, trainable).get_results()",
    }
    for key, rs in runs.items():
        if not rs:
            continue
        errs = [r["error"] for r in rs if "error" in r]
        good = [r for r in rs if "error" not in r]
        for e in errs:
            rn.say(f"  ERROR {labels[key]}: {e}")
        if not good:
            continue
        walls = [r["wall_s"] for r in good]
        extra = ""
        if key == "tk-run":
            parts = {k: statistics.median(r["parts"].get(k, 0.0) for r in good)
                     for k in good[0]["parts"]}
            extra = "; parts (median): " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
        if key.startswith("ray"):
            extra = (f"; Tuner.restore {statistics.median(r['restore_s'] for r in good):.2f} s, "
                     f"then {statistics.median(r['then_s'] for r in good):.2f} s; ray.init "
                     f"(not counted) {statistics.median(r['ray_init_s'] for r in good):.1f} s")
        checks = ", ".join(f"{r['terminated']}/{r['trials']}" for r in good)
        rn.say(f"  {labels[key]:52s} median {statistics.median(walls):.2f} s "
               f"(runs {', '.join(f'{w:.2f}' for w in walls)}); terminated/trials {checks}{extra}"
               f"  [{'; '.join(_load(r) for r in good)}]")
        out[key] = {"label": labels[key], "runs": rs, "median_s": statistics.median(walls)}
    out["caches"] = caches
    if "tk-run" in out and "ray-fit" in out:
        rn.say(f"  Ray fit / tunekit run: {out['ray-fit']['median_s'] / out['tk-run']['median_s']:.1f}x")
    return out


# -- part: checkpoint overhead ------------------------------------------------------------------


def part_checkpoint(rn: Runner, opts: argparse.Namespace, fws: list[str]) -> dict:
    if "tunekit" not in fws:
        return {}
    rn.say(f"\n[checkpoint-overhead] W4 (20 trials x 1.0 s CPU, report every 0.1 s, 2 at a "
           f"time), Checkpoint.from_dict on every report vs none, {opts.repeats} runs each, "
           f"alternating")
    runs: dict[str, list[dict]] = {"none": [], "every report": []}
    for _ in range(opts.repeats):
        for label, ck in (("none", False), ("every report", True)):
            r = rn.call("tk-w4", {"checkpoint": ck, "trials": 20})
            runs[label].append(r)
            if "error" in r:
                rn.say("  ERROR " + r["error"])
            else:
                rn.say(f"  {label:13s} wall {r['wall_s']:.2f} s, utilisation "
                       f"{r['utilisation']:.3f}, CPU driver {r['cpu_driver_s']:.2f} s + workers "
                       f"{r['cpu_workers_s']:.2f} s, {r['results']} results, "
                       f"{r['trials_with_checkpoint']}/{r['trials']} trials with a checkpoint  "
                       f"[{_load(r)}]")
    med: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for label, rs in runs.items():
        good = [r for r in rs if "error" not in r]
        if good:
            med[label] = statistics.median(r["wall_s"] for r in good)
            cpu[label] = statistics.median(r["cpu_driver_s"] + r["cpu_workers_s"] for r in good)
            rn.say(f"  {label:13s} median wall {med[label]:.2f} s, utilisation "
                   f"{10.0 / med[label]:.3f}; median CPU (driver + workers) {cpu[label]:.2f} s "
                   f"(20.0 s of it the trials' own burn)")
    if len(med) == 2:
        rn.say(f"  checkpoint overhead: {(med['every report'] / med['none'] - 1) * 100:+.1f}% "
               f"wall time; {cpu['every report'] - cpu['none']:+.2f} s CPU "
               f"({(cpu['every report'] - cpu['none']) / 200 * 1000:+.2f} ms per checkpoint)")
    return {"runs": runs, "median_wall_s": med, "median_cpu_s": cpu}


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        emit(WORKERS[argv[1]](json.loads(argv[2])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default=",".join(PARTS),
                        help="comma-separated subset of " + ",".join(PARTS))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help="comma-separated subset of " + ",".join(FRAMEWORKS))
    parser.add_argument("--large", type=int, default=10_000, help="trials in the large experiment")
    parser.add_argument("--small", type=int, default=100, help="trials in the small experiment")
    parser.add_argument("--saves", type=int, default=1000, help="StateStore.save calls per size")
    parser.add_argument("--changed", type=int, default=4, help="trials changed per save")
    parser.add_argument("--probe", type=int, default=10,
                        help="Ray: repeats of save_to_dir/checkpoint on the finished controller")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of resume and W4 runs")
    parser.add_argument("--ray-python", default=str(DEFAULT_RAY_PYTHON),
                        help="interpreter of the Ray benchmark venv")
    parser.add_argument("--fresh-ray", action="store_true",
                        help="recreate the cached Ray experiment instead of reusing it")
    parser.add_argument("--prepare", action="store_true",
                        help="only create the cached experiments (for --part resume) and exit")
    parser.add_argument("--json", dest="json_path", help="write every figure to this JSON file")
    opts = parser.parse_args(argv)
    parts = [p.strip() for p in opts.part.split(",") if p.strip()]
    fws = [f.strip() for f in opts.frameworks.split(",") if f.strip()]
    for p in parts:
        if p not in PARTS:
            parser.error(f"unknown part {p!r}; expected some of {', '.join(PARTS)}")
    for f in fws:
        if f not in FRAMEWORKS:
            parser.error(f"unknown framework {f!r}; expected some of {', '.join(FRAMEWORKS)}")
    if "ray" in fws and not Path(opts.ray_python).exists():
        parser.error(f"--ray-python {opts.ray_python} does not exist; create the Ray venv "
                     "(see benchmarks/README.md) or pass --frameworks tunekit")
    log: list[str] = []
    rn = Runner(opts.ray_python, log)
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "uptime_start": uptime_line(), "parts": {}, "argv": argv}
    rn.say(f"# {report['started']}  {report['uptime_start']}")
    if opts.prepare:
        if "tunekit" in fws:
            rn.say(json.dumps({k: v for k, v in ensure_tunekit_experiment(rn, opts.large).items()
                               if k != "in_run_saves"})[:2000])
        if "ray" in fws:
            rn.say(json.dumps({k: v for k, v in ensure_ray_experiment(rn, opts.large, opts).items()
                               if k != "in_run_saves"})[:2000])
        return 0
    funcs = {"save": part_save, "resume": part_resume, "checkpoint-overhead": part_checkpoint}
    for p in parts:
        report["parts"][p] = funcs[p](rn, opts, fws)
        if opts.json_path:
            report["log"] = log
            Path(opts.json_path).write_text(json.dumps(report, indent=1))
    report["uptime_end"] = uptime_line()
    rn.say(f"\n# done {time.strftime('%Y-%m-%d %H:%M:%S')}  {report['uptime_end']}")
    if opts.json_path:
        report["log"] = log
        Path(opts.json_path).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
