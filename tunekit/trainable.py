"""``tunekit.trainable`` (Ray path ``ray.tune.trainable``)."""

from tunekit_core.trainable import Trainable
from tunekit_core.with_parameters import with_parameters

__all__ = ["Trainable", "with_parameters"]
