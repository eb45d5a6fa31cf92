"""Integrations with other tools (Ray Tune path: ``ray.tune.integration``).

``tunekit.integration.mlflow`` holds ``MLflowLoggerCallback`` (also importable
from ``tunekit.logger``), from the ``tunekit-mlflow`` plugin distribution.
"""
