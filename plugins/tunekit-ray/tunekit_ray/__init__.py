"""tunekit's Ray executor: run the trials of ``tunekit.run`` as actors on a Ray cluster.

``tunekit.run(..., trial_executor="ray")`` resolves :class:`RayExecutor` through the
``tunekit.executors`` entry point; pass ``trial_executor=RayExecutor(...)`` for its
options. :func:`run_remote` runs the driver itself on the cluster (``_remote=True``).
Ray is imported only when the executor is set up.
"""

from __future__ import annotations

from .executor import RayExecutor
from .remote import run_remote

__all__ = ["RayExecutor", "run_remote"]
