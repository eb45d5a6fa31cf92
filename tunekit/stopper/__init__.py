"""Stopping rules for trials and experiments (Ray Tune path: ``ray.tune.stopper``)."""

from tunekit_core.stopper import (
    CombinedStopper,
    CriteriaStopper,
    ExperimentPlateauStopper,
    FunctionStopper,
    MaximumIterationStopper,
    NoopStopper,
    StopCriterionError,
    Stopper,
    TimeoutStopper,
    TrialPlateauStopper,
)

__all__ = [
    "CombinedStopper",
    "CriteriaStopper",
    "ExperimentPlateauStopper",
    "FunctionStopper",
    "MaximumIterationStopper",
    "NoopStopper",
    "StopCriterionError",
    "Stopper",
    "TimeoutStopper",
    "TrialPlateauStopper",
]
