"""Population Based Training on a toy whose best learning rate changes as it trains.

The toy's "model" is a number p that grows by up to 1 per step. It grows fastest
when log10(lr) is close to -p / 20: the best learning rate decays from 1 as p
grows, and an lr a quarter of a decade off gains nothing. No fixed learning rate
gets p past 10; PBT copies the best trials and perturbs their lr, so the population
follows the decaying schedule. The script compares PBT with the same 8 fixed
learning rates, then replays the schedule the best PBT trial followed.

Run it with:  uv run --all-extras python examples/pbt_toy.py
(it needs the tunekit-pbt plugin: `pip install tunekit-pbt`; ``--smoke`` trains 4
trials for 9 steps, which is too short to beat the fixed rates but shows every step)
"""

import argparse
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


def main(smoke=False):
    steps = 9 if smoke else STEPS
    lrs = [1.0, 0.3, 0.05, 0.01] if smoke else [1.0, 0.7, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01]
    local_dir = os.environ.get("TUNEKIT_RESULTS_DIR") or tempfile.mkdtemp(prefix="tunekit-pbt-")
    common = dict(
        config={"lr": tune.grid_search(lrs)},
        stop={"training_iteration": steps},
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

    # A trial's policy file holds the schedule of configs that led to its state; only
    # trials that exploited another one have one (the others kept their lr throughout).
    def policy_file(trial):
        return os.path.join(local_dir, "pbt", f"pbt_policy_{trial.trial_id}.txt")

    exploited = [t for t in analysis.trials if os.path.exists(policy_file(t))]
    followed = max(exploited, key=lambda t: t.last_result["p"])
    if followed is not best:
        print(f"The best trial kept lr={best.config['lr']}; the best one that exploited "
              f"reached p = {followed.last_result['p']:.2f}.")
    replay_scheduler = PopulationBasedTrainingReplay(policy_file(followed))
    print(f"The learning-rate schedule trial {followed.trial_id} followed:")
    print(f"  from step 1: lr={replay_scheduler.config['lr']:.4f}")
    for step, new_config in replay_scheduler.policy:
        print(f"  from step {step + 1}: lr={new_config['lr']:.4f}")

    # Train one model with that schedule from scratch.
    replay = tune.run(toy, name="replay", stop={"training_iteration": steps},
                      scheduler=replay_scheduler, local_dir=local_dir, verbose=0)
    print(f"Replaying that schedule gives p = {replay.trials[0].last_result['p']:.2f}")
    print("Results in", local_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Population Based Training on a toy.")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that takes seconds")
    main(smoke=parser.parse_args().smoke)
