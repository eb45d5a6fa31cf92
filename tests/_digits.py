"""The real task of the scheduler tests: sklearn's SGDClassifier on the bundled digits data.

One training iteration is one epoch of ``partial_fit`` over a fixed shuffle of the
training split; the metric is the accuracy on a fixed validation split. Everything
is deterministic given the config and the epoch, so a model restored from a
checkpoint continues exactly as it would have. (The same set-up as
``examples/asha_digits.py``; imported by the worker processes, which get the tests
folder on their path.)
"""

from __future__ import annotations

import tunekit as tune

#: The hyperparameters tuned in the real runs.
DIGITS_SPACE = {
    "alpha": tune.loguniform(1e-6, 1e-2),
    "eta0": tune.loguniform(1e-4, 1.0),
}

_DIGITS: dict = {}


def digits() -> dict:
    """Train/validation split (75/25) of sklearn's digits, cached per process."""
    if not _DIGITS:
        import numpy as np
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        order = np.random.RandomState(0).permutation(len(y))
        x = x[order] / 16.0
        y = y[order]
        cut = int(0.75 * len(y))
        _DIGITS.update(x_train=x[:cut], y_train=y[:cut], x_val=x[cut:], y_val=y[cut:])
    return _DIGITS


def new_model(config: dict):
    """An untrained SGDClassifier with the config's ``alpha`` and constant ``eta0``."""
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(alpha=config["alpha"], learning_rate="constant", eta0=config["eta0"],
                         random_state=0)


def validation_accuracy(model) -> float:
    data = digits()
    return float(model.score(data["x_val"], data["y_val"]))


def train_epoch(model, epoch: int) -> float:
    """One epoch of ``partial_fit`` (shuffled by ``epoch``); returns the validation accuracy."""
    import numpy as np

    data = digits()
    order = np.random.RandomState(epoch).permutation(len(data["y_train"]))
    model.partial_fit(data["x_train"][order], data["y_train"][order], classes=np.arange(10))
    return validation_accuracy(model)
