"""tunekit's early-stopping schedulers, with Ray Tune's names, parameters and semantics.

- ``AsyncHyperBandScheduler`` / ``ASHAScheduler`` (``scheduler="asha"`` or
  ``"async_hyperband"``): asynchronous successive halving;
- ``HyperBandScheduler`` (``"hyperband"``): synchronous brackets that pause trials at
  milestones and resume the best from their checkpoints;
- ``HyperBandForBOHB`` (``"hb_bohb"``): HyperBand for BOHB-style searchers;
- ``MedianStoppingRule`` (``"median_stopping_rule"``): the Vizier median rule;
- ``ResourceChangingScheduler`` and ``DistributeResources``: change the resources of
  live trials around any of the above.

All are importable from ``tunekit.schedulers``.
"""

from __future__ import annotations

from .async_hyperband import ASHAScheduler, AsyncHyperBandScheduler
from .hb_bohb import HyperBandForBOHB
from .hyperband import HyperBandScheduler
from .median_stopping import MedianStoppingRule
from .resource_changing import DistributeResources, ResourceChangingScheduler

__all__ = [
    "ASHAScheduler",
    "AsyncHyperBandScheduler",
    "DistributeResources",
    "HyperBandForBOHB",
    "HyperBandScheduler",
    "MedianStoppingRule",
    "ResourceChangingScheduler",
]
