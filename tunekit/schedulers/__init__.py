"""Trial schedulers (Ray Tune path: ``ray.tune.schedulers``).

:class:`TrialScheduler` is the base class scheduler plugins subclass. The
scheduler classes themselves live in plugin distributions and are imported on
first use; :func:`create_scheduler` resolves any installed scheduler by name.
"""

from __future__ import annotations

from typing import Any

from tunekit_core import registry
from tunekit_core.scheduler import TrialScheduler

__all__ = ["FIFOScheduler", "TrialScheduler", "create_scheduler"]

# Public name -> (module providing it, distribution providing that module).
# Adding a scheduler class is one line here (and one in __all__).
_LAZY: dict[str, tuple[str, str]] = {
    "FIFOScheduler": ("tunekit_fifo", "tunekit-fifo"),
    "PopulationBasedTraining": ("tunekit_pbt", "tunekit-pbt"),
    "PopulationBasedTrainingReplay": ("tunekit_pbt", "tunekit-pbt"),
    "PB2": ("tunekit_pbt", "tunekit-pbt"),
    "AsyncHyperBandScheduler": ("tunekit_hyperband", "tunekit-hyperband"),
    "ASHAScheduler": ("tunekit_hyperband", "tunekit-hyperband"),
    "HyperBandScheduler": ("tunekit_hyperband", "tunekit-hyperband"),
    "HyperBandForBOHB": ("tunekit_hyperband", "tunekit-hyperband"),
    "MedianStoppingRule": ("tunekit_hyperband", "tunekit-hyperband"),
    "ResourceChangingScheduler": ("tunekit_hyperband", "tunekit-hyperband"),
    "DistributeResources": ("tunekit_hyperband", "tunekit-hyperband"),
}


def create_scheduler(scheduler: str, /, **kwargs: Any) -> TrialScheduler:
    """Instantiate the scheduler installed under the name ``scheduler`` with ``kwargs``.

    For example ``create_scheduler("fifo")``. An unknown name raises
    ``UnknownPluginError`` (a ValueError) listing the installed schedulers; the name
    of a scheduler whose tunekit plugin distribution is not installed raises its
    subclass ``MissingPluginError``, also an ImportError, naming the distribution.
    """
    return registry.create("scheduler", scheduler, **kwargs)


def __getattr__(name: str) -> Any:
    try:
        module, distribution = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = registry.import_plugin_attribute(module, name, distribution, __name__)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
