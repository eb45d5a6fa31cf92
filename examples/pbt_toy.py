"""Population Based Training on a toy whose best learning rate changes as it trains.

The toy's "model" is a number p that grows by up to 1 per step. It grows fastest
when log10(lr) is close to -p / 20: the best learning rate decays from 1 as p
grows, and an lr a quarter of a decade off gains nothing. No fixed learning rate
gets p past 10; PBT copies the best trials and perturbs their lr, so the population
follows the decaying schedule. The script compares PBT with the same 8 fixed
learning rates, then replays the schedule the best PBT trial followed.

Run it with:  uv run --all-extras python examples/pbt_toy.py
(it needs the tunekit-pbt plugin: `pip install tunekit-pbt`)
"""

import json
import math
import os
import random
import tempfile

import tunekit as tune
from tunekit.schedulers import PopulationBasedTraining, PopulationBasedTrainingReplay

STEPS = 30


def gain(lr, p):
    """Progress of one step: 1 when log10(lr) == -p / 20, 0 when a quarter decade off."""
    return max(0.0, 1.0 - abs(math.log10(lr) + p / 20.0) / 0.25)


def toy(config):
    # Continue from a checkpoint: our own after a pause, or another trial's after an exploit.
    p, step = 0.0, 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d, open(os.path.join(d, "state.json")) as f:
            state = json.load(f)
        p, step = state["p"], state["step"]
    while True:
        p += gain(config["lr"], p)
        step += 1
        # PBT needs a checkpoint at every perturbation point: report one each step.
        with tune.checkpoint_dir(step=step) as d, open(os.path.join(d, "state.json"), "w") as f:
            json.dump({"p": p, "step": step}, f)
        tune.report(p=p, lr=config["lr"])


def main():
    local_dir = os.environ.get("TUNEKIT_RESULTS_DIR") or tempfile.mkdtemp(prefix="tunekit-pbt-")
    common = dict(
        config={"lr": tune.grid_search([1.0, 0.7, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01])},
        stop={"training_iteration": STEPS},
        metric="p",
        mode="max",
        local_dir=local_dir,
        verbose=0,
    )

    fixed = tune.run(toy, name="fixed_lr", **common)
    print(f"Best p with a fixed learning rate: {fixed.best_result['p']:.2f} "
          f"(lr={fixed.best_config['lr']})")

    random.seed(0)  # PBT's random choices follow Python's random module
    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=3,  # rank the population every 3 steps
        hyperparam_mutations={"lr": tune.loguniform(1e-3, 1.0)},  # scaled by 1.2/0.8 or resampled
        synch=True,  # wait for the whole population at each point: reproducible
    )
    analysis = tune.run(toy, name="pbt", scheduler=pbt, **common)
    best = max(analysis.trials, key=lambda t: t.last_result["p"])
    print(f"Best p with PBT: {best.last_result['p']:.2f} (trial {best.trial_id}, "
          f"tag {best.experiment_tag})")

    # The best trial's policy file holds the schedule of configs that led to its state.
    policy_file = os.path.join(local_dir, "pbt", f"pbt_policy_{best.trial_id}.txt")
    replay_scheduler = PopulationBasedTrainingReplay(policy_file)
    print("The learning-rate schedule the best trial followed:")
    print(f"  from step 1: lr={replay_scheduler.config['lr']:.4f}")
    for step, new_config in replay_scheduler.policy:
        print(f"  from step {step + 1}: lr={new_config['lr']:.4f}")

    # Train one model with that schedule from scratch.
    replay = tune.run(toy, name="replay", stop={"training_iteration": STEPS},
                      scheduler=replay_scheduler, local_dir=local_dir, verbose=0)
    print(f"Replaying that schedule gives p = {replay.trials[0].last_result['p']:.2f}")
    print("Results in", local_dir)


if __name__ == "__main__":
    main()
