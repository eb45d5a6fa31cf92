"""Callbacks (Ray Tune path: ``ray.tune.callback``)."""

from tunekit_core.callback import Callback

__all__ = ["Callback"]
