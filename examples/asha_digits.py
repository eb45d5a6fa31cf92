"""ASHA on a real task: tune sklearn's SGDClassifier on the bundled digits data set.

40 trials, one epoch per training iteration, at most 30 epochs each. ASHA stops the
weak trials at its rungs (1, 4 and 16 epochs with reduction_factor=4), so the run
trains far fewer than 40 x 30 epochs. Run it with:

    uv run --all-extras python examples/asha_digits.py

(``--smoke`` runs 8 trials of at most 8 epochs, in seconds: the tests use it.)
"""

from __future__ import annotations

import argparse
import os
import tempfile

import tunekit as tune
from tunekit.schedulers import ASHAScheduler

MAX_EPOCHS = 30


def load_data(seed: int = 0) -> dict:
    """Digits as a 75/25 train/validation split, pixels scaled to [0, 1]."""
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.RandomState(seed).permutation(len(y))
    x, y = x[order] / 16.0, y[order]
    cut = int(0.75 * len(y))
    return {"x_train": x[:cut], "y_train": y[:cut], "x_val": x[cut:], "y_val": y[cut:]}


def train_digits(config: dict, data: dict) -> None:
    """One epoch of SGD per iteration; reports the validation accuracy."""
    import numpy as np
    from sklearn.linear_model import SGDClassifier

    model = SGDClassifier(
        loss=config["loss"],
        alpha=config["alpha"],
        learning_rate="constant",
        eta0=config["eta0"],
        random_state=0,
    )
    classes = np.arange(10)
    for epoch in range(1, MAX_EPOCHS + 1):
        order = np.random.RandomState(epoch).permutation(len(data["y_train"]))
        model.partial_fit(data["x_train"][order], data["y_train"][order], classes=classes)
        tune.report(mean_accuracy=float(model.score(data["x_val"], data["y_val"])), epoch=epoch)


SEARCH_SPACE = {
    "loss": tune.choice(["hinge", "log_loss", "modified_huber"]),
    "alpha": tune.loguniform(1e-6, 1e-2),
    "eta0": tune.loguniform(1e-4, 1.0),
}


def main(smoke: bool = False) -> None:
    num_samples, max_epochs = (8, 8) if smoke else (40, MAX_EPOCHS)
    local_dir = os.environ.get("TUNEKIT_RESULTS_DIR") or tempfile.mkdtemp(prefix="tunekit-asha-")
    analysis = tune.run(
        tune.with_parameters(train_digits, data=load_data()),
        name="asha_digits",
        config=SEARCH_SPACE,
        num_samples=num_samples,
        metric="mean_accuracy",
        mode="max",
        scheduler=ASHAScheduler(max_t=max_epochs, grace_period=1, reduction_factor=4),
        local_dir=local_dir,
        verbose=0 if smoke else 1,
    )
    best = analysis.best_trial
    epochs = sum(t.last_result.get("training_iteration", 0) for t in analysis.trials)
    print(f"Best validation accuracy: {best.last_result['mean_accuracy']:.4f} "
          f"after {best.last_result['training_iteration']} epochs with {best.config}")
    print(f"Total epochs trained: {epochs} (of {num_samples * max_epochs} without early "
          "stopping)")
    print(f"Results in {analysis.experiment_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="ASHA on sklearn's digits data set.")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that takes seconds")
    main(smoke=parser.parse_args().smoke)
