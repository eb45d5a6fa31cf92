"""The Tuner API's overhead: W1-W4 through ``tunekit.Tuner`` against ``tunekit.run``.

Usage (from the repository root)::

    uv run python benchmarks/tuner_overhead.py [--workloads W1,W2,W3,W4] [--repeats N] [--json PATH]

The workloads are those of ``benchmarks/workloads/`` (same trainables, same sizes as
``benchmarks/run.py`` uses for tunekit): each is run through both APIs in the same
invocation, **interleaved** (repeat 1: run then Tuner, repeat 2: Tuner then run, ...),
every measurement in a fresh subprocess. The ``run`` side is exactly what the harness
measures for tunekit (``tunekit.run(train, config=..., num_samples=...,
resources_per_trial={"cpu": 1}, verbose=0, local_dir=<tmp>)``); the Tuner side is what a
Ray Tune 2.x script writes (``Tuner(with_resources(train, {"cpu": 1}), param_space=...,
tune_config=TuneConfig(num_samples=...), run_config=RunConfig(storage_path=<tmp>,
name="bench", verbose=0)).fit()``). Timed: the call (building the Tuner plus ``fit()``),
except W1, which times the whole process (import, one trial, exit) from outside.

The figure is the median wall time per API and their ratio; the target is the Tuner within
5% of ``run`` (ratio <= 1.05). Also given: the CPU time of each measurement's whole process tree (driver
and workers), which other load on the machine disturbs far less than wall time. Machine load
(1-minute load average, and how busy all CPUs were while each workload ran) is printed with
every line: on a busy machine the spread between repeats says how far the medians can be
trusted. The children share a bytecode cache (in a temporary directory, warmed up before the
first measurement), as a pip-installed package has; ``--no-bytecode-cache`` compiles every
module from source in every process instead (what ``PYTHONDONTWRITEBYTECODE=1`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS_DIR = HERE / "workloads"
RESULT_PREFIX = "BENCH_RESULT "
TARGET = 1.05

# workload id -> (module in workloads/, config, num_samples, default repeats)
WORKLOADS: dict[str, tuple[str, dict, int, int]] = {
    "W1": ("w1_cold_start", {"x": 1.0}, 1, 20),
    "W2": ("w2_trial_throughput", {"x": "uniform(0, 1)"}, 500, 5),
    "W3": ("w3_result_throughput", {"n": 20_000}, 2, 5),
    "W4": ("w4_utilisation", {"burn": 1.0, "every": 0.1}, 20, 3),
}
APIS = ("run", "tuner")


# ------------------------------------------------------------------------------- child side


def _child(workload: str, api: str) -> None:
    """Run one workload through one API in this (fresh) process; print BENCH_RESULT."""
    import cloudpickle

    import tunekit

    sys.path.insert(0, str(WORKLOADS_DIR))
    module_name, config, num_samples, _ = WORKLOADS[workload]
    module = __import__(module_name)
    module.report = tunekit.report
    # The trainable travels by value, with its `report` global bound (as from a script).
    cloudpickle.register_pickle_by_value(module)
    config = {k: (tunekit.uniform(0.0, 1.0) if v == "uniform(0, 1)" else v) for k, v in config.items()}
    storage = tempfile.mkdtemp(prefix="tunekit-tuner-bench-")
    t0 = time.perf_counter()
    if api == "run":
        analysis = tunekit.run(
            module.train,
            config=config,
            num_samples=num_samples,
            resources_per_trial={"cpu": 1},
            verbose=0,
            local_dir=storage,
        )
        wall = time.perf_counter() - t0
        statuses = [t.status for t in analysis.trials]
        iterations = [t.last_result.get("training_iteration", 0) for t in analysis.trials]
    else:
        tuner = tunekit.Tuner(
            tunekit.with_resources(module.train, {"cpu": 1}),
            param_space=config,
            tune_config=tunekit.TuneConfig(num_samples=num_samples),
            run_config=tunekit.RunConfig(storage_path=storage, name="bench", verbose=0),
        )
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        statuses = ["ERROR" if r.error is not None else "TERMINATED" for r in grid]
        iterations = [(r.metrics or {}).get("training_iteration", 0) for r in grid]
    import shutil

    shutil.rmtree(storage, ignore_errors=True)
    out = {
        "wall_s": wall,
        "trials": len(statuses),
        "terminated": statuses.count("TERMINATED"),
        "results": int(sum(iterations)),
    }
    print(RESULT_PREFIX + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------- harness side


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])
    return total - idle, total


def _child_env(pycache: str | None) -> dict[str, str]:
    """The children's environment: with a bytecode cache (as an installed package has) unless
    ``pycache`` is None; the cache lives in a temporary directory, not in the source tree."""
    env = dict(os.environ)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def _measure(workload: str, api: str, env: dict[str, str]) -> dict:
    """One fresh subprocess; W1 is timed from outside, the others report their run call."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", workload, "--api", api]
    load_before = os.getloadavg()[0]
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    outside = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{workload}/{api} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = next(
        (ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)), None
    )
    if line is None:
        raise RuntimeError(f"{workload}/{api} printed no result:\n{proc.stdout[-2000:]}")
    data = json.loads(line[len(RESULT_PREFIX):])
    data["process_s"] = outside
    # CPU time of the whole process tree (driver and workers): far less sensitive to other
    # load on the machine than wall time, so it shows the API's own cost more steadily.
    data["cpu_s"] = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    data["figure_s"] = outside if workload == "W1" else data["wall_s"]
    data["loadavg_1m"] = [load_before, os.getloadavg()[0]]
    return data


