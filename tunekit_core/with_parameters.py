"""``with_parameters``: hand large objects to trials without putting them in the config."""

from __future__ import annotations

import inspect
from typing import Any

from .experiment import is_class_trainable, trainable_name


class _FunctionWithParameters:
    """A function trainable bound to extra keyword arguments.

    The bound objects travel with the trainable, which is serialised once per
    experiment and sent once to each worker (through a file when large), never
    once per trial and never inside the config.
    """

    def __init__(self, fn, kwargs: dict[str, Any]):
        self._fn = fn
        self._kwargs = kwargs
        self.__name__ = trainable_name(fn)
        self.__qualname__ = self.__name__
        params = [inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        try:
            self._takes_checkpoint_dir = "checkpoint_dir" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            self._takes_checkpoint_dir = False
        if self._takes_checkpoint_dir:
            params.append(
                inspect.Parameter(
                    "checkpoint_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None
                )
            )
        self.__signature__ = inspect.Signature(params)

    def __call__(self, config, checkpoint_dir=None):
        if self._takes_checkpoint_dir:
            return self._fn(config, checkpoint_dir=checkpoint_dir, **self._kwargs)
        return self._fn(config, **self._kwargs)


def with_parameters(trainable: Any, **kwargs: Any) -> Any:
    """Bind keyword arguments (large datasets, models) to a trainable.

    A function trainable receives them as keyword arguments after ``config``; a
    class trainable receives them in ``setup(config, **kwargs)``.
    """
    if not kwargs:
        return trainable
    if is_class_trainable(trainable):
        bound = dict(kwargs)

        class _TrainableWithParameters(trainable):
            def setup(self, config):
                return trainable.setup(self, config, **bound)

        _TrainableWithParameters.__name__ = trainable.__name__
        _TrainableWithParameters.__qualname__ = trainable.__qualname__
        return _TrainableWithParameters
    if not callable(trainable):
        raise TypeError(
            "with_parameters() needs a function or a Trainable subclass, got "
            f"{type(trainable).__name__}."
        )
    return _FunctionWithParameters(trainable, dict(kwargs))
