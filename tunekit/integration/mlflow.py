"""``MLflowLoggerCallback`` at Ray Tune's path (``ray.tune.integration.mlflow``).

Provided by the ``tunekit-mlflow`` plugin distribution; importing this module
without it installed raises ImportError saying how to install it.
"""

from __future__ import annotations

from tunekit_core.registry import import_plugin_attribute

MLflowLoggerCallback = import_plugin_attribute(
    "tunekit_mlflow", "MLflowLoggerCallback", "tunekit-mlflow", "tunekit.integration.mlflow"
)

__all__ = ["MLflowLoggerCallback"]
