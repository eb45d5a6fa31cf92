"""W3 result throughput: 2 trials each reporting many results of 3 floats, as fast as they can.

Default loggers stay on (JSON, CSV and, where the framework has it, TensorBoard). Measures
results per second over the run call only.
"""

from _common import Framework, emit, parse_args

report = None  # bound to the framework's report function in main()


def train(config: dict) -> None:
    """Report ``config["n"]`` results of three floats in a tight loop."""
    n = config["n"]
    for i in range(n):
        f = float(i)
        report({"a": f, "b": f * 0.5, "c": f * 0.25})


def main() -> None:
    global report
    args = parse_args(__doc__, trials=2, results=20000)
    fw = Framework(args.framework, cpus=args.cpus, ray_temp_dir=args.ray_temp_dir)
    report = fw.report
    out = fw.run(train, {"n": args.results}, num_samples=args.trials)
    fw.close()
    out["results_per_trial"] = args.results
    out["expected_results"] = args.results * args.trials
    out["results_per_s"] = out["results"] / out["wall_s"]
    emit(out)


if __name__ == "__main__":
    main()
