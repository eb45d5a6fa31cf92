"""``OptunaSearch`` at Ray Tune's path (``ray.tune.search.optuna``).

Provided by the ``tunekit-optuna`` plugin distribution; importing this module
without it installed raises ImportError saying how to install it.
"""

from __future__ import annotations

from tunekit_core.registry import import_plugin_attribute

OptunaSearch = import_plugin_attribute(
    "tunekit_optuna", "OptunaSearch", "tunekit-optuna", "tunekit.search.optuna"
)

__all__ = ["OptunaSearch"]
