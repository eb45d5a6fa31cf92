"""Side-by-side benchmarks: tunekit against Ray Tune, in the same invocation.

Usage (from the repository root)::

    uv run --group bench python benchmarks/run.py \
        [--workloads W1,W2,W3,W4,W5] [--frameworks tunekit,ray,ray-default] \
        [--quick] [--json out.json]

Every workload runs as a fresh subprocess per framework configuration (scripts in
``benchmarks/workloads/``), so no state leaks between measurements. See ``benchmarks/README.md``
for what each workload measures and the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
WORKLOADS_DIR = HERE / "workloads"
RESULT_PREFIX = "BENCH_RESULT "
ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "W5")
ALL_FRAMEWORKS = ("tunekit", "ray", "ray-default")
RAY_FRAMEWORKS = ("ray", "ray-default")

# Workload sizes. Ray's result throughput is measured on fewer results per trial (a full
# 20,000-per-trial run takes many minutes there); the rate is results / wall time either way.
W2_TRIALS = 500
W3_RESULTS = 20_000
W3_RAY_RESULTS = 2_000
W4_TRIALS = 20
W5_TRIALS = 2000
W5_SMALL_TRIALS = 500
# --quick scales Ray's default configuration (reuse_actors=False, ~0.4 trials/s here) down.
QUICK_RAY_DEFAULT_W2_TRIALS = 50
QUICK_RAY_DEFAULT_W5_TRIALS = 100
RUN_TIMEOUT_S = 4 * 3600


# --------------------------------------------------------------------------------------------
# Process-tree memory sampling
# --------------------------------------------------------------------------------------------


@dataclass
class MemoryPeaks:
    """Peaks seen by :class:`TreeMonitor` (bytes), plus what the tree looked like at its peak."""

    driver_rss: int = 0
    tree_rss: int = 0
    max_processes: int = 0
    samples: int = 0
    at_peak: list[tuple[int, str, int]] = field(default_factory=list)


class TreeMonitor(threading.Thread):
    """Sample the RSS of a driver process and of every process that belongs to its run.

    A process belongs to the run when it is a descendant of the driver, or it carries the run's
    tag (environment variable ``BENCH_TAG``, inherited from the harness through the driver, or
    the run's unique Ray temp dir on its command line), or it descends from such a process.
    The tag scan catches Ray daemons that have been re-parented away from the driver. The
    descendant walk runs every ``interval`` seconds; the tag scan every ``scan_every`` samples.
    """

    def __init__(self, pid: int, tag: str, marker: str | None, interval: float = 0.05,
                 scan_every: int = 10) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.tag = tag
        self.marker = marker
        self.interval = interval
        self.scan_every = scan_every
        self.peaks = MemoryPeaks()
        self._stop_event = threading.Event()
        self._session_roots: dict[int, psutil.Process] = {}
        self._not_tagged: set[int] = set()
        self._peak_sizes: list[tuple[int, int]] = []
        self._names: dict[int, str] = {}
        self._me = os.getpid()

    def stop(self) -> MemoryPeaks:
        """Stop sampling and return the peaks."""
        self._stop_event.set()
        self.join()
        self._describe_peak()
        return self.peaks

    def _scan_for_tagged(self, procs: list[psutil.Process]) -> None:
        for proc in procs:
            pid = proc.pid
            if pid in self._session_roots or pid in self._not_tagged or pid == self._me:
                continue
            if belongs_to_run(proc, self.tag, self.marker):
                self._session_roots[pid] = proc
            else:
                self._not_tagged.add(pid)

    def run(self) -> None:
        tick = 0
        while not self._stop_event.is_set():
            # One pass over /proc per sample: parent map, then a walk down from the roots.
            procs = list(psutil.process_iter(["ppid"]))
            if tick % self.scan_every == 0:
                self._scan_for_tagged(procs)
            tick += 1
            by_pid = {p.pid: p for p in procs}
            children: dict[int, list[int]] = {}
            for p in procs:
                children.setdefault(p.info["ppid"], []).append(p.pid)
            stack = [self.pid, *self._session_roots]
            members: set[int] = set()
            while stack:
                pid = stack.pop()
                if pid in members or pid not in by_pid:
                    continue
                members.add(pid)
                stack.extend(children.get(pid, ()))
            if self.pid not in members:
                if self.peaks.samples:  # the driver has exited
                    return
            total = 0
            sizes: list[tuple[int, int]] = []
            for pid in members:
                try:
                    rss = by_pid[pid].memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                total += rss
                sizes.append((pid, rss))
                if pid == self.pid and rss > self.peaks.driver_rss:
                    self.peaks.driver_rss = rss
            self.peaks.samples += 1
            self.peaks.max_processes = max(self.peaks.max_processes, len(sizes))
            if total > self.peaks.tree_rss:
                self.peaks.tree_rss = total
                self._peak_sizes = sizes
                for pid, _ in sizes:  # name processes while they are alive
                    self._names[pid] = _short_name(by_pid[pid])
            self._stop_event.wait(self.interval)

    def _describe_peak(self) -> None:
        """Name the processes of the peak sample (done once, not while sampling)."""
        self.peaks.at_peak = sorted(
            ((pid, self._names.get(pid, "?"), rss) for pid, rss in self._peak_sizes),
            key=lambda s: -s[2])


def _short_name(proc: psutil.Process) -> str:
    """A readable name: Ray's process title, the Python script or module, or the executable."""
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"
    if not cmd:
        return "?"
    if len(cmd) == 1 or cmd[0].startswith("ray::"):
        return " ".join(cmd)[:50].strip()
    for i, part in enumerate(cmd[1:], start=1):
        if part.endswith(".py"):
            return os.path.basename(part)
        if part == "-m" and i + 1 < len(cmd):
            return f"-m {cmd[i + 1]}"
    return os.path.basename(cmd[0])


def belongs_to_run(proc: psutil.Process, tag: str, marker: str | None) -> bool:
    """Whether ``proc`` carries this run's tag (environment) or Ray temp dir (command line)."""
    try:
        cmdline = proc.cmdline()
        if marker and any(marker in part for part in cmdline):
            return True
        return proc.environ().get("BENCH_TAG") == tag
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return False


def kill_leftovers(tag: str, marker: str | None) -> list[str]:
    """Kill, by pid, every process still alive that belongs to the run; return what was killed.

    This replaces ``ray stop --force``, which would match Ray processes by name machine-wide:
    here only processes that carry this run's tag or Ray temp dir (and their descendants) go.
    """
    me = os.getpid()
    victims: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        if belongs_to_run(proc, tag, marker):
            victims[proc.pid] = proc
            try:
                for child in proc.children(recursive=True):
                    victims[child.pid] = child
            except psutil.NoSuchProcess:
                pass
    names = []
    for proc in victims.values():
        names.append(f"{proc.pid}:{_short_name(proc)}")
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(victims.values()), timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return names


# --------------------------------------------------------------------------------------------
# Running one workload script
# --------------------------------------------------------------------------------------------


def run_script(script: str, framework: str, extra: list[str], *, monitor: bool = False,
               timeout: float = RUN_TIMEOUT_S, retries: int = 1) -> dict[str, Any]:
    """Run ``workloads/<script>`` for ``framework`` in a fresh subprocess and parse its result.

    Returns the script's ``BENCH_RESULT`` dict plus ``process_wall_s`` (the whole process, timed
    around ``subprocess``), and, with ``monitor``, the memory peaks in MiB. A run that fails
    (for example Ray's "node timed out during startup" on a busy machine) is retried
    ``retries`` times; the result then says so under ``retried_after``.
    """
    failures: list[str] = []
    for _ in range(retries + 1):
        result = _run_script_once(script, framework, extra, monitor=monitor, timeout=timeout)
        if "error" not in result:
            if failures:
                result["retried_after"] = [f.splitlines()[-1] for f in failures]
            return result
        failures.append(result["error"])
        print(f"    run failed, {'retrying' if len(failures) <= retries else 'giving up'}: "
              f"{result['error'].splitlines()[-1]}", flush=True)
    return result


def _run_script_once(script: str, framework: str, extra: list[str], *, monitor: bool,
                     timeout: float) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    ray_tmp = f"/tmp/rbt_{tag}" if framework in RAY_FRAMEWORKS else None
    env = dict(os.environ, BENCH_TAG=tag, PYTHONUNBUFFERED="1")
    # Python caches compiled modules (__pycache__), as on any user's machine; an environment
    # that disables it would charge every fresh process for compiling each framework's
    # modules again (see warm_up()).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cmd = [sys.executable, str(WORKLOADS_DIR / script), "--framework", framework, *extra]
    if ray_tmp:
        cmd += ["--ray-temp-dir", ray_tmp]
    load_before = os.getloadavg()[0]
    cpu_before = psutil.cpu_times()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    mon = TreeMonitor(proc.pid, tag, ray_tmp) if monitor else None
    if mon:
        mon.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        timed_out = True
    process_wall = time.perf_counter() - t0
    cpu_after = psutil.cpu_times()
    load_after = os.getloadavg()[0]
    peaks = mon.stop() if mon else None
    leftovers = kill_leftovers(tag, ray_tmp)
    if ray_tmp:
        _REMOVE_AT_EXIT.append(ray_tmp)

    result: dict[str, Any] | None = None
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
    if result is None:
        tail = "\n".join((stdout + "\n" + stderr).strip().splitlines()[-25:])
        why = f"timed out after {timeout:.0f} s" if timed_out else f"exit code {proc.returncode}"
        return {"error": f"{script} --framework {framework} {' '.join(extra)}: {why}\n{tail}"}
    result["process_wall_s"] = process_wall
    # How busy the whole machine was (this run included): other work skews every figure.
    total = sum(cpu_after) - sum(cpu_before)
    idle = (cpu_after.idle + cpu_after.iowait) - (cpu_before.idle + cpu_before.iowait)
    result["machine_cpu_busy"] = (total - idle) / total if total > 0 else None
    result["loadavg_1m"] = [round(load_before, 2), round(load_after, 2)]
    if leftovers:
        result["leftover_processes_killed"] = len(leftovers)
    if peaks is not None:
        mib = 1024 * 1024
        result["driver_peak_rss_mb"] = peaks.driver_rss / mib
        result["tree_peak_rss_mb"] = peaks.tree_rss / mib
        result["max_processes"] = peaks.max_processes
        result["rss_samples"] = peaks.samples
        result["tree_at_peak"] = [f"{round(rss / mib)} MiB  {name}" for _, name, rss in
                                  peaks.at_peak[:12]]
    return result


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------


def warm_up(frameworks: list[str]) -> None:
    """One untimed W1 run per framework before anything is measured.

    It leaves what any installed framework has after its first use: compiled modules in
    ``__pycache__`` (for the driver and for every kind of process the framework starts)
    and its files in the page cache. Without it the first measured run of each framework
    pays for that once, which no later use does.
    """
    for framework in frameworks:
        t0 = time.perf_counter()
        r = _run_script_once("w1_cold_start.py", framework, [], monitor=False, timeout=600)
        status = "failed: " + r["error"].splitlines()[-1] if "error" in r else "done"
        print(f"# warm-up run of {framework}: {status} [{time.perf_counter() - t0:.0f} s]",
              flush=True)


def w1(framework: str, quick: bool) -> dict[str, Any]:
    runs = [run_script("w1_cold_start.py", framework, []) for _ in range(3)]
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return {"error": errors[0]}
    walls = [r["process_wall_s"] for r in runs]
    return {"value": statistics.median(walls), "unit": "s", "runs_s": walls, "runs": runs}


def w2(framework: str, quick: bool) -> dict[str, Any]:
    trials = W2_TRIALS
    note = None
    if quick and framework == "ray-default":
        trials = QUICK_RAY_DEFAULT_W2_TRIALS
        note = f"--quick: {trials} trials instead of {W2_TRIALS}, rate extrapolated"
    r = run_script("w2_trial_throughput.py", framework, ["--trials", str(trials)])
    if "error" in r:
        return r
    return {"value": r["trials_per_s"], "unit": "trials/s", "note": note, "raw": r}


def w3(framework: str, quick: bool) -> dict[str, Any]:
    per_trial = W3_RAY_RESULTS if framework in RAY_FRAMEWORKS else W3_RESULTS
    note = None
    if per_trial != W3_RESULTS:
        note = f"{per_trial} results per trial instead of {W3_RESULTS}; rate = results / wall"
    r = run_script("w3_result_throughput.py", framework,
                   ["--trials", "2", "--results", str(per_trial)])
    if "error" in r:
        return r
    if r["results"] != r["expected_results"]:
        note = (note + "; " if note else "") + (
            f"only {r['results']} of {r['expected_results']} results arrived")
    return {"value": r["results_per_s"], "unit": "results/s", "note": note, "raw": r}


def w4(framework: str, quick: bool) -> dict[str, Any]:
    r = run_script("w4_utilisation.py", framework, ["--trials", str(W4_TRIALS)])
    if "error" in r:
        return r
    return {"value": r["utilisation"], "unit": "ideal/measured", "raw": r}


def w5(framework: str, quick: bool) -> dict[str, Any]:
    trials = W5_TRIALS
    note = None
    if quick and framework == "ray-default":
        trials = QUICK_RAY_DEFAULT_W5_TRIALS
        note = f"--quick: measured at {trials} trials instead of {W5_TRIALS} (not extrapolated)"
    big = run_script("w5_memory.py", framework, ["--trials", str(trials)], monitor=True)
    if "error" in big:
        return big
    out: dict[str, Any] = {
        "value": big["tree_peak_rss_mb"], "unit": "MiB tree peak",
        "driver_peak_rss_mb": big["driver_peak_rss_mb"], "trials": trials, "note": note,
        "raw": big,
    }
    if framework == "tunekit":
        small = run_script("w5_memory.py", framework, ["--trials", str(W5_SMALL_TRIALS)],
                           monitor=True)
        if "error" in small:
            out["growth_error"] = small["error"]
        else:
            out["driver_peak_rss_small_mb"] = small["driver_peak_rss_mb"]
            out["driver_growth"] = (big["driver_peak_rss_mb"] / small["driver_peak_rss_mb"]) - 1
            out["raw_small"] = small
    return out


WORKLOAD_FUNCS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5}
TITLES = {
    "W1": "cold start (whole process, median of 3)",
    "W2": f"trial throughput ({W2_TRIALS} one-result trials, 2 at a time)",
    "W3": "result throughput (2 trials reporting 3 floats in a loop, default loggers)",
    "W4": f"utilisation ({W4_TRIALS} trials x 1.0 s CPU, 2 at a time; ideal 10 s / measured)",
    "W5": f"memory ({W5_TRIALS} one-result trials; peak RSS, sampled every 50 ms)",
}


