"""Experiment progress reporting (Ray Tune path: ``ray.tune.progress_reporter``)."""

from tunekit_core.progress import (
    CLIReporter,
    JupyterNotebookReporter,
    ProgressReporter,
    detect_reporter,
)

__all__ = ["CLIReporter", "JupyterNotebookReporter", "ProgressReporter", "detect_reporter"]
