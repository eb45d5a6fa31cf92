"""``BasicVariantGenerator`` at Ray Tune's path (``ray.tune.search.basic_variant``).

Provided by the ``tunekit-basic-search`` plugin; importing this module without
it installed raises ImportError saying how to install it.
"""

from __future__ import annotations

from tunekit.search import BasicVariantGenerator

__all__ = ["BasicVariantGenerator"]
