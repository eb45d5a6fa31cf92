"""CLIReporter output and rate limiting; per-result line formatting."""

import re
import sys

import pytest

from tunekit.progress_reporter import CLIReporter, ProgressReporter, detect_reporter
from tunekit_core.progress import (
    TrialResultPrinter,
    format_table,
    format_trial_error,
    format_trial_result_brief,
    format_trial_result_detailed,
)


class FakeTrial:
    def __init__(self, index, status, result=None, params=None, error_file=None, exp="/exp"):
        self.trial_id = f"abc_{index:05d}"
        self.trainable_name = "train"
        self.status = status
        self.evaluated_params = params if params is not None else {"lr": 0.01 * (index + 1)}
        self.config = dict(self.evaluated_params, fixed="yes")
        self.last_result = result or {}
        self.local_path = f"{exp}/train_{self.trial_id}"
        self.error_file = error_file
        self.num_failures = 1 if error_file else 0

    def __str__(self):
        return f"train_{self.trial_id}"


def result(loss, it=3, **extra):
    return {
        "loss": loss,
        "training_iteration": it,
        "time_total_s": 1.5 * it,
        "node_ip": "10.0.0.1",
        "pid": 4242,
        "trial_id": "ignored",
        "done": False,
        "config": {"ignored": True},
        **extra,
    }


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def make_reporter(**kwargs):
    out = []
    clock = kwargs.pop("clock", Clock())
    reporter = CLIReporter(writer=out.append, clock=clock, **kwargs)
    return reporter, out, clock


def three_trials():
    return [
        FakeTrial(0, "RUNNING", result(0.5)),
        FakeTrial(1, "PENDING"),
        FakeTrial(2, "TERMINATED", result(0.25, it=10)),
    ]


# --------------------------------------------------------------------- rate limiting


def test_should_report_rate_limits_and_always_reports_when_done():
    reporter, _, clock = make_reporter(max_report_frequency=5)
    trials = three_trials()
    assert reporter.should_report(trials) is True  # first call
    clock.now += 4.9
    assert reporter.should_report(trials) is False
    assert reporter.should_report(trials, done=True) is True
    clock.now += 0.1  # 5 s since the last report
    assert reporter.should_report(trials) is True
    clock.now += 1
    assert reporter.should_report(trials) is False


# --------------------------------------------------------------------- status block


