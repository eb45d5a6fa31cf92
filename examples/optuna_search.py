"""Optuna's TPE with ASHA: tune sklearn's SGDClassifier on the bundled digits data set.

The search space is a tunekit config with a conditional part: the elastic-net mixing
ratio ``l1_ratio`` only exists when the penalty is ``"elasticnet"``. OptunaSearch turns
it into Optuna distributions (asking Optuna for ``l1_ratio`` only in the trials that
chose that penalty), starts from a known good configuration (``points_to_evaluate``),
reports every epoch's accuracy to the Optuna trial, and ASHA stops weak trials early.
Run it with:

    uv run --all-extras python examples/optuna_search.py
"""

from __future__ import annotations

import os
import tempfile

import optuna

import tunekit as tune
from tunekit.schedulers import ASHAScheduler
from tunekit.search.optuna import OptunaSearch

MAX_EPOCHS = 20
NUM_SAMPLES = 30


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

    penalty = config["penalty"]
    model = SGDClassifier(
        loss=config["loss"],
        alpha=config["alpha"],
        penalty=penalty["type"],
        l1_ratio=penalty.get("l1_ratio", 0.15),
        learning_rate="constant",
        eta0=config["eta0"],
        random_state=0,
    )
    classes = np.arange(10)
    for epoch in range(1, MAX_EPOCHS + 1):
        order = np.random.RandomState(epoch).permutation(len(data["y_train"]))
        model.partial_fit(data["x_train"][order], data["y_train"][order], classes=classes)
        tune.report(mean_accuracy=float(model.score(data["x_val"], data["y_val"])))


SEARCH_SPACE = {
    "loss": tune.choice(["hinge", "log_loss", "modified_huber"]),
    "alpha": tune.loguniform(1e-6, 1e-2),
    "eta0": tune.loguniform(1e-4, 1.0),
    "penalty": tune.choice([
        {"type": "l2"},
        {"type": "elasticnet", "l1_ratio": tune.quniform(0.05, 0.95, 0.05)},
    ]),
}

# A configuration known to work reasonably well: evaluated first.
KNOWN_GOOD = {"loss": "hinge", "alpha": 1e-4, "eta0": 0.01, "penalty": {"type": "l2"}}


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tunekit reports progress itself
    local_dir = os.environ.get("TUNEKIT_RESULTS_DIR") or tempfile.mkdtemp(prefix="tunekit-optuna-")
    searcher = OptunaSearch(points_to_evaluate=[KNOWN_GOOD], seed=0)
    analysis = tune.run(
        tune.with_parameters(train_digits, data=load_data()),
        name="optuna_digits",
        config=SEARCH_SPACE,
        search_alg=searcher,
        scheduler=ASHAScheduler(max_t=MAX_EPOCHS, grace_period=2, reduction_factor=3),
        num_samples=NUM_SAMPLES,
        max_concurrent_trials=2,
        metric="mean_accuracy",
        mode="max",
        local_dir=local_dir,
        verbose=1,
    )
    best = analysis.best_trial
    print(f"Best validation accuracy: {best.last_result['mean_accuracy']:.4f} "
          f"with {best.config}")
    study = searcher.study
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    print(f"The Optuna study holds {len(study.trials)} trials ({len(complete)} complete); "
          f"its best value is {study.best_value:.4f} with parameters {study.best_params}")
    epochs = sum(t.last_result.get("training_iteration", 0) for t in analysis.trials)
    print(f"Epochs trained: {epochs} of {NUM_SAMPLES * MAX_EPOCHS} without early stopping")
    print(f"Results in {analysis.experiment_path}")


if __name__ == "__main__":
    main()
