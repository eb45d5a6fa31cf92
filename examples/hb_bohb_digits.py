"""HyperBandForBOHB (``hb_bohb``) on sklearn's digits data set, with Optuna's TPE searcher.

BOHB (Falkner et al., 2018) is HyperBand whose configurations come from a model-based
searcher that learns from the results at each budget. Ray Tune pairs
``HyperBandForBOHB`` with its ``TuneBOHB`` searcher (hpbandster/ConfigSpace).
**tunekit has no BOHB searcher**: this example shows what the scheduler itself does,
with the model-based searcher tunekit does have, Optuna's TPE (``tunekit-optuna``),
which learns from completed trials only. What ``hb_bohb`` does differently from
``hyperband``:

- a band fills its largest bracket first (the most trials, the earliest milestone);
- a trial that reaches its milestone is paused even while its bracket still takes
  trials, and the searcher hears of it (``on_pause(trial_id)``), then of its promotion
  (``on_unpause(trial_id)``); a BOHB searcher uses these to model each budget. TPE has
  no such methods, so the subclass below only counts the calls;
- every result carries ``hyperband_info`` (``{"budget": milestone}`` at a milestone),
  the budget a BOHB searcher reads.

With max_t=9 and reduction_factor=3 a band has brackets of 9 trials (milestones 1, 3,
9), 5 (3, 9) and 3 (9), largest first. Run it with:

    uv run --all-extras python examples/hb_bohb_digits.py

(``--smoke`` uses max_t=3: brackets of 3 and 2 trials, in seconds.)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter

import optuna

import tunekit as tune
from tunekit.schedulers import HyperBandForBOHB
from tunekit.search.optuna import OptunaSearch


class TPEWithBudgetEvents(OptunaSearch):
    """Optuna's TPE, plus the two calls HyperBandForBOHB makes to a BOHB searcher."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.events: list[tuple[str, str]] = []

    def on_pause(self, trial_id: str) -> None:
        self.events.append(("pause", trial_id))

    def on_unpause(self, trial_id: str) -> None:
        self.events.append(("unpause", trial_id))


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
    """One epoch of SGD per iteration; a checkpoint each epoch, so a paused trial resumes."""
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
    for epoch in range(start + 1, 100):
        order = np.random.RandomState(epoch).permutation(len(data["y_train"]))
        model.partial_fit(data["x_train"][order], data["y_train"][order], classes=np.arange(10))
        tune.report(
            {"mean_accuracy": float(model.score(data["x_val"], data["y_val"])), "epoch": epoch},
            checkpoint=tune.Checkpoint.from_dict({"epoch": epoch, "model": model}),
        )


def main(smoke: bool = False) -> None:
    max_t, num_samples = (3, 3 + 2) if smoke else (9, 9 + 5 + 3)  # one full band
    local_dir = os.environ.get("TUNEKIT_RESULTS_DIR") or tempfile.mkdtemp(prefix="tunekit-bohb-")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = TPEWithBudgetEvents(seed=0)
    scheduler = HyperBandForBOHB(max_t=max_t, reduction_factor=3)
    analysis = tune.run(
        tune.with_parameters(train_digits, data=load_data()),
        name="hb_bohb_digits",
        config={"alpha": tune.loguniform(1e-6, 1e-2), "eta0": tune.loguniform(1e-4, 1.0)},
        search_alg=searcher,
        num_samples=num_samples,
        metric="mean_accuracy",
        mode="max",
        scheduler=scheduler,
        local_dir=local_dir,
        verbose=0,
    )
    print(scheduler.debug_string())
    for trial in analysis.trials:
        with open(os.path.join(trial.local_path, "result.json")) as f:
            budgets = [json.loads(line)["hyperband_info"].get("budget") for line in f]
        reached = [b for b in budgets if b is not None]
        print(f"  {trial.trial_id}: {len(budgets)} epochs, accuracy "
              f"{trial.last_result['mean_accuracy']:.3f}, budgets reached {reached}")
    events = Counter(event for event, _ in searcher.events)
    print(f"Searcher calls: on_pause {events['pause']} times (a trial waits at a milestone), "
          f"on_unpause {events['unpause']} times (a waiting trial was promoted).")
    best = analysis.best_trial
    epochs = [t.last_result["training_iteration"] for t in analysis.trials]
    print(f"Best validation accuracy: {best.last_result['mean_accuracy']:.4f} "
          f"after {best.last_result['training_iteration']} epochs with {best.config}")
    print(f"Total epochs trained: {sum(epochs)} (of {len(epochs) * max_t} without "
          "early stopping)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="HyperBandForBOHB with Optuna's TPE on digits.")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that takes seconds")
    main(smoke=parser.parse_args().smoke)
