"""tunekit's Ray executor against Ray Tune, on the same local Ray cluster.

W2 (trial throughput: 500 one-result trials, 1 CPU each, 2 at a time) and W4
(utilisation: 20 trials that each burn 1.0 s of CPU, reporting every 0.1 s of CPU,
2 at a time) run against ONE Ray cluster started once for the whole benchmark: a
head node with 2 CPUs on loopback (127.0.0.2), started with the ``ray`` command
line by :class:`tunekit_ray.cluster.LoopbackCluster` and stopped by pid at the end.
Every measurement is a fresh driver process connected to it with ``RAY_ADDRESS``:

- ``tunekit-ray``: ``tunekit.run(..., trial_executor="ray")`` (this repository's
  environment, which must have ``tunekit-ray`` installed);
- ``ray``: Ray Tune's Tuner API with ``reuse_actors=True`` (its best configuration);
- ``ray-default``: Ray Tune with its default ``reuse_actors=False``;
- ``tunekit-local`` (reference): tunekit's local executor, not using Ray.

The Ray Tune side runs in the Ray Tune environment (``--ray-python``, default
``benchmarks/.venv-ray/bin/python``, made with
``UV_PROJECT_ENVIRONMENT=benchmarks/.venv-ray uv sync --all-extras --group bench``).
The cluster's nodes are started from that environment too (``ray[tune]``: Ray
Tune's trial actors import it), so it also needs the plugin for tunekit's actors:
``uv pip install --python benchmarks/.venv-ray/bin/python -e plugins/tunekit-ray``.
Both environments have Ray 2.60.0 and Python 3.11, so both drivers join the same
cluster.
Only the run call is timed (``tunekit.run`` / building the Tuner and ``fit()``),
after ``ray.init``.

Usage::

    uv run python benchmarks/ray_executor.py                       # everything
    uv run python benchmarks/ray_executor.py --workloads W2 --frameworks tunekit-ray,ray
    uv run python benchmarks/ray_executor.py --json benchmarks/results/ray_executor.json

Ray Tune's default configuration starts an actor per trial (about 0.4 trials/s
here), so W2 runs it with ``--ray-default-w2-trials`` trials (default 50) and
reports the rate over those; the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = "BENCH_RESULT "
FRAMEWORKS = ("tunekit-ray", "ray", "ray-default", "tunekit-local")
BURN_S = 1.0
EVERY_S = 0.1


# -- the child: one measurement in a fresh driver process ------------------------------------
def _w2_train_factory(report):
    def train(config):
        report({"score": config["x"]})

    return train


def _w4_train_factory(report):
    def train(config):
        burn, every = config["burn"], config["every"]
        start = time.process_time()
        next_report = every
        while True:
            used = time.process_time() - start
            if used >= next_report - 1e-9:
                report({"cpu_used": used})
                if used >= burn - 1e-9:
                    return
                next_report += every

    return train


def child(workload: str, framework: str, trials: int) -> dict:
    storage = tempfile.mkdtemp(prefix="tunekit-raybench-")
    if framework != "tunekit-local":
        import ray

        ray.init(address=os.environ["RAY_ADDRESS"], _node_ip_address="127.0.0.2", log_to_driver=False)
    if framework.startswith("tunekit"):
        import tunekit as module

        report = module.report
    else:
        from ray import tune as module

        report = module.report
    if workload == "W2":
        train = _w2_train_factory(report)
        config = {"x": module.uniform(0.0, 1.0)}
    else:
        train = _w4_train_factory(report)
        config = {"burn": BURN_S, "every": EVERY_S}
    if framework.startswith("tunekit"):
        import tunekit

        t0 = time.perf_counter()
        analysis = tunekit.run(
            train,
            config=config,
            num_samples=trials,
            resources_per_trial={"cpu": 1},
            verbose=0,
            local_dir=storage,
            trial_executor="ray" if framework == "tunekit-ray" else None,
        )
        wall = time.perf_counter() - t0
        done = sum(1 for t in analysis.trials if t.status == "TERMINATED")
        results = sum(int(t.last_result.get("training_iteration", 0) or 0) for t in analysis.trials)
        count = len(analysis.trials)
    else:
        from ray import tune

        t0 = time.perf_counter()
        tuner = tune.Tuner(
            tune.with_resources(train, {"cpu": 1}),
            param_space=config,
            tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=(framework == "ray")),
            run_config=tune.RunConfig(storage_path=storage, name="bench", verbose=0),
        )
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        done = sum(1 for r in grid if r.error is None)
        results = sum(int((r.metrics or {}).get("training_iteration", 0) or 0) for r in grid)
        count = len(grid)
    import shutil

    shutil.rmtree(storage, ignore_errors=True)
    return {"wall_s": wall, "trials": count, "terminated": done, "results": results}


# -- the parent: the cluster and the table -----------------------------------------------------
def measure(workload: str, framework: str, trials: int, python: str, address: str) -> dict:
    # RAY_ENABLE_UV_RUN_RUNTIME_ENV=0: under `uv run`, Ray would start every worker through
    # `uv run` in a copy of the working directory; the nodes already have the environment.
    env = dict(
        os.environ, RAY_ADDRESS=address, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled modules cached, as when installed
    if framework == "tunekit-local":
        env.pop("RAY_ADDRESS")
        env["TUNEKIT_NUM_CPUS"] = "2"
    command = [python, os.path.abspath(__file__), "--child", workload, framework, str(trials)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            command, env=env, capture_output=True, text=True,
            timeout=1800,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{framework} {workload} did not finish within 30 minutes") from exc
    elapsed = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(PREFIX):
            out = json.loads(line[len(PREFIX):])
            out["process_s"] = elapsed
            return out
    raise RuntimeError(
        f"{framework} {workload} printed no result (exit {proc.returncode}):\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("WORKLOAD", "FRAMEWORK", "TRIALS"))
    parser.add_argument("--workloads", default="W2,W4")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--ray-python", default=os.path.join(HERE, ".venv-ray", "bin", "python"))
    parser.add_argument("--w2-trials", type=int, default=500)
    parser.add_argument("--ray-default-w2-trials", type=int, default=50)
    parser.add_argument("--w4-trials", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure (the best is kept)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.child:
        workload, framework, trials = args.child
        print(PREFIX + json.dumps(child(workload, framework, int(trials))), flush=True)
        return

    from tunekit_ray.cluster import LoopbackCluster

    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = [f for f in frameworks if f not in FRAMEWORKS]
    if unknown:
        parser.error(f"unknown frameworks {unknown}; choose from {', '.join(FRAMEWORKS)}")
    if any(f.startswith("ray") for f in frameworks) and not os.path.exists(args.ray_python):
        parser.error(
            f"{args.ray_python} does not exist: create the Ray Tune environment with "
            "`UV_PROJECT_ENVIRONMENT=benchmarks/.venv-ray uv sync --all-extras --group bench` "
            "or pass --ray-python."
        )
    ray_cli = os.path.join(os.path.dirname(args.ray_python), "ray")
    check = subprocess.run(
        [args.ray_python, "-c", "import tunekit_ray, ray.tune"], capture_output=True, text=True
    )
    if check.returncode != 0:
        parser.error(
            f"{args.ray_python} cannot import tunekit_ray and ray.tune, which the cluster's "
            "workers need. Install the plugin there: uv pip install --python "
            f"{args.ray_python} -e plugins/tunekit-ray\n{check.stderr[-1000:]}"
        )
    cluster = LoopbackCluster(ray_cli=ray_cli)
    figures: dict = {"cpus": 2, "machine_cpus": os.cpu_count(), "runs": {}}
    try:
        t0 = time.perf_counter()
        address = cluster.start_head("127.0.0.2", num_cpus=2)
        print(f"Ray cluster at {address} (2 CPUs) started in {time.perf_counter() - t0:.0f} s", flush=True)
        for workload in workloads:
            print(f"\n{workload}: " + (
                f"trial throughput ({args.w2_trials} one-result trials, 1 CPU each, 2 at a time)"
                if workload == "W2" else
                f"utilisation ({args.w4_trials} trials x {BURN_S} s of CPU, reporting every "
                f"{EVERY_S} s, 2 at a time; ideal {args.w4_trials * BURN_S / 2:.1f} s)"
            ), flush=True)
            for framework in frameworks:
                trials = args.w2_trials if workload == "W2" else args.w4_trials
                if workload == "W2" and framework == "ray-default":
                    trials = min(trials, args.ray_default_w2_trials)
                python = args.ray_python if framework.startswith("ray") else sys.executable
                best = None
                for _ in range(max(1, args.repeat)):
                    out = measure(workload, framework, trials, python, address)
                    if best is None or out["wall_s"] < best["wall_s"]:
                        best = out
                out = best
                if workload == "W2":
                    out["trials_per_s"] = out["trials"] / out["wall_s"]
                    line = f"{out['trials_per_s']:7.1f} trials/s  ({out['trials']} trials in {out['wall_s']:.1f} s)"
                else:
                    out["ideal_wall_s"] = trials * BURN_S / 2
                    out["utilisation"] = out["ideal_wall_s"] / out["wall_s"]
                    line = f"{out['utilisation']:6.3f}  ({out['wall_s']:.2f} s for {out['trials']} trials)"
                if out["terminated"] != out["trials"]:
                    line += f"  [{out['trials'] - out['terminated']} trials did not finish]"
                print(f"  {framework:14s} {line}", flush=True)
                figures["runs"][f"{workload}/{framework}"] = out
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump(figures, f, indent=2)
            runs = figures["runs"]
            ours = runs.get(f"{workload}/tunekit-ray")
            if ours:
                key = "trials_per_s" if workload == "W2" else "utilisation"
                for other in ("ray", "ray-default"):
                    theirs = runs.get(f"{workload}/{other}")
                    if theirs:
                        ratio = ours[key] / theirs[key]
                        print(f"  tunekit-ray / {other}: {ratio:.2f}x  ({'PASS' if ratio >= 1 else 'FAIL'}: target >= 1)")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
