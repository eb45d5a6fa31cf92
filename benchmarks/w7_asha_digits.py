"""W7: ASHA on a real task, tunekit side by side with Ray Tune.

The task: sklearn's ``SGDClassifier`` on the bundled digits data set, one epoch
(``partial_fit``) per training iteration, at most 30 epochs, 40 trials. Both
frameworks get the same 40 configurations in the same order (drawn from the seed,
not by the frameworks' samplers), the same data split and model seeds, ASHA with
``max_t=30, grace_period=1, reduction_factor=4`` on ``mean_accuracy`` (max), 2 CPUs
and 1 CPU per trial. Three seeds by default.

Reported per framework and seed: the best validation accuracy (the best trial's last
result), the total epochs trained (sum of every trial's last ``training_iteration``; and
the epochs actually computed, counted by the trainable, which includes epochs a trial ran
ahead of a stop decision), and
the wall time of the run call (``tunekit.run``; for Ray building the ``Tuner`` and
``fit()``, after ``ray.init``). Ray Tune runs twice: ``ray`` (``reuse_actors=True``, its
best configuration) and ``ray-default`` (``reuse_actors=False``).

Usage (from the repository root)::

    python benchmarks/w7_asha_digits.py [--frameworks tunekit,ray,ray-default]
        [--seeds 0,1,2] [--trials 40] [--json out.json]

Every (framework, seed) runs in a fresh subprocess: the tunekit side with the project's
interpreter (``.venv/bin/python`` unless ``--tunekit-python``), the Ray side with the Ray
benchmark environment (``benchmarks/.venv-ray/bin/python`` unless ``--ray-python``), which
needs scikit-learn. After each Ray run, processes still alive that belong to it (its tag in
their environment or its Ray temp dir on their command line) are killed by pid, and its
temp dir removed. Run it on a quiet machine; the load average is recorded.
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
RESULT_PREFIX = "BENCH_RESULT "
FRAMEWORKS = ("tunekit", "ray", "ray-default")
MAX_EPOCHS = 30
GRACE_PERIOD = 1
REDUCTION_FACTOR = 4
METRIC = "mean_accuracy"

# -------------------------------------------------------------------------------------------
# The task (the same code runs in both frameworks' trials)
# -------------------------------------------------------------------------------------------

_DATA: dict[int, dict] = {}


def trial_params(seed: int, index: int) -> dict[str, Any]:
    """The hyperparameters of trial ``index`` for ``seed`` (independent of any framework)."""
    rng = random.Random(seed * 100_003 + index)
    return {
        "loss": rng.choice(["hinge", "log_loss", "modified_huber"]),
        "alpha": 10 ** rng.uniform(-6, -2),
        "eta0": 10 ** rng.uniform(-4, 0),
    }


def _data(seed: int) -> dict:
    if seed not in _DATA:
        import numpy as np
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        order = np.random.RandomState(seed).permutation(len(y))
        x, y = x[order] / 16.0, y[order]
        cut = int(0.75 * len(y))
        _DATA[seed] = {"x_train": x[:cut], "y_train": y[:cut], "x_val": x[cut:], "y_val": y[cut:]}
    return _DATA[seed]


def train(config: dict) -> None:
    """One epoch of SGD per iteration, reporting the validation accuracy."""
    import numpy as np
    from sklearn.linear_model import SGDClassifier

    if config["framework"] == "tunekit":
        from tunekit import report
    else:
        from ray.tune import report
    seed = config["seed"]
    data = _data(seed)
    params = trial_params(seed, config["index"])
    model = SGDClassifier(loss=params["loss"], alpha=params["alpha"], learning_rate="constant",
                          eta0=params["eta0"], random_state=seed)
    classes = np.arange(10)
    # one byte per epoch actually computed: trials that run ahead of the driver's decision
    # compute epochs that never show up in their results
    counter = os.open(config["counter"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for epoch in range(1, MAX_EPOCHS + 1):
            order = np.random.RandomState(seed * 1000 + epoch).permutation(len(data["y_train"]))
            model.partial_fit(data["x_train"][order], data["y_train"][order], classes=classes)
            os.write(counter, b".")
            report({METRIC: float(model.score(data["x_val"], data["y_val"])), "epoch": epoch})
    finally:
        os.close(counter)


# -------------------------------------------------------------------------------------------
# One run (in a fresh subprocess)
# -------------------------------------------------------------------------------------------


def run_tunekit(seed: int, trials: int, cpus: int) -> dict[str, Any]:
    os.environ["TUNEKIT_NUM_CPUS"] = str(cpus)
    import tunekit
    from tunekit.schedulers import ASHAScheduler

    storage = tempfile.mkdtemp(prefix="w7-tunekit-")
    counter = os.path.join(storage, "epochs.count")
    try:
        t0 = time.perf_counter()
        analysis = tunekit.run(
            train,
            config={"index": tunekit.grid_search(list(range(trials))), "seed": seed,
                    "framework": "tunekit", "counter": counter},
            metric=METRIC,
            mode="max",
            scheduler=ASHAScheduler(max_t=MAX_EPOCHS, grace_period=GRACE_PERIOD,
                                    reduction_factor=REDUCTION_FACTOR),
            resources_per_trial={"cpu": 1},
            local_dir=storage,
            verbose=0,
        )
        wall = time.perf_counter() - t0
        finals = [(t.last_result.get(METRIC), t.last_result.get("training_iteration", 0),
                   t.status == "TERMINATED") for t in analysis.trials]
        computed = _count(counter)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    return _summary(finals, wall, computed)


def run_ray(seed: int, trials: int, cpus: int, reuse_actors: bool,
            temp_dir: str | None) -> dict[str, Any]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    init: dict[str, Any] = dict(_node_ip_address="127.0.0.2", include_dashboard=False,
                                num_cpus=cpus, log_to_driver=False)
    if temp_dir:
        init["_temp_dir"] = temp_dir
    ray.init(**init)
    storage = tempfile.mkdtemp(prefix="w7-ray-")
    counter = os.path.join(storage, "epochs.count")
    try:
        t0 = time.perf_counter()
        tuner = tune.Tuner(
            tune.with_resources(train, {"cpu": 1}),
            param_space={"index": tune.grid_search(list(range(trials))), "seed": seed,
                         "framework": "ray", "counter": counter},
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode="max",
                scheduler=ASHAScheduler(max_t=MAX_EPOCHS, grace_period=GRACE_PERIOD,
                                        reduction_factor=REDUCTION_FACTOR),
                num_samples=1,
                reuse_actors=reuse_actors,
            ),
            run_config=tune.RunConfig(storage_path=storage, name="w7", verbose=0),
        )
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        finals = [((r.metrics or {}).get(METRIC), (r.metrics or {}).get("training_iteration", 0),
                   r.error is None) for r in grid]
        computed = _count(counter)
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    return _summary(finals, wall, computed)


def _count(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _summary(finals: list[tuple[Any, int, bool]], wall: float, computed: int) -> dict[str, Any]:
    accuracies = [acc for acc, _, _ in finals if acc is not None]
    epochs = [int(n or 0) for _, n, _ in finals]
    return {
        "wall_s": wall,
        "best_accuracy": max(accuracies) if accuracies else None,
        "total_epochs": sum(epochs),
        "epochs_computed": computed,
        "trials": len(finals),
        "completed": sum(1 for *_, ok in finals if ok),
        "epochs_histogram": {str(k): epochs.count(k) for k in sorted(set(epochs))},
    }


def worker_main(args: argparse.Namespace) -> None:
    if args.run == "tunekit":
        out = run_tunekit(args.seed, args.trials, args.cpus)
    else:
        out = run_ray(args.seed, args.trials, args.cpus, args.run == "ray", args.ray_temp_dir)
    out.update(framework=args.run, seed=args.seed)
    print(RESULT_PREFIX + json.dumps(out), flush=True)


# -------------------------------------------------------------------------------------------
# The harness
# -------------------------------------------------------------------------------------------


def _proc_belongs(pid: int, tag: str, marker: str | None) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
        if marker and marker in cmdline:
            return True
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"BENCH_TAG={tag}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def kill_leftovers(tag: str, marker: str | None) -> int:
    """Kill, by pid, processes still alive that carry this run's tag or Ray temp dir."""
    me = os.getpid()
    victims = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me and _proc_belongs(int(name), tag, marker):
            victims.append(int(name))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in victims:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if sig == signal.SIGTERM and victims:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in victims):
                time.sleep(0.1)
    return len(victims)


