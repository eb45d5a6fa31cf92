"""Hyperopt's TPE over a native, nested conditional space: sklearn models on digits.

The space is written with ``hyperopt.hp``: an ``hp.choice`` between two model families,
each with its own parameters, and inside the SGD family another ``hp.choice`` between
penalties, one of which has a parameter of its own. HyperOptSearch suggests whole
configs from it (only the parameters of the chosen branches), starts with two known
configurations (``points_to_evaluate``, given by value), and learns from each trial's
cross-validated accuracy. Run it with:

    uv run --all-extras python examples/hyperopt_search.py
"""

from __future__ import annotations

import math
import os
import tempfile

from hyperopt import hp

import tunekit as tune
from tunekit.search.hyperopt import HyperOptSearch

NUM_SAMPLES = 30


def train_digits(config: dict) -> None:
    """Three-fold cross-validated accuracy of the configured model on sklearn's digits."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    x, y = load_digits(return_X_y=True)
    model_cfg = config["model"]
    if model_cfg["family"] == "sgd":
        penalty = model_cfg["penalty"]
        model = SGDClassifier(
            loss=model_cfg["loss"],
            alpha=model_cfg["alpha"],
            penalty=penalty["type"],
            l1_ratio=penalty.get("l1_ratio", 0.15),
            max_iter=config["max_iter"],
            tol=None,
            random_state=0,
        )
        x = x / 16.0
    else:
        model = KNeighborsClassifier(n_neighbors=model_cfg["k"], weights=model_cfg["weights"])
    tune.report(mean_accuracy=float(cross_val_score(model, x, y, cv=3).mean()))


SPACE = {
    "model": hp.choice("model", [
        {
            "family": "sgd",
            "loss": hp.choice("loss", ["hinge", "log_loss", "modified_huber"]),
            "alpha": hp.loguniform("alpha", math.log(1e-6), math.log(1e-2)),
            "penalty": hp.choice("penalty", [
                {"type": "l2"},
                {"type": "elasticnet", "l1_ratio": hp.uniform("l1_ratio", 0.05, 0.95)},
            ]),
        },
        {
            "family": "knn",
            "k": hp.uniformint("k", 1, 15),
            "weights": hp.choice("weights", ["uniform", "distance"]),
        },
    ]),
}

POINTS = [
    {"model": {"family": "knn", "k": 3, "weights": "distance"}},
    {"model": {"family": "sgd", "loss": "hinge", "alpha": 1e-4,
               "penalty": {"type": "elasticnet", "l1_ratio": 0.5}}},
]


def main() -> None:
    local_dir = os.environ.get("TUNEKIT_RESULTS_DIR") or tempfile.mkdtemp(prefix="tunekit-hyperopt-")
    searcher = HyperOptSearch(SPACE, points_to_evaluate=POINTS, n_initial_points=10,
                              random_state_seed=0)
    analysis = tune.run(
        train_digits,
        name="hyperopt_digits",
        config={"max_iter": 20},  # constants still come from the run's config
        search_alg=searcher,
        num_samples=NUM_SAMPLES,
        max_concurrent_trials=2,
        metric="mean_accuracy",
        mode="max",
        local_dir=local_dir,
        verbose=1,
    )
    best = analysis.best_trial
    print(f"Best cross-validated accuracy: {best.last_result['mean_accuracy']:.4f} "
          f"with {best.config}")
    families = [t.config["model"]["family"] for t in analysis.trials]
    print(f"Trials per model family: sgd {families.count('sgd')}, knn {families.count('knn')}")
    losses = searcher.trials.losses()  # Hyperopt minimises: the negated accuracies
    print(f"Hyperopt's Trials object holds {len(losses)} results; best loss {min(losses):.4f}")
    print(f"Results in {analysis.experiment_path}")


if __name__ == "__main__":
    main()
