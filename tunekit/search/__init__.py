"""Search algorithms (``tunekit.search``, like ``ray.tune.search``).

``Searcher`` and ``ConcurrencyLimiter`` live in the core. ``BasicVariantGenerator``
(random and grid search, the default search algorithm) comes from the
``tunekit-basic-search`` plugin distribution and is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tunekit_core.repeater import Repeater
from tunekit_core.searcher import ConcurrencyLimiter, Searcher

__all__ = [
    "Searcher",
    "ConcurrencyLimiter",
    "Repeater",
    "BasicVariantGenerator",
    "OptunaSearch",
    "HyperOptSearch",
    "create_searcher",
]

_PLUGIN_EXPORTS = {
    "BasicVariantGenerator": ("tunekit_basic_search", "tunekit-basic-search"),
    "OptunaSearch": ("tunekit_optuna", "tunekit-optuna"),
    "HyperOptSearch": ("tunekit_hyperopt", "tunekit-hyperopt"),
}


def create_searcher(search_alg: str, /, **kwargs: Any) -> Searcher:
    """Instantiate the searcher registered under ``search_alg`` (e.g. ``"random"``)."""
    from tunekit_core import registry

    return registry.create("searcher", search_alg, **kwargs)


def __getattr__(name: str) -> Any:
    target = _PLUGIN_EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'tunekit.search' has no attribute {name!r}")
    module_name, dist = target
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name != module_name:
            raise
        raise ImportError(
            f"{name} is provided by the {dist!r} plugin distribution, which is not installed. "
            f"Install it with `pip install {dist}`."
        ) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from tunekit_basic_search import BasicVariantGenerator  # noqa: F401
    from tunekit_hyperopt import HyperOptSearch  # noqa: F401
    from tunekit_optuna import OptunaSearch  # noqa: F401
