"""Ray Tune 2.x's Tuner API (Ray paths ``ray.tune.tuner``, ``ray.tune.tune_config``,
``ray.tune.result_grid``, ``ray.tune.context``, and the ``RunConfig``/``CheckpointConfig``/
``FailureConfig`` of ``ray.train``/``ray.air``).

The same names are available as ``tunekit.Tuner``, ``tunekit.TuneConfig`` and so on.
"""

from tunekit_core.result_grid import Result, ResultGrid
from tunekit_core.tuner import (
    CheckpointConfig,
    FailureConfig,
    RunConfig,
    TuneConfig,
    TuneContext,
    Tuner,
    get_context,
    with_resources,
)

__all__ = [
    "CheckpointConfig",
    "FailureConfig",
    "Result",
    "ResultGrid",
    "RunConfig",
    "TuneConfig",
    "TuneContext",
    "Tuner",
    "get_context",
    "with_resources",
]
