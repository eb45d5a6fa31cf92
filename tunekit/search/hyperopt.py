"""``HyperOptSearch`` at Ray Tune's path (``ray.tune.search.hyperopt``).

Provided by the ``tunekit-hyperopt`` plugin distribution; importing this module
without it installed raises ImportError saying how to install it.
"""

from __future__ import annotations

from tunekit_core.registry import import_plugin_attribute

HyperOptSearch = import_plugin_attribute(
    "tunekit_hyperopt", "HyperOptSearch", "tunekit-hyperopt", "tunekit.search.hyperopt"
)

__all__ = ["HyperOptSearch"]
