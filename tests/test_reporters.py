"""Progress reporters in real settings: the live table in a terminal (rich), plain text
when output is not a terminal, verbosity levels, and the notebook reporter executed in a
real Jupyter kernel."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time

import pytest

from tunekit.progress_reporter import CLIReporter, JupyterNotebookReporter, detect_reporter

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class FakeTrial:
    def __init__(self, index, status, result=None, error_file=None):
        self.trial_id = f"abc_{index:05d}"
        self.status = status
        self.evaluated_params = {"lr": 0.01 * (index + 1)}
        self.config = dict(self.evaluated_params)
        self.last_result = result or {}
        self.local_path = f"/exp/train_{self.trial_id}"
        self.error_file = error_file
        self.num_failures = 1 if error_file else 0

    def __str__(self):
        return f"train_{self.trial_id}"


def _trials():
    return [
        FakeTrial(0, "RUNNING", {"loss": 0.5, "training_iteration": 3, "time_total_s": 4.5}),
        FakeTrial(1, "PENDING"),
        FakeTrial(2, "TERMINATED", {"loss": 0.25, "training_iteration": 10, "time_total_s": 9.0}),
        FakeTrial(3, "ERROR", {"loss": 9.0, "training_iteration": 1}, error_file="/exp/e.txt"),
    ]


def _console():
    from rich.console import Console

    return Console(file=io.StringIO(), force_terminal=True, width=160, color_system="standard")


def test_live_table_has_header_trials_and_errors():
    console = _console()
    reporter = CLIReporter(console=console, metric="loss", mode="min", total_samples=6)
    assert reporter._live_mode and reporter._max_report_frequency == 1.0
    reporter.report(_trials(), False, "Resources requested: 1/2 CPUs, 0/0 GPUs")
    assert reporter._live is not None  # still live: updated in place by later reports
    reporter.report(_trials(), True, "Resources requested: 0/2 CPUs, 0/0 GPUs")
    assert reporter._live is None  # the final report ends the live display
    text = ANSI.sub("", console.file.getvalue())
    final = text[text.rindex("tunekit status"):]
    assert "Resources requested: 0/2 CPUs, 0/0 GPUs" in final
    assert re.search(r"running for 00:00:\d\d\.\d\d", final)
    assert "Current best trial: abc_00002 with loss=0.25" in final
    assert "Number of trials: 4/6 (1 ERROR, 1 PENDING, 1 RUNNING, 1 TERMINATED)" in final
    rows = {line.split()[0]: line.split() for line in final.splitlines() if line.startswith("train_")}
    assert rows["train_abc_00000"][:2] == ["train_abc_00000", "RUNNING"]
    assert rows["train_abc_00002"][1:] == ["TERMINATED", "0.03", "10", "9", "0.25"]
    assert "Number of errored trials: 1" in final and "/exp/e.txt" in final
    # statuses are coloured
    raw = console.file.getvalue()
    assert "\x1b[32mRUNNING" in raw and "\x1b[34mTERMINATED" in raw


def test_live_table_caps_rows_until_done():
    console = _console()
    reporter = CLIReporter(console=console, max_progress_rows=2)
    trials = [FakeTrial(i, "PENDING") for i in range(5)]
    reporter.report(trials, False)
    text = ANSI.sub("", console.file.getvalue())
    last = text[text.rindex("tunekit status"):]
    assert "... 3 more trials not shown (3 PENDING)" in last
    assert sum(line.startswith("train_") for line in last.splitlines()) == 2
    reporter.close()
    reporter.close()  # twice is fine


def test_plain_text_when_not_a_terminal(capsys):
    reporter = detect_reporter()
    assert isinstance(reporter, CLIReporter) and not reporter._live_mode
    assert reporter._max_report_frequency == 5  # Ray Tune's default
    reporter.report(_trials(), True)
    out = capsys.readouterr().out
    assert out.startswith("== Status ==") and "\x1b[" not in out


def test_plain_text_can_be_forced_in_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert detect_reporter()._live_mode
    monkeypatch.setenv("TUNEKIT_PLAIN_PROGRESS", "1")
    assert not detect_reporter()._live_mode


SCRIPT = textwrap.dedent(
    """
    import sys, time
    import tunekit as tune

    SLEEP = float(sys.argv[3])

    def train(config):
        for i in range(4):
            time.sleep(SLEEP)
            tune.report(loss=config["x"] / (i + 1))

    tune.run(train, config={"x": tune.grid_search([1, 2, 3])}, metric="loss", mode="min",
             verbose=int(sys.argv[2]), local_dir=sys.argv[1], name="v" + sys.argv[2])
    print("RUN-FINISHED")
    """
)


def _run_script(tmp_path, verbose: int, terminal: bool, sleep: float) -> str:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, str(script), str(tmp_path / "results"), str(verbose), str(sleep)]
    env = {**os.environ, "COLUMNS": "150", "LINES": "40"}
    env.pop("TUNEKIT_PLAIN_PROGRESS", None)
    if not terminal:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=30) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_live_table_in_a_real_terminal(tmp_path):
    out = _run_script(tmp_path, verbose=1, terminal=True, sleep=0.4)  # runs for >= 3 s
    assert "RUN-FINISHED" in out
    assert "\x1b[" in out  # colours and cursor movement: the table is redrawn in place
    plain = ANSI.sub("", out)
    assert plain.count("tunekit status") >= 2  # updated while running, not printed once
    final = plain[plain.rindex("tunekit status"):]
    assert "Number of trials: 3/3 (3 TERMINATED)" in final
    assert re.search(r"Current best trial: \w+ with loss=0\.25 and parameters=\{'x': 1\}", final)
    assert "== Status ==" not in plain


@pytest.mark.parametrize("verbose", [0, 1, 2, 3])
def test_verbosity_levels_in_plain_output(tmp_path, verbose):
    out = _run_script(tmp_path, verbose=verbose, terminal=False, sleep=0.05)
    assert out.rstrip().endswith("RUN-FINISHED")
    assert "\x1b[" not in out
    status = "== Status ==" in out
    brief = re.search(r"Trial train_\w+ reported loss=", out) is not None
    detailed = "Result for train_" in out
    # 0 silent, 1 experiment status, 2 plus brief trial results, 3 plus detailed results
    assert (status, brief, detailed) == {
        0: (False, False, False),
        1: (True, False, False),
        2: (True, True, False),
        3: (True, True, True),
    }[verbose]
    if verbose:
        final = out[out.rindex("== Status =="):]
        assert "Number of trials: 3/3 (3 TERMINATED)" in final


# --------------------------------------------------------------------------- notebook


def test_notebook_reporter_html_updates_in_place():
    displays = []

    class Handle:
        def update(self, obj):
            displays.append(("update", obj.data))

    import IPython.display

    def fake_display(obj, display_id=False):
        displays.append(("display", obj.data))
        return Handle()

    original = IPython.display.display
    IPython.display.display = fake_display
    try:
        reporter = JupyterNotebookReporter(metric="loss", mode="min")
        reporter.report(_trials(), False, "Resources requested: 1/2 CPUs")
        reporter.report(_trials(), True, "Resources requested: 0/2 CPUs")
        again = JupyterNotebookReporter(overwrite=False)
        again.report(_trials(), False)
        again.report(_trials(), False)
    finally:
        IPython.display.display = original
    assert [kind for kind, _ in displays] == ["display", "update", "display", "display"]
    html = displays[1][1]
    assert "<table" in html and "train_abc_00002" in html and "Resources requested: 0/2 CPUs" in html
    assert "Current best trial: abc_00002 with loss=0.25" in html
    assert "color:#c62828" in html  # the ERROR status is coloured


def test_notebook_run_updates_one_html_table(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    setup = f"LOCAL_DIR = {str(tmp_path / 'results')!r}"
    run_cell = textwrap.dedent(
        """
        import time
        import tunekit as tune

        def train(config):
            for i in range(5):
                time.sleep(0.5)
                tune.report(loss=config["x"] / (i + 1))

        analysis = tune.run(train, config={"x": tune.grid_search([1, 2, 3])}, metric="loss",
                            mode="min", verbose=1, local_dir=LOCAL_DIR, name="nb")
        """
    )
    check_cell = "type(tune.progress_reporter.detect_reporter()).__name__"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (setup, run_cell, check_cell)]

    counts: dict[str, int] = {}

    class CountingClient(nbclient.NotebookClient):
        def process_message(self, msg, cell, cell_index):
            if cell_index == 1:
                kind = msg["header"]["msg_type"]
                counts[kind] = counts.get(kind, 0) + 1
            return super().process_message(msg, cell, cell_index)

    client = CountingClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = nb.cells[1].outputs
    html_outputs = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(html_outputs) == 1, outputs  # one table ...
    assert counts.get("update_display_data", 0) >= 1, counts  # ... updated in place
    html = html_outputs[0]["data"]["text/html"]
    assert "tunekit status" in html and "Number of trials: 3/3 (3 TERMINATED)" in html
    assert html.count("TERMINATED</td>") == 3
    texts = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "== Status ==" not in texts
    assert nb.cells[2].outputs[0]["data"]["text/plain"] == "'JupyterNotebookReporter'"


# --------------------------------------------------------------------------- custom reporters


def _two_steps(config):
    import tunekit

    for step in range(2):
        tunekit.report(loss=config["x"] + step)


def test_a_custom_progress_reporter_receives_the_run(tmp_path):
    import tunekit

    class Recorder(tunekit.ProgressReporter):
        def __init__(self):
            self.properties = None
            self.checks = 0
            self.reports = []

        def set_search_properties(self, metric, mode):
            self.properties = (metric, mode)
            return True

        def should_report(self, trials, done=False):
            self.checks += 1
            return done

        def report(self, trials, done, *sys_info):
            self.reports.append((done, sorted(t.status for t in trials), sys_info))

    recorder = Recorder()
    tunekit.run(_two_steps, config={"x": tunekit.grid_search([1, 2])}, metric="loss",
                mode="min", verbose=1, progress_reporter=recorder, local_dir=str(tmp_path))
    assert recorder.properties == ("loss", "min")
    assert recorder.checks >= 2  # asked after loop steps; reports only when done
    done, statuses, sys_info = recorder.reports[-1]
    assert done and statuses == ["TERMINATED", "TERMINATED"]
    assert any("Resources requested" in line for line in sys_info)

    class Refuses(Recorder):
        def set_search_properties(self, metric, mode):
            return False

    with pytest.raises(ValueError, match="progress reporter already has its own"):
        tunekit.run(_two_steps, config={"x": 1}, metric="loss", mode="min", verbose=1,
                    progress_reporter=Refuses(), local_dir=str(tmp_path))
    silent = Recorder()
    tunekit.run(_two_steps, config={"x": 1}, verbose=0, progress_reporter=silent,
                local_dir=str(tmp_path), name="silent")
    assert silent.reports == []  # verbose=0 shows nothing, whatever the reporter