def _summary(workload: str, runs: dict[str, list[dict]], busy: float, load: list[float]) -> dict:
    medians = {api: statistics.median(r["figure_s"] for r in runs[api]) for api in APIS}
    ratio = medians["tuner"] / medians["run"]
    cpu = {api: statistics.median(r["cpu_s"] for r in runs[api]) for api in APIS}
    _, _, num_samples, _ = WORKLOADS[workload]
    row = {
        "workload": workload,
        "median_s": medians,
        "all_s": {api: [round(r["figure_s"], 4) for r in runs[api]] for api in APIS},
        "ratio_tuner_over_run": ratio,
        "median_cpu_s": cpu,
        "cpu_ratio_tuner_over_run": cpu["tuner"] / cpu["run"],
        "pass": ratio <= TARGET,
        "machine_cpu_busy": busy,
        "loadavg_1m": load,
    }
    if workload == "W2":
        row["trials_per_s"] = {api: num_samples / medians[api] for api in APIS}
    elif workload == "W3":
        row["results_per_s"] = {
            api: statistics.median(r["results"] / r["wall_s"] for r in runs[api]) for api in APIS
        }
    elif workload == "W4":
        row["utilisation"] = {api: num_samples * 1.0 / 2 / medians[api] for api in APIS}
    for api in APIS:
        bad = [r for r in runs[api] if r["terminated"] != r["trials"]]
        if bad:
            row.setdefault("incomplete", {})[api] = len(bad)
    return row


def _format(row: dict) -> str:
    m = row["median_s"]
    extra = ""
    for key, unit in (("trials_per_s", "trials/s"), ("results_per_s", "results/s"), ("utilisation", "")):
        if key in row:
            v = row[key]
            digits = 3 if key == "utilisation" else 1
            extra = f" (run {v['run']:,.{digits}f} vs Tuner {v['tuner']:,.{digits}f}{' ' + unit if unit else ''})"
    spread = "; ".join(f"{api}: {', '.join(f'{s:.3f}' for s in row['all_s'][api])}" for api in APIS)
    return (
        f"{row['workload']}: run {m['run']:.3f} s, Tuner {m['tuner']:.3f} s, ratio "
        f"{row['ratio_tuner_over_run']:.3f} -> {'PASS' if row['pass'] else 'FAIL'} (<= {TARGET}){extra}\n"
        f"    all runs [{spread}]\n"
        f"    CPU time of the process tree: run {row['median_cpu_s']['run']:.3f} s, Tuner "
        f"{row['median_cpu_s']['tuner']:.3f} s, ratio {row['cpu_ratio_tuner_over_run']:.3f}\n"
        f"    machine: CPU busy {row['machine_cpu_busy']:.0f}%, load avg "
        f"{row['loadavg_1m'][0]:.2f} -> {row['loadavg_1m'][1]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="W1,W2,W3,W4")
    parser.add_argument("--repeats", type=int, default=None, help="per API (default: W1 20, W2 and W3 5, W4 3)")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="compile every module from source in every process (what PYTHONDONTWRITEBYTECODE=1 "
        "does); by default the children share a bytecode cache, warmed up first, as an installed "
        "package would",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--api", choices=APIS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.api)
        return
    rows = []
    pycache = None if args.no_bytecode_cache else tempfile.mkdtemp(prefix="tunekit-bench-pycache-")
    env = _child_env(pycache)
    print(
        f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}, load avg {os.getloadavg()}, "
        f"bytecode cache: {'off' if pycache is None else 'on'}",
        flush=True,
    )
    if pycache is not None:
        for api in APIS:  # compile once, unmeasured
            _measure("W1", api, env)
    for workload in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        repeats = args.repeats or WORKLOADS[workload][3]
        runs: dict[str, list[dict]] = {api: [] for api in APIS}
        busy0, total0 = _cpu_times()
        load0 = os.getloadavg()[0]
        for repeat in range(repeats):
            order = APIS if repeat % 2 == 0 else tuple(reversed(APIS))
            for api in order:
                runs[api].append(_measure(workload, api, env))
        busy1, total1 = _cpu_times()
        busy = 100.0 * (busy1 - busy0) / max(total1 - total0, 1.0)
        row = _summary(workload, runs, busy, [load0, os.getloadavg()[0]])
        row["runs"] = runs
        rows.append(row)
        print(_format(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    if pycache is not None:
        import shutil

        shutil.rmtree(pycache, ignore_errors=True)


if __name__ == "__main__":
    main()