# --------------------------------------------------------------------------------------------
# Comparison and report
# --------------------------------------------------------------------------------------------


def _ok(cond: bool) -> str:
    return "PASS" if cond else "FAIL"


def compare(name: str, res: dict[str, dict[str, Any]]) -> list[str]:
    """Lines comparing tunekit with each Ray configuration against the workload's target."""
    tk = res.get("tunekit", {})
    lines = []
    if "value" not in tk:
        return lines
    t = tk["value"]
    for ray_fw in RAY_FRAMEWORKS:
        r = res.get(ray_fw, {})
        if "value" not in r:
            continue
        v = r["value"]
        if name == "W1":
            lines.append(f"  tunekit vs {ray_fw}: {v / t:.1f}x faster (tunekit/ray = {t / v:.3f}; "
                         f"target <= 1/8 = 0.125) {_ok(t <= v / 8)}")
        elif name == "W2":
            lines.append(f"  tunekit vs {ray_fw}: {t / v:.1f}x the rate (target >= 10x) "
                         f"{_ok(t >= 10 * v)}")
        elif name == "W3":
            lines.append(f"  tunekit vs {ray_fw}: {t / v:.1f}x the rate (target >= 30x) "
                         f"{_ok(t >= 30 * v)}")
        elif name == "W4":
            lines.append(f"  tunekit vs {ray_fw}: {t:.3f} vs {v:.3f}")
        elif name == "W5":
            lines.append(f"  tunekit vs {ray_fw}: tree peak {t:.0f} vs {v:.0f} MiB = {v / t:.1f}x "
                         f"smaller (target >= 5x) {_ok(t * 5 <= v)}; driver peak "
                         f"{tk['driver_peak_rss_mb']:.0f} vs {r['driver_peak_rss_mb']:.0f} MiB")
    if name == "W3":
        lines.append(f"  tunekit absolute: {t:,.0f} results/s (target >= 20,000) "
                     f"{_ok(t >= 20000)}")
    if name == "W4":
        lines.append(f"  tunekit absolute: {t:.3f} (target >= 0.97) {_ok(t >= 0.97)}")
    if name == "W5" and "driver_growth" in tk:
        g = tk["driver_growth"]
        lines.append(f"  tunekit driver peak RSS {tk['driver_peak_rss_small_mb']:.1f} MiB at "
                     f"{W5_SMALL_TRIALS} -> {tk['driver_peak_rss_mb']:.1f} MiB at {W5_TRIALS} "
                     f"trials: {g * 100:+.1f}% (target <= +20%) {_ok(g <= 0.20)}")
    return lines


