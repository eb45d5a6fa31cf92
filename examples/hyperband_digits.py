"""HyperBand on a real task: sklearn's SGDClassifier on the bundled digits data set.

HyperBand pauses trials at its milestones and resumes the best ones from their
checkpoints, so the trainable reports a checkpoint (the model) every epoch and starts
from ``tunekit.get_checkpoint()`` when there is one. With max_t=27 and
reduction_factor=3 a band has 4 brackets of 4, 6, 12 and 27 trials whose first
milestones are 27, 9, 3 and 1 epochs. Run it with:

    uv run --all-extras python examples/hyperband_digits.py

(``--smoke`` runs one band with max_t=3: brackets of 2 and 3 trials, in seconds.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import Counter

import tunekit as tune
from tunekit.schedulers import HyperBandScheduler

MAX_EPOCHS = 27


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
    """One epoch of SGD per iteration, continuing from the latest checkpoint if any."""
    import numpy as np
    from sklearn.linear_model import SGDClassifier

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        state = checkpoint.to_dict()
        start, model = state["epoch"], state["model"]
    else:
        model = SGDClassifier(alpha=config["alpha"], learning_rate="constant",
                              eta0=config["eta0"], random_state=0)
    for epoch in range(start + 1, MAX_EPOCHS + 1):
        order = np.random.RandomState(epoch).permutation(len(data["y_train"]))
        model.partial_fit(data["x_train"][order], data["y_train"][order], classes=np.arange(10))
        tune.report(
            {"mean_accuracy": float(model.score(data["x_val"], data["y_val"])), "epoch": epoch},
            checkpoint=tune.Checkpoint.from_dict({"epoch": epoch, "model": model}),
        )


def main(smoke: bool = False) -> None:
    local_dir = os.environ.get("TUNEKIT_RESULTS_DIR") or tempfile.mkdtemp(prefix="tunekit-hb-")
    # one full band: with max_t=27 brackets of 4 + 6 + 12 + 27 trials; with 3, of 2 + 3
    max_t, num_samples = (3, 2 + 3) if smoke else (MAX_EPOCHS, 4 + 6 + 12 + 27)
    scheduler = HyperBandScheduler(max_t=max_t, reduction_factor=3)
    analysis = tune.run(
        tune.with_parameters(train_digits, data=load_data()),
        name="hyperband_digits",
        config={"alpha": tune.loguniform(1e-6, 1e-2), "eta0": tune.loguniform(1e-4, 1.0)},
        num_samples=num_samples,
        metric="mean_accuracy",
        mode="max",
        scheduler=scheduler,
        keep_checkpoints_num=1,
        local_dir=local_dir,
        verbose=0 if smoke else 1,
    )
    best = analysis.best_trial
    epochs = [t.last_result.get("training_iteration", 0) for t in analysis.trials]
    print(scheduler.debug_string())
    print(f"Best validation accuracy: {best.last_result['mean_accuracy']:.4f} "
          f"after {best.last_result['training_iteration']} epochs with {best.config}")
    print(f"Epochs per trial -> number of trials: {dict(sorted(Counter(epochs).items()))}")
    print(f"Total epochs trained: {sum(epochs)} (of {len(epochs) * max_t} without "
          "early stopping)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="HyperBand on sklearn's digits data set.")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that takes seconds")
    main(smoke=parser.parse_args().smoke)
