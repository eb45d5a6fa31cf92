"""W5 memory: many trials of the W2 kind (each reports once, 1 CPU, 2 at a time).

The harness samples the resident set size of this process (the driver) and of the whole process
tree from outside. This script also reports its own peak RSS from ``getrusage`` as a cross-check.
"""

import resource

from _common import Framework, emit, parse_args

report = None  # bound to the framework's report function in main()


def train(config: dict) -> None:
    """Report one result and finish."""
    report({"score": config["x"]})


def main() -> None:
    global report
    args = parse_args(__doc__, trials=2000)
    fw = Framework(args.framework, cpus=args.cpus, ray_temp_dir=args.ray_temp_dir)
    report = fw.report
    out = fw.run(train, {"x": fw.uniform(0.0, 1.0)}, num_samples=args.trials)
    out["driver_maxrss_getrusage_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fw.close()
    out["trials_per_s"] = out["trials"] / out["wall_s"]
    emit(out)


if __name__ == "__main__":
    main()