def test_status_block_content():
    clock = Clock(1000.0)
    reporter, out, _ = make_reporter(clock=clock, metric="loss", mode="min", total_samples=10)
    reporter.set_start_time(1000.0 - 62.5)
    reporter.report(three_trials(), False, "Using FIFO scheduling algorithm.")
    (text,) = out
    lines = text.splitlines()
    assert lines[0] == "== Status =="
    assert re.fullmatch(
        r"Current time: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(running for 00:01:02\.50\)", lines[1]
    )
    assert "Using FIFO scheduling algorithm." in lines
    assert "Current best trial: abc_00002 with loss=0.25 and parameters={'lr': 0.03}" in lines
    assert "Result logdir: /exp" in lines
    assert "Number of trials: 3/10 (1 PENDING, 1 RUNNING, 1 TERMINATED)" in lines
    header = next(line for line in lines if line.startswith("| Trial name"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells == ["Trial name", "status", "loc", "lr", "iter", "total time (s)", "loss"]
    row = next(line for line in lines if "train_abc_00000" in line)
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "train_abc_00000",
        "RUNNING",
        "10.0.0.1:4242",
        "0.01",
        "3",
        "4.5",
        "0.5",
    ]
    # table rows come in status order: RUNNING, PENDING, TERMINATED
    order = [line.split("|")[1].strip() for line in lines if line.startswith("| train_")]
    assert order == ["train_abc_00000", "train_abc_00001", "train_abc_00002"]
    assert text.endswith("\n\n")


def test_no_best_trial_without_metric_and_mode():
    reporter, out, _ = make_reporter()
    reporter.report(three_trials(), False)
    assert "Current best trial" not in out[0]
    reporter2, out2, _ = make_reporter()
    assert reporter2.set_search_properties("loss", "max") is True
    reporter2.report(three_trials(), False)
    assert "Current best trial: abc_00000 with loss=0.5" in out2[0]


def test_best_trial_uses_single_inferred_metric_when_only_mode_known():
    reporter, out, _ = make_reporter(mode="min")
    reporter.report(three_trials(), False)
    assert "Current best trial: abc_00002 with loss=0.25" in out[0]


def test_set_search_properties_conflict():
    reporter, _, _ = make_reporter(metric="loss", mode="min")
    assert reporter.set_search_properties("acc", None) is False
    assert reporter.set_search_properties(None, "max") is False
    assert reporter.set_search_properties("loss", "min") is True
    assert reporter.set_search_properties(None, None) is True


def test_inferred_metric_columns_respect_limit():
    extra = {"m1": 1, "m2": 2.5, "m3": 3, "m4": 4, "text": "skip me"}
    reporter, out, _ = make_reporter(infer_limit=2)
    reporter.report([FakeTrial(0, "RUNNING", result(0.5, **extra))], False)
    header = next(line for line in out[0].splitlines() if line.startswith("| Trial name"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells == ["Trial name", "status", "loc", "lr", "iter", "total time (s)", "loss", "m1"]


def test_explicit_metric_and_parameter_columns():
    reporter, out, _ = make_reporter(
        metric_columns={"loss": "Loss", "acc": "Accuracy"},
        parameter_columns=["fixed"],
    )
    reporter.report([FakeTrial(0, "RUNNING", result(0.5))], False)
    header = next(line for line in out[0].splitlines() if line.startswith("| Trial name"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    # "acc" is left out: no trial reported it
    assert cells == ["Trial name", "status", "loc", "fixed", "Loss"]
    reporter.add_metric_column("training_iteration", "it")
    reporter.add_parameter_column("lr")
    reporter.report([FakeTrial(0, "RUNNING", result(0.5))], False)
    header = next(line for line in out[1].splitlines() if line.startswith("| Trial name"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Trial name",
        "status",
        "loc",
        "fixed",
        "lr",
        "Loss",
        "it",
    ]
    with pytest.raises(ValueError):
        reporter.add_metric_column("loss")


def test_nested_parameters_and_metrics():
    trial = FakeTrial(0, "RUNNING", result(0.5, info={"grad": 0.125}), params={"opt/lr": 0.1})
    trial.config = {"opt": {"lr": 0.1, "beta": 0.9}}
    reporter, out, _ = make_reporter(metric_columns=["info/grad"], parameter_columns=["opt/beta"])
    reporter.report([trial], False)
    row = next(line for line in out[0].splitlines() if "train_abc_00000" in line)
    assert [c.strip() for c in row.strip("|").split("|")][3:] == ["0.9", "0.125"]


def test_progress_rows_are_truncated_fairly_until_done():
    trials = [FakeTrial(i, "RUNNING", result(1.0)) for i in range(6)]
    trials += [FakeTrial(i, "PENDING") for i in range(6, 8)]
    trials += [FakeTrial(i, "TERMINATED", result(0.5)) for i in range(8, 12)]
    reporter, out, _ = make_reporter(max_progress_rows=6)
    reporter.report(trials, False)
    rows = [line for line in out[0].splitlines() if line.startswith("| train_")]
    assert len(rows) == 6
    statuses = [line.split("|")[2].strip() for line in rows]
    assert statuses == ["RUNNING"] * 2 + ["PENDING"] * 2 + ["TERMINATED"] * 2
    assert "... 6 more trials not shown (4 RUNNING, 2 TERMINATED)" in out[0]
    reporter.report(trials, True)
    assert len([line for line in out[1].splitlines() if line.startswith("| train_")]) == 12
    assert "more trials not shown" not in out[1]


def test_error_table_and_truncation():
    trials = [
        FakeTrial(i, "ERROR", result(1.0), error_file=f"/exp/train_abc_{i:05d}/error.txt")
        for i in range(3)
    ]
    reporter, out, _ = make_reporter(max_error_rows=2)
    reporter.report(trials, False)
    text = out[0]
    assert "Number of errored trials: 3" in text
    assert "Table truncated to 2 rows (1 overflow)" in text
    error_header = [line for line in text.splitlines() if "# failures" in line]
    assert [c.strip() for c in error_header[0].strip("|").split("|")] == [
        "Trial name",
        "# failures",
        "error file",
    ]
    assert "/exp/train_abc_00001/error.txt" in text
    assert "/exp/train_abc_00002/error.txt" not in text
    reporter.report(trials, True)
    assert "/exp/train_abc_00002/error.txt" in out[1]


def test_long_values_and_headers_are_cut():
    trial = FakeTrial(0, "RUNNING", result(0.5), params={"a_really_long_parameter_name": "v" * 40})
    reporter, out, _ = make_reporter(max_column_length=10)
    reporter.report([trial], False)
    text = out[0]
    assert "a_reall..." in text  # 10 characters
    assert "vvvvvvv..." in text
    assert "v" * 11 not in text


def test_intermediate_tables_setting_and_verbosity():
    reporter, out, _ = make_reporter(print_intermediate_tables=False)
    reporter.report(three_trials(), False)
    assert "| Trial name" not in out[0]
    reporter.report(three_trials(), True)
    assert "| Trial name" in out[1]

    reporter, out, _ = make_reporter()
    reporter.set_verbosity(2)
    reporter.report(three_trials(), False)
    reporter.report(three_trials(), True)
    assert "| Trial name" not in out[0] and "| Trial name" in out[1]
    reporter.set_verbosity(1)
    reporter.report(three_trials(), True)
    assert "| Trial name" not in out[2]
    assert "Number of trials: 3 (1 PENDING, 1 RUNNING, 1 TERMINATED)" in out[2]


def test_infinite_total_samples():
    reporter, out, _ = make_reporter(total_samples=sys.maxsize)
    reporter.report(three_trials(), False)
    assert "Number of trials: 3/infinite" in out[0]


def test_sort_by_metric_lists_best_terminated_first():
    trials = [
        FakeTrial(0, "TERMINATED", result(0.9)),
        FakeTrial(1, "RUNNING", result(0.1)),
        FakeTrial(2, "TERMINATED", result(0.2)),
        FakeTrial(3, "TERMINATED", result(0.5)),
    ]
    reporter, out, _ = make_reporter(metric="loss", mode="min", sort_by_metric=True)
    reporter.report(trials, False)
    order = [
        line.split("|")[1].strip() for line in out[0].splitlines() if line.startswith("| train_")
    ]
    assert order == ["train_abc_00002", "train_abc_00003", "train_abc_00000", "train_abc_00001"]


def test_no_trials_and_default_writer(capsys):
    reporter = CLIReporter()
    reporter.report([], False)
    printed = capsys.readouterr().out
    assert printed.startswith("== Status ==")
    assert "Number of trials" not in printed


def test_base_class_and_detect_reporter():
    base = ProgressReporter()
    with pytest.raises(NotImplementedError):
        base.should_report([])
    with pytest.raises(NotImplementedError):
        base.report([], False)
    assert base.set_search_properties("loss", "min") is True
    reporter = detect_reporter(max_progress_rows=3)
    assert isinstance(reporter, CLIReporter)
    with pytest.raises(ValueError):
        CLIReporter(mode="best")


# --------------------------------------------------------------------- table formatter


def test_format_table_alignment():
    text = format_table(["name", "value"], [["a", 1.5], ["bbb", 10], ["c", None]])
    assert text.splitlines() == [
        "+------+-------+",
        "| name | value |",
        "|------+-------|",
        "| a    |   1.5 |",
        "| bbb  |    10 |",
        "| c    |       |",
        "+------+-------+",
    ]


def test_format_table_floats_use_six_significant_digits():
    text = format_table(["x"], [[1 / 3], [1e-7]])
    assert "0.333333" in text and "1e-07" in text


# --------------------------------------------------------------------- per-result lines


def test_format_trial_result_brief():
    trial = FakeTrial(0, "RUNNING")
    line = format_trial_result_brief(trial, {"loss": 0.5, "acc": 0.9, "training_iteration": 2})
    assert line == (
        "Trial train_abc_00000 reported loss=0.5,acc=0.9 with parameters="
        "{'lr': 0.01, 'fixed': 'yes'}."
    )
    done_line = format_trial_result_brief(trial, {"loss": 0.25, "done": True}, metric="loss")
    assert done_line == (
        "Trial train_abc_00000 reported loss=0.25 with parameters={'lr': 0.01, 'fixed': 'yes'}."
        " This trial completed."
    )


def test_format_trial_result_detailed():
    trial = FakeTrial(0, "RUNNING")
    text = format_trial_result_detailed(
        trial,
        {"loss": 0.5, "config": {"lr": 1}, "info": {"grad": 2, "b": None}, "acc": None, "a": "x"},
    )
    assert text.splitlines() == [
        "Result for train_abc_00000:",
        "  a: x",
        "  info:",
        "    grad: 2",
        "  loss: 0.5",
    ]


def test_format_trial_error():
    trial = FakeTrial(0, "ERROR", error_file="/exp/t/error.txt")
    assert format_trial_error(trial).endswith("Error file: /exp/t/error.txt")


def test_trial_result_printer_rate_limits_per_trial():
    out = []
    clock = Clock(0.0)
    printer = TrialResultPrinter(verbose=2, metric="loss", writer=out.append, clock=clock)
    a, b = FakeTrial(0, "RUNNING"), FakeTrial(1, "RUNNING")
    assert printer.on_result(a, {"loss": 1.0}) is True  # first result of a trial
    clock.now = 1.0
    assert printer.on_result(a, {"loss": 0.9}) is False  # within 5 s
    assert printer.on_result(b, {"loss": 0.8}) is True  # other trial
    assert printer.on_result(a, {"loss": 0.7, "done": True}) is True  # last result
    clock.now = 6.0
    assert printer.on_result(a, {"loss": 0.6}) is True
    assert printer.on_error(a) is True
    assert len(out) == 5 and all(line.endswith("\n") for line in out)
    assert out[0].startswith("Trial train_abc_00000 reported loss=1")

    detailed = TrialResultPrinter(verbose=3, writer=out.append, clock=clock)
    detailed.on_result(a, {"loss": 1.0})
    assert out[-1].startswith("Result for train_abc_00000:\n  loss: 1.0")
    quiet = TrialResultPrinter(verbose=1, writer=out.append, clock=clock)
    assert quiet.on_result(a, {"loss": 1.0}) is False and quiet.on_error(a) is False


def test_the_total_counts_trials_added_while_the_run_goes(tmp_path):
    """Trials added through the control API (RunLoop.add_trials) raise the "N/total" the
    reporter shows."""
    import tunekit as tune
    from tunekit.schedulers import FIFOScheduler

    class AddsTwoOnce(FIFOScheduler):
        added = False

        def on_trial_result(self, runner, trial, result):
            if not self.added:
                self.added = True
                runner.add_trials({"x": tune.grid_search([10, 20])})
            return self.CONTINUE

    class Recording(ProgressReporter):
        def __init__(self):
            self.totals = []

        def set_total_samples(self, total_samples):
            self.totals.append(total_samples)

        def should_report(self, trials, done=False):
            return False

        def report(self, trials, done, *sys_info):
            pass

    def train(config):
        tune.report({"x": config["x"]})

    reporter = Recording()
    analysis = tune.run(train, config={"x": tune.grid_search([1, 2, 3])}, scheduler=AddsTwoOnce(),
                        progress_reporter=reporter, verbose=1, local_dir=str(tmp_path))
    assert len(analysis.trials) == 5
    assert reporter.totals == [3, 5]
