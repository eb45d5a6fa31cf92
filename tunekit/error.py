"""``tunekit.error`` (Ray path ``ray.tune.error``)."""

from tunekit_core.errors import TuneError

__all__ = ["TuneError"]