def fmt_value(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return "ERROR"
    v = r["value"]
    if name == "W1":
        return f"{v:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in r['runs_s'])})"
    if name == "W2":
        return f"{v:,.1f} trials/s  ({r['raw']['trials']} trials in {r['raw']['wall_s']:.1f} s)"
    if name == "W3":
        raw = r["raw"]
        return f"{v:,.0f} results/s  ({raw['results']} results in {raw['wall_s']:.1f} s)"
    if name == "W4":
        return f"{v:.3f}  (wall {r['raw']['wall_s']:.2f} s, ideal {r['raw']['ideal_wall_s']:.1f} s)"
    if name == "W5":
        raw = r["raw"]
        s = (f"tree peak {v:,.0f} MiB, driver peak {r['driver_peak_rss_mb']:,.0f} MiB "
             f"(getrusage {raw['driver_maxrss_getrusage_mb']:,.0f} MiB), "
             f"max {raw['max_processes']} processes, {r['trials']} trials in "
             f"{raw['wall_s']:.0f} s")
        if "driver_peak_rss_small_mb" in r:
            s += f"; driver peak at {W5_SMALL_TRIALS} trials {r['driver_peak_rss_small_mb']:,.1f} MiB"
        return s
    return str(v)


def _short_value(name: str, r: dict[str, Any] | None) -> str:
    if not r:
        return "not run"
    if "error" in r:
        return "ERROR"
    v = r["value"]
    mark = " \\*" if r.get("note") else ""
    if r.get("from_baseline"):
        mark += " \\†"
    if name == "W1":
        return f"{v:.2f} s{mark}"
    if name == "W2":
        return f"{v:,.1f} trials/s{mark}"
    if name == "W3":
        return f"{v:,.0f} results/s{mark}"
    if name == "W4":
        return f"{v:.3f}{mark}"
    return f"tree {v:,.0f} MiB, driver {r['driver_peak_rss_mb']:,.0f} MiB{mark}"


def _ratio(name: str, tk: dict[str, Any] | None, other: dict[str, Any] | None) -> str:
    if not tk or not other or "value" not in tk or "value" not in other:
        return "—"
    t, v = tk["value"], other["value"]
    if name == "W1":
        return f"{v / t:.1f}x faster ({_ok(t <= v / 8)})"
    if name in ("W2", "W3"):
        need = 10 if name == "W2" else 30
        return f"{t / v:.1f}x ({_ok(t >= need * v)})"
    if name == "W4":
        return f"{t - v:+.3f}"
    return f"tree {v / t:.1f}x smaller ({_ok(t * 5 <= v)})"


def _load_range(res: dict[str, dict[str, Any]]) -> str:
    """The 1-minute load averages seen at the start and end of this workload's runs."""
    loads: list[float] = []
    for r in res.values():
        runs = r.get("runs") or ([r["raw"]] if "raw" in r else [])
        for run in runs:
            loads.extend(run.get("loadavg_1m") or [])
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"


TARGETS = {
    "W1": "<= 1/8 of Ray's time",
    "W2": ">= 10x Ray's rate",
    "W3": ">= 20,000 results/s and >= 30x Ray",
    "W4": ">= 0.97",
    "W5": "tree <= 1/5 of Ray's",
}


def markdown_table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (one row per workload), with footnotes."""
    lines = [
        "| workload | tunekit | Ray, reuse_actors=True | Ray, default (reuse_actors=False) "
        "| tunekit vs Ray reuse | tunekit vs Ray default | target | load avg during runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    notes: list[str] = []
    baselines: set[str] = set()
    for name, entry in report["workloads"].items():
        res = entry["results"]
        tk = res.get("tunekit")
        target = TARGETS[name]
        if name == "W3" and tk and "value" in tk:
            target += f" ({_ok(tk['value'] >= 20000)} absolute)"
        if name == "W4" and tk and "value" in tk:
            target += f" ({_ok(tk['value'] >= 0.97)})"
        lines.append(
            f"| {name} {TITLES[name]} | {_short_value(name, tk)} "
            f"| {_short_value(name, res.get('ray'))} | {_short_value(name, res.get('ray-default'))} "
            f"| {_ratio(name, tk, res.get('ray'))} | {_ratio(name, tk, res.get('ray-default'))} "
            f"| {target} | {_load_range(res)} |")
        if name == "W5" and tk and "driver_growth" in tk:
            g = tk["driver_growth"]
            lines.append(
                f"| W5 tunekit driver peak RSS, {W5_SMALL_TRIALS} -> {W5_TRIALS} trials "
                f"| {tk['driver_peak_rss_small_mb']:.1f} -> {tk['driver_peak_rss_mb']:.1f} MiB "
                f"({g * 100:+.1f}%) | | | | | <= +20% ({_ok(g <= 0.20)}) | |")
        for fw, r in res.items():
            if r.get("note"):
                notes.append(f"\\* {name} {fw}: {r['note']}")
            if r.get("from_baseline"):
                baselines.add(r["from_baseline"])
    env = report["environment"]
    out = "\n".join(lines)
    if notes:
        out += "\n\n" + "\n\n".join(notes)
    for b in sorted(baselines):
        out += f"\n\n† measured in an earlier invocation: {b}"
    out += (f"\n\nMachine: {env['cpus']} CPUs, {env['memory_gib']} GiB, Python {env['python']}, "
            f"Ray {env.get('ray')}, tunekit at {env.get('tunekit_commit')}, {env['date']}.\n")
    return out


def load_baselines(paths: list[str], workloads: list[str],
                   frameworks: list[str]) -> dict[str, dict[str, Any]]:
    """Figures for frameworks not run now, from earlier ``--json`` files (labelled as such)."""
    loaded: dict[str, dict[str, Any]] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        label = f"{path} ({data['environment'].get('date')}, quick={data.get('quick')})"
        for name, entry in data["workloads"].items():
            if name not in workloads:
                continue
            for fw, r in entry["results"].items():
                if fw in frameworks or "value" not in r:
                    continue
                loaded.setdefault(name, {})[fw] = dict(r, from_baseline=label)
    return loaded


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        from importlib.metadata import version

        info["ray"] = version("ray")
    except Exception:  # noqa: BLE001 - ray is optional for a tunekit-only run
        info["ray"] = None
    try:
        info["tunekit_commit"] = subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        info["tunekit_commit"] = None
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(ALL_WORKLOADS),
                        help="comma-separated subset of " + ",".join(ALL_WORKLOADS))
    parser.add_argument("--frameworks", default=",".join(ALL_FRAMEWORKS),
                        help="comma-separated subset of " + ",".join(ALL_FRAMEWORKS))
    parser.add_argument("--quick", action="store_true",
                        help=f"scale Ray's default config (reuse_actors=False) down: W2 "
                             f"{QUICK_RAY_DEFAULT_W2_TRIALS} trials (rate extrapolated), "
                             f"W5 {QUICK_RAY_DEFAULT_W5_TRIALS} trials")
    parser.add_argument("--json", dest="json_path", help="write all figures to this JSON file")
    parser.add_argument("--markdown", dest="markdown_path",
                        help="write the results table (Markdown) to this file")
    parser.add_argument("--baseline", action="append", default=[], metavar="JSON",
                        help="take figures of frameworks NOT run now from an earlier --json file "
                             "(labelled as such in the output; may be repeated)")
    parser.add_argument("--no-warm-up", action="store_true",
                        help="skip the untimed warm-up run of each framework")
    parser.add_argument("--scratch", default=None,
                        help="where the runs' experiment directories go (default: a fresh "
                             "directory in your home directory, as both frameworks' default "
                             "result folders are); removed when everything has run")
    args = parser.parse_args(argv)
    scratch = use_scratch(args.scratch)
    try:
        return _main(args, parser)
    finally:
        remove_scratch(scratch)


def use_scratch(where: str | None) -> str:
    """One scratch directory for the whole invocation, set as ``BENCH_SCRATCH`` for the runs.

    Nothing is deleted between runs: on a file system that delays reusing recently freed
    inodes (ext4 without a journal, as on the VM these figures come from), creating files
    right after thousands were deleted nearby costs up to a millisecond each, which would
    charge one run for the clean-up of the one before.
    """
    root = tempfile.mkdtemp(prefix=".bench-scratch-", dir=where or os.path.expanduser("~"))
    os.environ["BENCH_SCRATCH"] = root
    return root


def remove_scratch(root: str) -> None:
    for path in [root, *_REMOVE_AT_EXIT]:
        shutil.rmtree(path, ignore_errors=True)
    _REMOVE_AT_EXIT.clear()


_REMOVE_AT_EXIT: list[str] = []


def _main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:

    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    for w in workloads:
        if w not in WORKLOAD_FUNCS:
            parser.error(f"unknown workload {w!r}; expected some of {', '.join(ALL_WORKLOADS)}")
    for f in frameworks:
        if f not in ALL_FRAMEWORKS:
            parser.error(f"unknown framework {f!r}; expected some of {', '.join(ALL_FRAMEWORKS)}")

    baseline = load_baselines(args.baseline, workloads, frameworks)
    report: dict[str, Any] = {"environment": environment(), "quick": args.quick, "workloads": {}}
    print(f"# environment: {json.dumps(report['environment'])}", flush=True)
    if not args.no_warm_up:
        warm_up(frameworks)
    failed = False
    for w in workloads:
        print(f"\n{w}: {TITLES[w]}", flush=True)
        res: dict[str, dict[str, Any]] = {}
        for f in frameworks:
            t0 = time.perf_counter()
            r = WORKLOAD_FUNCS[w](f, args.quick)
            res[f] = r
            label = {"ray": "ray (reuse_actors=True)",
                     "ray-default": "ray-default (reuse_actors=False)"}.get(f, f)
            print(f"  {label:34s} {fmt_value(w, r)}   [{time.perf_counter() - t0:.0f} s]",
                  flush=True)
            raw = r.get("raw", r.get("runs", [{}])[0] if r.get("runs") else {})
            if raw.get("loadavg_1m"):
                print(f"  {'':34s} machine: CPU busy {raw['machine_cpu_busy'] * 100:.0f}%, "
                      f"load avg (1 min) {raw['loadavg_1m'][0]} -> {raw['loadavg_1m'][1]}",
                      flush=True)
            if r.get("note"):
                print(f"  {'':34s} note: {r['note']}", flush=True)
            if "error" in r:
                failed = True
                print("    " + r["error"].replace("\n", "\n    "), flush=True)
            if w == "W5" and "raw" in r:
                print(f"  {'':34s} tree at peak: " + "; ".join(r["raw"]["tree_at_peak"][:6]),
                      flush=True)
        for f, r in baseline.get(w, {}).items():
            res[f] = r
            print(f"  {f:34s} {fmt_value(w, r)}   [from {r['from_baseline']}]", flush=True)
        comparison = compare(w, res)
        for line in comparison:
            print(line, flush=True)
        report["workloads"][w] = {"results": res, "comparison": comparison}
        if args.json_path:  # write as we go, so a long run leaves partial figures behind
            Path(args.json_path).write_text(json.dumps(report, indent=2))
    table = markdown_table(report)
    print("\n" + table, flush=True)
    if args.markdown_path:
        Path(args.markdown_path).write_text(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
