"""``tunekit.experiment`` (Ray path ``ray.tune.experiment``)."""

from tunekit_core.experiment import Experiment, register_trainable
from tunekit_core.trial import Trial

__all__ = ["Experiment", "Trial", "register_trainable"]
