"""Analysis of finished or running experiments (Ray Tune path: ``ray.tune.analysis``)."""

from tunekit_core.analysis import ExperimentAnalysis

__all__ = ["ExperimentAnalysis"]
