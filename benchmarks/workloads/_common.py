"""Shared plumbing for the workload scripts in this folder.

Each workload script is run as a fresh subprocess by ``benchmarks/run.py``, once per
framework configuration:

- ``tunekit``: ``tunekit.run(...)`` with ``tunekit.report(...)``;
- ``ray``: Ray Tune's Tuner API in its best configuration (``reuse_actors=True``);
- ``ray-default``: Ray Tune's Tuner API with its default ``reuse_actors=False``.

A script prints exactly one machine-readable line, ``BENCH_RESULT {json}``, on stdout; the
harness parses it. Everything else a framework prints is ignored.

Ray is imported only when a Ray configuration is requested, so the tunekit side never pays for it.
Ray is started bound to loopback (this machine has no other network) with 2 CPUs, no dashboard,
and a per-run temporary directory given by the harness so that the harness can find every
process of that Ray session.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

FRAMEWORKS = ("tunekit", "ray", "ray-default")
RESULT_PREFIX = "BENCH_RESULT "


def parse_args(description: str, **defaults: Any) -> argparse.Namespace:
    """Parse the options every workload script accepts.

    ``defaults`` supplies per-workload defaults for ``trials`` and ``results``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--framework", choices=FRAMEWORKS, required=True)
    parser.add_argument("--trials", type=int, default=defaults.get("trials", 1))
    parser.add_argument("--results", type=int, default=defaults.get("results", 1))
    parser.add_argument("--cpus", type=int, default=2, help="CPUs the framework may use")
    parser.add_argument(
        "--ray-temp-dir",
        default=os.environ.get("BENCH_RAY_TEMP_DIR"),
        help="Ray session root (the harness passes a unique one per run)",
    )
    return parser.parse_args()


class Framework:
    """The few operations a workload needs, for one framework configuration."""

    def __init__(self, name: str, cpus: int = 2, ray_temp_dir: str | None = None) -> None:
        self.name = name
        self.cpus = cpus
        self.ray_temp_dir = ray_temp_dir
        if name == "tunekit":
            import tunekit

            self.module = tunekit
            self.report: Callable[[dict], None] = tunekit.report
        else:
            # Ray Tune's console output and usage reporting are not part of what we measure.
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            import ray
            from ray import tune

            self.module = tune
            self.report = tune.report
            init_kwargs: dict[str, Any] = dict(
                _node_ip_address="127.0.0.2",
                include_dashboard=False,
                num_cpus=cpus,
                log_to_driver=False,
            )
            if ray_temp_dir:
                init_kwargs["_temp_dir"] = ray_temp_dir
            ray.init(**init_kwargs)
        # Created last, so that a framework that fails to start leaves nothing behind.
        self.storage = tempfile.mkdtemp(prefix="tunekit-bench-", dir=os.environ.get("BENCH_SCRATCH"))

    def uniform(self, low: float, high: float) -> Any:
        """A uniform search-space domain, or its midpoint if the framework has no ``uniform``."""
        fn = getattr(self.module, "uniform", None)
        return fn(low, high) if fn is not None else (low + high) / 2

    def run(self, train: Callable[[dict], None], config: dict, num_samples: int) -> dict:
        """Run ``num_samples`` trials of ``train``, 1 CPU each; return timing and counts.

        Only the run call itself is inside the timed region (for Ray: building the Tuner
        and ``fit()``; ``ray.init`` happened in the constructor).
        """
        if self.name == "tunekit":
            import tunekit

            t0 = time.perf_counter()
            analysis = tunekit.run(
                train,
                config=config,
                num_samples=num_samples,
                resources_per_trial={"cpu": 1},
                verbose=0,
                local_dir=self.storage,
            )
            wall = time.perf_counter() - t0
            trials = list(analysis.trials)
            n_ok = sum(1 for t in trials if t.status == "TERMINATED")
            n_results = sum(int(t.last_result.get("training_iteration", 0) or 0) for t in trials)
            return {"wall_s": wall, "trials": len(trials), "terminated": n_ok,
                    "results": n_results}

        from ray import tune

        t0 = time.perf_counter()
        tuner = tune.Tuner(
            tune.with_resources(train, {"cpu": 1}),
            param_space=config,
            tune_config=tune.TuneConfig(
                num_samples=num_samples, reuse_actors=(self.name == "ray")
            ),
            run_config=tune.RunConfig(storage_path=self.storage, name="bench", verbose=0),
        )
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        n_ok = sum(1 for r in grid if r.error is None)
        n_results = sum(int((r.metrics or {}).get("training_iteration", 0) or 0) for r in grid)
        return {"wall_s": wall, "trials": len(grid), "terminated": n_ok, "results": n_results}

    def close(self) -> None:
        """Stop what the framework started (Ray's local cluster) and drop the results folder."""
        if self.name != "tunekit":
            import ray

            ray.shutdown()
        if os.environ.get("BENCH_SCRATCH"):
            return  # the harness removes its scratch directory once every run is over
        import shutil

        shutil.rmtree(self.storage, ignore_errors=True)


def emit(result: dict) -> None:
    """Print the one line the harness reads."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)
