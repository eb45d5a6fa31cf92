"""Experiment progress reporting (Ray Tune path: ``ray.tune.progress_reporter``)."""

from tunekit_core.progress import CLIReporter, ProgressReporter, detect_reporter

__all__ = ["CLIReporter", "ProgressReporter", "detect_reporter"]
