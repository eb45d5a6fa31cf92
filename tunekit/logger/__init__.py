"""Result loggers (Ray Tune path: ``ray.tune.logger``).

:class:`LoggerCallback` is the base class of loggers. ``JsonLoggerCallback`` and
``CSVLoggerCallback`` come from the ``tunekit-loggers`` plugin distribution,
``TBXLoggerCallback`` from ``tunekit-tensorboard`` and ``MLflowLoggerCallback``
from ``tunekit-mlflow``; each is imported on first use.
"""

from __future__ import annotations

from typing import Any

from tunekit_core import registry
from tunekit_core.callback import LoggerCallback

__all__ = [
    "CSVLoggerCallback",
    "JsonLoggerCallback",
    "LoggerCallback",
    "MLflowLoggerCallback",
    "TBXLoggerCallback",
]

# Public name -> (module providing it, distribution providing that module).
_LAZY: dict[str, tuple[str, str]] = {
    "JsonLoggerCallback": ("tunekit_loggers", "tunekit-loggers"),
    "CSVLoggerCallback": ("tunekit_loggers", "tunekit-loggers"),
    "TBXLoggerCallback": ("tunekit_tensorboard", "tunekit-tensorboard"),
    "MLflowLoggerCallback": ("tunekit_mlflow", "tunekit-mlflow"),
}


def __getattr__(name: str) -> Any:
    try:
        module, distribution = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = registry.import_plugin_attribute(module, name, distribution, __name__)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
