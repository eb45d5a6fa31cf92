"""The median stopping rule on a real task: sklearn's SGDClassifier on the digits data set.

20 trials, one epoch per training iteration, at most 30 epochs each. From epoch 3 on
(``grace_period``), at every epoch a trial is stopped when its best validation accuracy
so far is below the median of the other trials' running averages at that epoch (once
at least 3 other trials got that far). No rungs and no checkpoints: trials are judged
at every result, and the rule needs only a progress measure. Run it with:

    uv run --all-extras python examples/median_stopping_digits.py

(``--smoke`` runs 6 trials of at most 8 epochs, in seconds: the tests use it.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import Counter

import tunekit as tune
from tunekit.schedulers import MedianStoppingRule

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

    model = SGDClassifier(alpha=config["alpha"], learning_rate="constant", eta0=config["eta0"],
                          random_state=0)
    for epoch in range(1, config["epochs"] + 1):
        order = np.random.RandomState(epoch).permutation(len(data["y_train"]))
        model.partial_fit(data["x_train"][order], data["y_train"][order], classes=np.arange(10))
        tune.report(mean_accuracy=float(model.score(data["x_val"], data["y_val"])), epoch=epoch)


def main(smoke: bool = False) -> None:
    num_samples, epochs = (6, 8) if smoke else (20, MAX_EPOCHS)
    local_dir = os.environ.get("TUNEKIT_RESULTS_DIR") or tempfile.mkdtemp(prefix="tunekit-msr-")
    scheduler = MedianStoppingRule(
        time_attr="training_iteration",  # compare trials at equal epochs (default: seconds)
        grace_period=3,                  # no stopping, and no averaging, before epoch 3
        min_samples_required=3,          # the median needs 3 other trials at that epoch
    )
    analysis = tune.run(
        tune.with_parameters(train_digits, data=load_data()),
        name="median_stopping_digits",
        config={"alpha": tune.loguniform(1e-6, 1e-2), "eta0": tune.loguniform(1e-4, 1.0),
                "epochs": epochs},
        num_samples=num_samples,
        metric="mean_accuracy",
        mode="max",
        scheduler=scheduler,
        local_dir=local_dir,
        verbose=0 if smoke else 1,
    )
    best = analysis.best_trial
    trained = [t.last_result["training_iteration"] for t in analysis.trials]
    print(f"Best validation accuracy: {best.last_result['mean_accuracy']:.4f} "
          f"after {best.last_result['training_iteration']} epochs with {best.config}")
    print(f"Epochs per trial -> number of trials: {dict(sorted(Counter(trained).items()))}")
    print(f"Total epochs trained: {sum(trained)} (of {num_samples * epochs} without "
          "early stopping)")
    print(f"Results in {analysis.experiment_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The median stopping rule on digits.")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that takes seconds")
    main(smoke=parser.parse_args().smoke)
