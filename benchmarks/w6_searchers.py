"""W6: model-based searchers side by side: the raw library, tunekit and Ray Tune.

For Optuna and for Hyperopt, ``--trials`` (200) trials of the same cheap 5-parameter
objective are run, once per seed (``--seeds``, 5), by

- ``raw``: the library alone (Optuna: ``study.optimize`` with ``TPESampler(seed)``;
  Hyperopt: ``fmin`` with ``tpe.suggest`` and ``rstate=default_rng(seed)``), in process;
- ``tunekit``: ``tunekit.run`` with ``OptunaSearch(seed=seed)`` /
  ``HyperOptSearch(random_state_seed=seed)``, 1 CPU per trial, 2 trials at a time;
- ``tunekit-driver``: the same with ``TUNEKIT_SEARCHER_PROCESS=0`` (the searcher computes
  in the driver instead of its own process), for comparison;
- ``ray``: Ray Tune's ``OptunaSearch``/``HyperOptSearch`` (same seeds) through
  ``Tuner.fit`` with ``reuse_actors=True``, 1 CPU per trial, 2 at a time;
- ``ray-default``: the same with Ray's default ``reuse_actors=False``.

Figures: trials per second over the run call (study creation + optimize / ``fmin`` /
``tunekit.run`` / ``Tuner`` + ``fit``; ``ray.init`` is not counted), and the best objective
found. ``raw``, ``tunekit`` and ``tunekit-driver`` run first, each seed's runs one after the
other, ``--repeats`` (3) times over; a seed's rate is the median of its repeats. Ray's runs
come after them (once per seed), because a Ray run's processes take seconds to exit.
Experiment directories go under ``--storage`` (default: the home directory), kept until the
end of the invocation. On ext4 without a journal (this VM's disk), start an invocation ~6
minutes after the last mass deletion in that directory (including the previous invocation's
own clean-up): creating files next to thousands freed in the last minutes costs up to ~1 ms of
kernel CPU each, which the driver pays per trial and raw Optuna does not. Targets: tunekit >= 0.8x
the raw library's trials/s and >= 3x Ray's best configuration; tunekit's best objective
indistinguishable from the raw library's.

Every (library, framework, seed) runs in a fresh subprocess of this script (``--worker``).
tunekit and raw runs use this interpreter (which needs tunekit with the tunekit-optuna and
tunekit-hyperopt plugins); Ray runs use ``--ray-python`` (default
``benchmarks/.venv-ray/bin/python``, which needs ``ray[tune]``, ``optuna`` and ``hyperopt``).
Ray is started bound to loopback with 2 CPUs and a per-run temp dir; whatever that run left
running is killed by pid afterwards (processes carrying the run's tag), as in ``run.py``.

Usage (from the repository root)::

    .venv/bin/python benchmarks/w6_searchers.py                       # everything
    .venv/bin/python benchmarks/w6_searchers.py --frameworks raw,tunekit --libraries optuna
    .venv/bin/python benchmarks/w6_searchers.py --ray-default-trials 40 --json w6.json
    .venv/bin/python benchmarks/w6_searchers.py --storage /dev/shm     # experiments on tmpfs
    .venv/bin/python benchmarks/w6_searchers.py --profile optuna      # cProfile of tunekit's driver
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
RESULT_PREFIX = "BENCH_RESULT "
LIBRARIES = ("optuna", "hyperopt")
FRAMEWORKS = ("raw", "tunekit", "tunekit-driver", "ray", "ray-default")
DEFAULT_RAY_PYTHON = HERE / ".venv-ray" / "bin" / "python"
RUN_TIMEOUT_S = 3600

# --------------------------------------------------------------------------------------------
# The objective: 5 parameters, minimum 0 at x=1, y=-2, lr=1e-3, n=4, act="relu".
# --------------------------------------------------------------------------------------------

ACT_PENALTY = {"relu": 0.0, "tanh": 0.5, "sigmoid": 1.0}


def objective(c: dict) -> float:
    return (
        (c["x"] - 1.0) ** 2
        + (c["y"] + 2.0) ** 2
        + (math.log10(c["lr"]) + 3.0) ** 2
        + 0.1 * (c["n"] - 4) ** 2
        + ACT_PENALTY[c["act"]]
    )


def tune_space(tune: Any) -> dict:
    """The space with tunekit's or Ray Tune's domain constructors (same signatures)."""
    return {
        "x": tune.uniform(-5.0, 5.0),
        "y": tune.uniform(-5.0, 5.0),
        "lr": tune.loguniform(1e-5, 1e-1),
        "n": tune.randint(1, 10),  # 1..9
        "act": tune.choice(["relu", "tanh", "sigmoid"]),
    }


# --------------------------------------------------------------------------------------------
# Worker side: one measurement
# --------------------------------------------------------------------------------------------


def run_raw_optuna(seed: int, trials: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def fn(trial: Any) -> float:
        return objective({
            "x": trial.suggest_float("x", -5.0, 5.0),
            "y": trial.suggest_float("y", -5.0, 5.0),
            "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
            "n": trial.suggest_int("n", 1, 9),
            "act": trial.suggest_categorical("act", ["relu", "tanh", "sigmoid"]),
        })

    t0 = time.perf_counter()
    study = optuna.create_study(direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(fn, n_trials=trials)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "trials": len(study.trials), "best": study.best_value}


def run_raw_hyperopt(seed: int, trials: int) -> dict:
    import numpy as np
    from hyperopt import Trials, fmin, hp, tpe

    space = {
        "x": hp.uniform("x", -5.0, 5.0),
        "y": hp.uniform("y", -5.0, 5.0),
        "lr": hp.loguniform("lr", math.log(1e-5), math.log(1e-1)),
        "n": hp.uniformint("n", 1, 9),
        "act": hp.choice("act", ["relu", "tanh", "sigmoid"]),
    }
    t0 = time.perf_counter()
    history = Trials()
    fmin(objective, space, algo=tpe.suggest, max_evals=trials, trials=history,
         rstate=np.random.default_rng(seed), show_progressbar=False)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "trials": len(history.trials), "best": min(history.losses())}


def _train_tunekit(config: dict) -> None:
    import tunekit

    tunekit.report({"loss": objective(config)})


def run_tunekit(library: str, seed: int, trials: int, profile: str | None) -> dict:
    import tunekit

    if library == "optuna":
        import optuna

        from tunekit.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        searcher: Any = OptunaSearch(seed=seed)
    else:
        from tunekit.search.hyperopt import HyperOptSearch

        searcher = HyperOptSearch(random_state_seed=seed)
    storage = tempfile.mkdtemp(prefix="tunekit-w6-", dir=os.environ.get("W6_STORAGE") or None)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    analysis = tunekit.run(
        _train_tunekit, config=tune_space(tunekit), search_alg=searcher, metric="loss",
        mode="min", num_samples=trials, max_concurrent_trials=2,
        resources_per_trial={"cpu": 1}, verbose=0, local_dir=storage,
    )
    wall = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    losses = [t.last_result["loss"] for t in analysis.trials if "loss" in t.last_result]
    if not os.environ.get("W6_STORAGE"):  # else the orchestrator removes it at the end
        shutil.rmtree(storage, ignore_errors=True)
    return {"wall_s": wall, "trials": len(analysis.trials), "completed": len(losses),
            "best": min(losses)}


def _train_ray(config: dict) -> None:
    from ray import tune

    tune.report({"loss": objective(config)})


def run_ray(library: str, seed: int, trials: int, reuse: bool, temp_dir: str | None) -> dict:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import tune

    if library == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        searcher: Any = OptunaSearch(seed=seed)
    else:
        from ray.tune.search.hyperopt import HyperOptSearch

        searcher = HyperOptSearch(random_state_seed=seed)
    init_kwargs: dict[str, Any] = dict(_node_ip_address="127.0.0.2", include_dashboard=False,
                                       num_cpus=2, log_to_driver=False)
    if temp_dir:
        init_kwargs["_temp_dir"] = temp_dir
    ray.init(**init_kwargs)
    storage = tempfile.mkdtemp(prefix="ray-w6-", dir=os.environ.get("W6_STORAGE") or None)
    try:
        t0 = time.perf_counter()
        tuner = tune.Tuner(
            tune.with_resources(_train_ray, {"cpu": 1}),
            param_space=tune_space(tune),
            tune_config=tune.TuneConfig(
                search_alg=searcher, metric="loss", mode="min", num_samples=trials,
                max_concurrent_trials=2, reuse_actors=reuse,
            ),
            run_config=tune.RunConfig(storage_path=storage, name="bench", verbose=0),
        )
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        losses = [r.metrics["loss"] for r in grid if r.error is None and r.metrics
                  and "loss" in r.metrics]
    finally:
        ray.shutdown()
        if not os.environ.get("W6_STORAGE"):
            shutil.rmtree(storage, ignore_errors=True)
    return {"wall_s": wall, "trials": len(grid), "completed": len(losses), "best": min(losses)}


def worker(args: argparse.Namespace) -> None:
    load_before = os.getloadavg()
    if args.framework == "raw":
        out = (run_raw_optuna if args.library == "optuna" else run_raw_hyperopt)(
            args.seed, args.trials)
    elif args.framework in ("tunekit", "tunekit-driver"):
        if args.framework == "tunekit-driver":
            os.environ["TUNEKIT_SEARCHER_PROCESS"] = "0"  # the searcher stays in the driver
        out = run_tunekit(args.library, args.seed, args.trials, args.profile_out)
    else:
        out = run_ray(args.library, args.seed, args.trials, args.framework == "ray",
                      args.ray_temp_dir)
    out.update(library=args.library, framework=args.framework, seed=args.seed,
               trials_per_s=out["trials"] / out["wall_s"], load_before=load_before,
               load_after=os.getloadavg())
    print(RESULT_PREFIX + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------
# Orchestrator side
# --------------------------------------------------------------------------------------------


def _tagged_pids(tag: str, marker: str | None) -> list[int]:
    """Processes whose environment carries the run's tag, or whose command line holds the
    run's Ray temp dir (read from /proc; no psutil needed)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            if marker and marker.encode() in cmdline:
                found.append(int(entry))
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if f"BENCH_TAG={tag}".encode() in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def kill_leftovers(tag: str, marker: str | None) -> int:
    """Terminate (then kill) every process still carrying the run's tag; return how many."""
    pids = _tagged_pids(tag, marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return len(pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def measure(library: str, framework: str, seed: int, trials: int, ray_python: str,
            profile_out: str | None = None, storage: str | None = None,
            extra_env: dict | None = None) -> dict:
    """One run in a fresh process; ``extra_env`` is added to its environment (w6_ab.py puts
    an older checkout first on ``PYTHONPATH``)."""
    tag = uuid.uuid4().hex[:10]
    is_ray = framework.startswith("ray")
    ray_tmp = f"/tmp/rbt_{tag}" if is_ray else None
    python = ray_python if is_ray else sys.executable
    cmd = [python, str(Path(__file__).resolve()), "--worker", "--library", library,
           "--framework", framework, "--seed", str(seed), "--trials", str(trials)]
    if ray_tmp:
        cmd += ["--ray-temp-dir", ray_tmp]
    if profile_out:
        cmd += ["--profile-out", profile_out]
    env = dict(os.environ, BENCH_TAG=tag, PYTHONUNBUFFERED="1", RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0")
    if storage:
        env["W6_STORAGE"] = storage
    env.update(extra_env or {})
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled modules cached, as when installed
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S,
                          start_new_session=True)
    if is_ray:
        kill_leftovers(tag, ray_tmp)
        _REMOVE_AT_END.append(ray_tmp)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(
        f"{library}/{framework}/seed {seed} failed (exit {proc.returncode}):\n"
        f"{proc.stderr[-4000:]}"
    )


def summarise(results: list[dict], libraries: list[str], frameworks: list[str]) -> list[str]:
    lines = []
    for library in libraries:
        lines.append(f"\n== {library} ==")
        lines.append(f"{'framework':<14} {'trials':>6} {'trials/s (median; per seed)':<44} "
                     f"{'best objective: mean ± sd (per seed)'}")
        rates: dict[str, float] = {}
        bests: dict[str, list[float]] = {}
        for fw in frameworks:
            runs = [r for r in results if r["library"] == library and r["framework"] == fw]
            if not runs:
                continue
            seeds = sorted({r["seed"] for r in runs})
            # per seed: the median rate over its repeats, the best objective of its first run
            seed_rates = [statistics.median(r["trials_per_s"] for r in runs if r["seed"] == s)
                          for s in seeds]
            rows = [min((r for r in runs if r["seed"] == s), key=lambda r: r.get("repeat", 0))
                    for s in seeds]
            rate = statistics.median(seed_rates)
            rates[fw] = rate
            best = [r["best"] for r in rows]
            bests[fw] = best
            per_seed = ", ".join(f"{x:.1f}" for x in seed_rates)
            sd = statistics.stdev(best) if len(best) > 1 else 0.0
            lines.append(
                f"{fw:<14} {rows[0]['trials']:>6} {rate:>8.1f}  ({per_seed}){'':<4} "
                f"{statistics.mean(best):.4f} ± {sd:.4f}  ({', '.join(f'{b:.4f}' for b in best)})"
            )
        if "tunekit" in rates and "raw" in rates:
            ratio = rates["tunekit"] / rates["raw"]
            lines.append(f"  tunekit / raw trials/s = {ratio:.2f}  (target >= 0.8: "
                         f"{'PASS' if ratio >= 0.8 else 'FAIL'})")
            paired = _paired_ratios(results, library, "tunekit", "raw")
            if paired:
                lines.append(
                    f"  paired: median of {len(paired)} tunekit/raw ratios of back-to-back runs "
                    f"(same seed and repeat) = {statistics.median(paired):.2f} "
                    f"(quartiles {_quartiles(paired)}; less sensitive to the machine's drift)")
        if "tunekit-driver" in rates and "raw" in rates:
            lines.append(f"  tunekit-driver / raw trials/s = "
                         f"{rates['tunekit-driver'] / rates['raw']:.2f} (searcher in the driver)")
        ray_rates = {fw: rates[fw] for fw in ("ray", "ray-default") if fw in rates}
        if "tunekit" in rates and ray_rates:
            best_fw = max(ray_rates, key=ray_rates.get)
            ratio = rates["tunekit"] / ray_rates[best_fw]
            lines.append(f"  tunekit / Ray's best ({best_fw}) trials/s = {ratio:.2f}  "
                         f"(target >= 3: {'PASS' if ratio >= 3 else 'FAIL'})")
        if "tunekit" in bests and "raw" in bests and len(bests["raw"]) > 1:
            lines.append("  best objective, tunekit vs raw: " + _compare(bests["tunekit"],
                                                                          bests["raw"]))
    return lines


def _paired_ratios(results: list[dict], library: str, a: str, b: str) -> list[float]:
    """rate(a) / rate(b) for each (seed, repeat) both ran, one right after the other."""
    rate = {(r["framework"], r["seed"], r.get("repeat", 0)): r["trials_per_s"]
            for r in results if r["library"] == library}
    return [rate[(a, seed, rep)] / rate[(b, seed, rep)]
            for (fw, seed, rep) in rate if fw == b and (a, seed, rep) in rate]


def _quartiles(values: list[float]) -> str:
    if len(values) < 4:
        return "n/a"
    q = statistics.quantiles(values, n=4)
    return f"{q[0]:.2f}-{q[2]:.2f}"


def _compare(a: list[float], b: list[float]) -> str:
    """Mean difference in units of the pooled standard error, and a rank-sum count."""
    ma, mb = statistics.mean(a), statistics.mean(b)
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    wins = sum((x < y) + 0.5 * (x == y) for x in a for y in b)
    return (f"difference of means {ma - mb:+.4f} = {((ma - mb) / se if se else 0):+.2f} "
            f"standard errors; tunekit better in {wins:g} of {len(a) * len(b)} pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--library", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--framework", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ray-temp-dir", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help="subset of raw,tunekit,tunekit-driver,ray,ray-default")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per seed of raw, tunekit and tunekit-driver (their rate per "
                             "seed is the median; Ray's are run once per seed)")
    parser.add_argument("--ray-default-trials", type=int, default=None,
                        help="trials for ray-default (about 1 trial/s; default --trials). With "
                             "fewer, its rate is trials / wall and its best objective is not "
                             "comparable")
    parser.add_argument("--ray-default-seeds", type=int, default=None,
                        help="seeds for ray-default (default --seeds)")
    parser.add_argument("--storage", default=None,
                        help="directory under which the runs' experiment directories go (default: "
                             "your home directory, as both frameworks' default result folders "
                             "are); one scratch folder for the invocation, removed at its end")
    parser.add_argument("--ray-python", default=str(DEFAULT_RAY_PYTHON))
    parser.add_argument("--profile", choices=LIBRARIES,
                        help="run tunekit once (seed 0) under cProfile and print the top of it")
    parser.add_argument("--json", help="write all figures to this file")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    if args.profile:
        path = tempfile.mktemp(suffix=".prof")
        out = measure(args.profile, "tunekit", 0, args.trials, args.ray_python, path,
                      storage=args.storage)
        print(f"tunekit + {args.profile}: {out['trials_per_s']:.1f} trials/s under cProfile")
        import pstats

        stats = pstats.Stats(path)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        return

    libraries = [x for x in args.libraries.split(",") if x]
    frameworks = [x for x in args.frameworks.split(",") if x]
    for x in libraries:
        if x not in LIBRARIES:
            parser.error(f"unknown library {x!r}")
    for x in frameworks:
        if x not in FRAMEWORKS:
            parser.error(f"unknown framework {x!r}")
    # Nothing is deleted between runs: on a file system that delays reusing recently freed
    # inodes (ext4 without a journal, as on the VM of the published figures), creating files
    # right after thousands were deleted nearby costs up to a millisecond each.
    scratch = tempfile.mkdtemp(prefix=".w6-scratch-", dir=args.storage or os.path.expanduser("~"))
    try:
        _run_plan(args, libraries, frameworks, scratch)
    finally:
        for path in [scratch, *_REMOVE_AT_END]:
            shutil.rmtree(path, ignore_errors=True)


_REMOVE_AT_END: list[str] = []


def _run_plan(args: argparse.Namespace, libraries: list[str], frameworks: list[str],
              scratch: str) -> None:
    results: list[dict] = []
    started = time.time()
    print(f"W6: {args.trials} trials x {args.seeds} seeds x {args.repeats} repeats (Ray: 1); "
          f"{os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()}", flush=True)
    # The in-process frameworks first (each seed's runs interleaved, --repeats times), then
    # Ray's: a Ray run's processes take seconds to exit after it, which would land in the
    # measurements that follow it.
    plan = []
    for repeat in range(args.repeats):
        for library in libraries:
            for seed in range(args.seeds):
                plan += [(library, fw, seed, args.trials, repeat) for fw in frameworks
                         if not fw.startswith("ray")]
    for library in libraries:
        for seed in range(args.seeds):
            if "ray" in frameworks:
                plan.append((library, "ray", seed, args.trials, 0))
            if "ray-default" in frameworks and seed < (args.ray_default_seeds or args.seeds):
                plan.append((library, "ray-default", seed, args.ray_default_trials or args.trials, 0))
    for library, fw, seed, trials, repeat in plan:
        out = measure(library, fw, seed, trials, args.ray_python, storage=scratch)
        out["repeat"] = repeat
        results.append(out)
        print(f"  {library:<8} {fw:<14} seed {seed} #{repeat}: {out['trials']} trials, "
              f"{out['trials_per_s']:7.1f} trials/s, best {out['best']:.4f} "
              f"(load {out['load_before'][0]:.1f} -> {out['load_after'][0]:.1f})",
              flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"results": results}, indent=1))
    lines = summarise(results, libraries, frameworks)
    print("\n".join(lines))
    print(f"\n(total {time.time() - started:.0f} s; load average now {os.getloadavg()})")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "summary": lines}, indent=1))


if __name__ == "__main__":
    main()
