"""``run_remote``: the tunekit driver itself as a Ray task on the cluster.

This is Ray Tune's client mode (``tune.run(..., _remote=True)``): the process that
calls it only submits the run and waits; the run loop, the experiment directory and
the trials' actors all live on the cluster. It is meant for a client that is not a
cluster node (a laptop connected with ``ray.init("ray://head:10001")``), but it works
from any Ray driver.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def run_remote(run_or_experiment: Any, *args: Any, **run_kwargs: Any) -> Any:
    """Run ``tunekit.run(run_or_experiment, ...)`` as a Ray task; return its analysis.

    The task runs on the node this process is connected to (the head node for a
    ``ray://`` client), with ``trial_executor="ray"`` unless another executor is
    given. It returns an :class:`~tunekit.ExperimentAnalysis` read from the experiment
    directory on that node, with every trial's results already loaded, so it works
    here even when this machine cannot see that directory. Errors raised by the run
    (``TuneError`` for failed trials, bad arguments) are raised here.

    Connects to ``RAY_ADDRESS`` when Ray is not initialised yet. Interrupting this
    call (Ctrl+C) cancels the remote run.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if not address:
            raise RuntimeError(
                "_remote=True runs the tuning driver as a task on a Ray cluster, but Ray is not "
                "initialised and RAY_ADDRESS is not set. Call ray.init(address=...) (for a "
                "client outside the cluster: ray.init('ray://<head>:10001')) or set RAY_ADDRESS."
            )
        ray.init(address=address)
    run_kwargs.pop("_remote", None)
    run_kwargs.setdefault("trial_executor", "ray")
    options: dict[str, Any] = {"num_cpus": 0, "max_retries": 0}
    try:
        node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - some client modes have no node of their own
        node_id = None
    if node_id:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
    import cloudpickle

    task = ray.remote(_run_on_cluster).options(**options)
    paths = [os.path.abspath(p) for p in sys.path if p]
    # Pickled here and unpickled there once this process's import paths are set up, so
    # trainables and callbacks from the caller's modules import on the cluster.
    payload = cloudpickle.dumps((run_or_experiment, args, run_kwargs))
    ref = task.remote(paths, payload)
    try:
        return ray.get(ref)
    except KeyboardInterrupt:
        ray.cancel(ref)
        raise


def _run_on_cluster(paths: list[str], payload: bytes) -> Any:
    import pickle

    for entry in paths:
        if entry not in sys.path and os.path.isdir(entry):
            sys.path.append(entry)
    run_or_experiment, args, kwargs = pickle.loads(payload)
    from tunekit_core.analysis import ExperimentAnalysis
    from tunekit_core.run import run

    analysis = run(run_or_experiment, *args, **kwargs)
    # Trial objects hold the searchers and the trainable: send plain records back,
    # with their results loaded so the caller needs no access to this node's disk.
    detached = ExperimentAnalysis(
        analysis.experiment_path,
        default_metric=analysis.default_metric,
        default_mode=analysis.default_mode,
    )
    detached.fetch_trial_dataframes()
    return detached
