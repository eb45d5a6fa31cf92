"""W1 cold start: import the framework and run 1 trial that reports 1 result.

The harness times this whole process from outside (median of 3 runs); the script itself only
checks that the trial finished and reports what it saw.
"""

from _common import Framework, emit, parse_args

report = None  # bound to the framework's report function in main()


def train(config: dict) -> None:
    """Report one result and finish."""
    report({"score": config["x"]})


def main() -> None:
    global report
    args = parse_args(__doc__, trials=1)
    fw = Framework(args.framework, cpus=args.cpus, ray_temp_dir=args.ray_temp_dir)
    report = fw.report
    out = fw.run(train, {"x": 1.0}, num_samples=args.trials)
    fw.close()
    emit(out)


if __name__ == "__main__":
    main()
