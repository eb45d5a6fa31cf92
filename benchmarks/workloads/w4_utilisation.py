"""W4 utilisation: trials that each burn a fixed amount of CPU, 2 at a time.

Each trial busy-loops on ``time.process_time()`` until it has used ``--burn`` seconds of CPU,
reporting every 0.1 s of CPU. Utilisation = ideal wall time (trials * burn / cpus) divided by
the measured wall time of the run call.
"""

import time

from _common import Framework, emit, parse_args

report = None  # bound to the framework's report function in main()


def train(config: dict) -> None:
    """Burn ``config["burn"]`` seconds of CPU, reporting every ``config["every"]`` seconds."""
    burn, every = config["burn"], config["every"]
    start = time.process_time()
    next_report = every
    while True:
        used = time.process_time() - start
        if used >= next_report - 1e-9:
            report({"cpu_used": used})
            if used >= burn - 1e-9:
                return
            next_report += every


def main() -> None:
    global report
    args = parse_args(__doc__, trials=20)
    burn = 1.0
    fw = Framework(args.framework, cpus=args.cpus, ray_temp_dir=args.ray_temp_dir)
    report = fw.report
    out = fw.run(train, {"burn": burn, "every": 0.1}, num_samples=args.trials)
    fw.close()
    out["ideal_wall_s"] = args.trials * burn / args.cpus
    out["utilisation"] = out["ideal_wall_s"] / out["wall_s"]
    emit(out)


if __name__ == "__main__":
    main()