def _interpreter(framework: str, args: argparse.Namespace) -> str:
    if framework == "tunekit":
        return args.tunekit_python
    return args.ray_python


def run_one(framework: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    ray_tmp = f"/tmp/rbt_{tag}" if framework != "tunekit" else None
    env = dict(os.environ, BENCH_TAG=tag, PYTHONUNBUFFERED="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled modules cached, as when installed
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cmd = [_interpreter(framework, args), str(Path(__file__).resolve()), "--run", framework,
           "--seed", str(seed), "--trials", str(args.trials), "--cpus", str(args.cpus)]
    if ray_tmp:
        cmd += ["--ray-temp-dir", ray_tmp]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True, cwd=str(ROOT))
    try:
        stdout, stderr = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    process_wall = time.perf_counter() - t0
    killed = kill_leftovers(tag, ray_tmp)
    if ray_tmp:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
            result["process_wall_s"] = process_wall
            result["leftover_processes_killed"] = killed
            return result
    tail = "\n".join((stdout + "\n" + stderr).strip().splitlines()[-25:])
    return {"framework": framework, "seed": seed, "error": f"exit code {proc.returncode}\n{tail}"}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(results: list[dict[str, Any]], frameworks: list[str], seeds: list[int]) -> str:
    by = {(r["framework"], r["seed"]): r for r in results}
    lines = ["| framework | seed | best val. accuracy | total epochs (reported) |"
             " epochs computed | wall time (s) |",
             "|---|---|---|---|---|---|"]
    for fw in frameworks:
        for seed in seeds:
            r = by.get((fw, seed), {})
            if "error" in r:
                lines.append(f"| {fw} | {seed} | error | error | error | error |")
                continue
            lines.append(f"| {fw} | {seed} | {_fmt(r.get('best_accuracy'), 4)} | "
                         f"{_fmt(r.get('total_epochs'))} | {_fmt(r.get('epochs_computed'))} | "
                         f"{_fmt(r.get('wall_s'), 1)} |")
    lines += ["", "| framework | mean best accuracy | mean total epochs | mean wall (s) |"
              " tunekit wall / this | tunekit epochs / this | tunekit acc. - this |",
              "|---|---|---|---|---|---|---|"]
    means: dict[str, dict[str, float]] = {}
    for fw in frameworks:
        ok = [by[(fw, s)] for s in seeds if (fw, s) in by and "error" not in by[(fw, s)]]
        if len(ok) != len(seeds):
            continue
        means[fw] = {
            "acc": statistics.mean(r["best_accuracy"] for r in ok),
            "epochs": statistics.mean(r["total_epochs"] for r in ok),
            "wall": statistics.mean(r["wall_s"] for r in ok),
        }
    tk = means.get("tunekit")
    for fw in frameworks:
        m = means.get(fw)
        if m is None:
            lines.append(f"| {fw} | - | - | - | - | - | - |")
            continue
        ratios = ["-", "-", "-"]
        if tk is not None:
            ratios = [f"{tk['wall'] / m['wall']:.2f}", f"{tk['epochs'] / m['epochs']:.2f}",
                      f"{tk['acc'] - m['acc']:+.4f}"]
        lines.append(f"| {fw} | {m['acc']:.4f} | {m['epochs']:.1f} | {m['wall']:.1f} | "
                     + " | ".join(ratios) + " |")
    return "\n".join(lines)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def harness_main(args: argparse.Namespace) -> int:
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown:
        print(f"unknown framework(s) {unknown}; choose from {', '.join(FRAMEWORKS)}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    report: dict[str, Any] = {
        "workload": "W7 ASHA on digits",
        "trials": args.trials, "max_epochs": MAX_EPOCHS, "cpus": args.cpus,
        "asha": {"max_t": MAX_EPOCHS, "grace_period": GRACE_PERIOD,
                 "reduction_factor": REDUCTION_FACTOR},
        "load_before": _load(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu_count": os.cpu_count(), "results": [],
    }
    print(f"# W7: {args.trials} trials, max {MAX_EPOCHS} epochs, seeds {seeds}, "
          f"load average {report['load_before']}", flush=True)
    for seed in seeds:
        for fw in frameworks:
            result = run_one(fw, seed, args)
            result["load_after"] = _load()
            report["results"].append(result)
            if "error" in result:
                print(f"{fw} seed {seed}: ERROR {result['error']}", flush=True)
            else:
                print(f"{fw} seed {seed}: best {result['best_accuracy']:.4f}, "
                      f"{result['total_epochs']} epochs ({result['epochs_computed']} computed), "
                      f"{result['wall_s']:.1f} s "
                      f"(load {result['load_after']})", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=2))
    report["load_after"] = _load()
    print()
    print(table(report["results"], frameworks, seeds))
    print(f"\nload average before: {report['load_before']}, after: {report['load_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 1 if any("error" in r for r in report["results"]) else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help="comma-separated subset of tunekit,ray,ray-default")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--timeout", type=float, default=1800, help="per run, seconds")
    default_tk = sys.executable
    try:
        import tunekit_hyperband  # noqa: F401
    except ImportError:
        default_tk = str(ROOT / ".venv" / "bin" / "python")
    parser.add_argument("--tunekit-python", default=default_tk)
    parser.add_argument("--ray-python", default=str(HERE / ".venv-ray" / "bin" / "python"))
    # internal: one run in this process
    parser.add_argument("--run", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ray-temp-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run:
        worker_main(args)
        return 0
    return harness_main(args)


if __name__ == "__main__":
    sys.exit(main())
