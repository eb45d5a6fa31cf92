"""PB2 (Population Based Bandits) on the toy of examples/pbt_toy.py, with a small population.

The toy's "model" is a number p that grows by up to 1 per step, fastest when
log10(lr) is close to -p / 20: the best learning rate decays from 1 as p grows, and
no fixed learning rate gets p past 10. PB2 is PBT whose explore step fits a Gaussian
process to how much the metric improved per perturbation interval for which lr, and
picks the next lr in ``hyperparam_bounds`` with an upper-confidence-bound rule; it
needs fewer trials than PBT's random perturbations. The script compares 4 fixed
learning rates with a PB2 population of the same 4 starting points and prints the lr
schedule each trial followed.

Run it with:  uv run --all-extras python examples/pb2_toy.py
(it needs the tunekit-pbt plugin: `pip install tunekit-pbt`; ``--smoke`` trains for 9
steps instead of 30, in seconds)
"""

import argparse
import json
import math
import os
import random
import tempfile

import tunekit as tune
from tunekit.schedulers import PB2

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
        # PB2, like PBT, needs a checkpoint at every perturbation point: report one each step.
        with tune.checkpoint_dir(step=step) as d, open(os.path.join(d, "state.json"), "w") as f:
            json.dump({"p": p, "step": step}, f)
        tune.report(p=p, lr=config["lr"])


def main(smoke=False):
    steps = 9 if smoke else STEPS
    local_dir = os.environ.get("TUNEKIT_RESULTS_DIR") or tempfile.mkdtemp(prefix="tunekit-pb2-")
    common = dict(
        config={"lr": tune.grid_search([1.0, 0.5, 0.1, 0.02])},
        stop={"training_iteration": steps},
        metric="p",
        mode="max",
        local_dir=local_dir,
        verbose=0,
    )

    fixed = tune.run(toy, name="fixed_lr", **common)
    print(f"Best p with a fixed learning rate: {fixed.best_result['p']:.2f} "
          f"(lr={fixed.best_config['lr']})")

    random.seed(0)  # PB2's random choices (and its GP optimiser's starts) follow Python's random
    pb2 = PB2(
        time_attr="training_iteration",
        perturbation_interval=3,  # rank the population every 3 steps
        hyperparam_bounds={"lr": [0.01, 1.0]},  # the GP picks new values in this range
        synch=True,  # wait for the whole population at each point: reproducible
    )
    analysis = tune.run(toy, name="pb2", scheduler=pb2, **common)
    best = max(analysis.trials, key=lambda t: t.last_result["p"])
    print(f"Best p with PB2: {best.last_result['p']:.2f} (trial {best.trial_id})")

    # Every exploit is a line of pbt_global.txt: [target tag, donor tag, target step,
    # donor step, donor config, new config]; the lr in the new config is PB2's choice.
    with open(os.path.join(local_dir, "pb2", "pbt_global.txt")) as f:
        exploits = [json.loads(line) for line in f]
    print(f"{len(exploits)} exploits:")
    for target, donor, _, donor_step, donor_config, new_config in exploits:
        print(f"  after step {donor_step}: trial {target} continues from trial {donor} "
              f"(lr {donor_config['lr']:.3f}) with lr {new_config['lr']:.3f}")
    print("Results in", local_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="PB2 on a toy whose best lr decays.")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that takes seconds")
    main(smoke=parser.parse_args().smoke)
