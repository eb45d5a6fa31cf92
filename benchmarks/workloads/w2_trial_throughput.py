"""W2 trial throughput: many trials that each report once, 1 CPU each, 2 at a time.

Measures trials per second over the run call only (``tunekit.run`` / ``Tuner.fit``).
"""

from _common import Framework, emit, parse_args

report = None  # bound to the framework's report function in main()


def train(config: dict) -> None:
    """Report one result and finish."""
    report({"score": config["x"]})


def main() -> None:
    global report
    args = parse_args(__doc__, trials=500)
    fw = Framework(args.framework, cpus=args.cpus, ray_temp_dir=args.ray_temp_dir)
    report = fw.report
    out = fw.run(train, {"x": fw.uniform(0.0, 1.0)}, num_samples=args.trials)
    fw.close()
    out["trials_per_s"] = out["trials"] / out["wall_s"]
    emit(out)


if __name__ == "__main__":
    main()
