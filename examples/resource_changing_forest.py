"""ResourceChangingScheduler: give the CPUs that early stopping frees to the trials left.

Each trial grows a random forest on sklearn's digits data set, 10 trees per training
iteration (``warm_start``), fitting them with as many processes (``n_jobs``) as the
trial has CPUs. ASHA stops the weak configurations early; ResourceChangingScheduler
wraps it, and its default allocation (``DistributeResources``) spreads the machine's
free CPUs evenly over the trials still alive. A trial whose resources change is
restarted from its latest checkpoint with the new CPUs, so the trainable reports a
checkpoint every iteration. The script prints the CPUs each trial had at each step:
as the search ends, the last trials take the CPUs the others left.

Run it with:  uv run --all-extras python examples/resource_changing_forest.py
(``--smoke`` runs 3 trials of at most 4 iterations, in seconds: the tests use it)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import tunekit as tune
from tunekit.schedulers import ASHAScheduler, DistributeResources, ResourceChangingScheduler

TREES_PER_STEP = 10


def load_data(seed: int = 0) -> dict:
    """Digits as a 75/25 train/validation split."""
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.RandomState(seed).permutation(len(y))
    x, y = x[order], y[order]
    cut = int(0.75 * len(y))
    return {"x_train": x[:cut], "y_train": y[:cut], "x_val": x[cut:], "y_val": y[cut:]}


def train_forest(config: dict, data: dict) -> None:
    """Adds TREES_PER_STEP trees per iteration, in parallel on the trial's CPUs."""
    from sklearn.ensemble import RandomForestClassifier

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # restarted (with new resources): continue the forest
        forest = checkpoint.to_dict()["forest"]
    else:
        forest = RandomForestClassifier(n_estimators=0, warm_start=True, random_state=0,
                                        max_depth=config["max_depth"],
                                        max_features=config["max_features"])
    cpus = int(tune.get_trial_resources()["CPU"])
    forest.set_params(n_jobs=cpus)
    while forest.n_estimators < config["max_trees"]:
        forest.set_params(n_estimators=forest.n_estimators + TREES_PER_STEP)
        forest.fit(data["x_train"], data["y_train"])
        tune.report(
            {"mean_accuracy": float(forest.score(data["x_val"], data["y_val"])),
             "trees": forest.n_estimators, "cpus": cpus},
            checkpoint=tune.Checkpoint.from_dict({"forest": forest}),
        )


def main(smoke: bool = False) -> None:
    num_samples, max_steps = (3, 4) if smoke else (8, 10)
    local_dir = os.environ.get("TUNEKIT_RESULTS_DIR") or tempfile.mkdtemp(prefix="tunekit-rcs-")
    scheduler = ResourceChangingScheduler(
        base_scheduler=ASHAScheduler(max_t=max_steps, grace_period=2, reduction_factor=3),
        resources_allocation_function=DistributeResources(),  # the default, shown here
    )
    analysis = tune.run(
        tune.with_parameters(train_forest, data=load_data()),
        name="resource_changing_forest",
        config={"max_depth": tune.choice([2, 4, 8, 16]),
                "max_features": tune.choice([0.05, 0.2, 0.5]),
                "max_trees": max_steps * TREES_PER_STEP},
        num_samples=num_samples,
        metric="mean_accuracy",
        mode="max",
        scheduler=scheduler,
        resources_per_trial={"cpu": 1},  # what every trial starts with
        keep_checkpoints_num=2,  # a restart needs only the latest
        local_dir=local_dir,
        verbose=0,
    )
    print("CPUs of each trial at each iteration (ASHA stopped the short ones):")
    for trial in analysis.trials:
        with open(os.path.join(trial.local_path, "result.json")) as f:
            cpus = [json.loads(line)["cpus"] for line in f]
        print(f"  {trial.trial_id} {trial.config['max_depth']:>2} deep, max_features "
              f"{trial.config['max_features']:<4}: accuracy "
              f"{trial.last_result['mean_accuracy']:.3f}, CPUs {cpus}")
    best = analysis.best_trial
    print(f"Best validation accuracy: {best.last_result['mean_accuracy']:.4f} with "
          f"{best.last_result['trees']} trees, {best.config}")
    print(f"Results in {analysis.experiment_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="ResourceChangingScheduler wrapping ASHA.")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that takes seconds")
    main(smoke=parser.parse_args().smoke)
