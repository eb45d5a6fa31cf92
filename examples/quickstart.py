"""A small real tuning run: grid search plus random search over a function trainable.

Fits y = a*x + b to noisy data by gradient descent; the learning rate and momentum
are tuned. Run it with:  uv run --all-extras python examples/quickstart.py
"""

import os
import random
import tempfile

import tunekit as tune


def make_data(n=200, seed=0):
    rng = random.Random(seed)
    xs = [rng.uniform(-1, 1) for _ in range(n)]
    return [(x, 3.0 * x + 0.5 + rng.gauss(0, 0.1)) for x in xs]


def train_linear(config, data):
    a = b = 0.0
    va = vb = 0.0
    lr, momentum = config["lr"], config["momentum"]
    for epoch in range(config["epochs"]):
        ga = sum(2 * (a * x + b - y) * x for x, y in data) / len(data)
        gb = sum(2 * (a * x + b - y) for x, y in data) / len(data)
        va = momentum * va - lr * ga
        vb = momentum * vb - lr * gb
        a, b = a + va, b + vb
        mse = sum((a * x + b - y) ** 2 for x, y in data) / len(data)
        tune.report(mse=mse, a=a, b=b, epoch=epoch)


def main():
    local_dir = os.environ.get("TUNEKIT_RESULTS_DIR") or tempfile.mkdtemp(prefix="tunekit-quickstart-")
    analysis = tune.run(
        tune.with_parameters(train_linear, data=make_data()),
        name="quickstart",
        config={
            "momentum": tune.grid_search([0.0, 0.5, 0.9]),  # every grid point ...
            "lr": tune.loguniform(1e-3, 3e-1),  # ... with random learning rates
            "epochs": 30,
        },
        num_samples=4,  # 3 grid points x 4 samples = 12 trials
        metric="mse",
        mode="min",
        stop={"training_iteration": 25},  # stop after 25 of the 30 epochs
        local_dir=local_dir,
        verbose=1,
    )
    print()
    print("Best config:", {k: analysis.best_config[k] for k in ("lr", "momentum")})
    print(f"Best mse: {analysis.best_result['mse']:.5f}")
    df = analysis.results_df[["config/momentum", "config/lr", "mse", "training_iteration"]]
    print(df.sort_values("mse").to_string())
    print("Results in", os.path.join(local_dir, "quickstart"))


if __name__ == "__main__":
    main()
