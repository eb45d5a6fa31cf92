"""Make docs/images/terminal.svg: the live progress table of a real run, mid-run.

Runs a small real experiment with a CLIReporter that, besides drawing its live table,
records the first report that shows running, pending and terminated trials at once
and saves it as SVG (rich's export). Run from the repository root:

    uv run --all-extras python docs/tools/screenshot_terminal.py
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time

from rich.console import Console

import tunekit as tune
from tunekit.progress_reporter import CLIReporter

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "images",
                   "terminal.svg")


def train(config):
    for step in range(1, 9):
        time.sleep(0.15)
        loss = (config["lr"] * 100 - 1) ** 2 / step + config["momentum"] / 10
        tune.report(loss=loss, accuracy=1 / (1 + loss))


class SnapshotReporter(CLIReporter):
    saved = False

    def report(self, trials, done, *sys_info):
        super().report(trials, done, *sys_info)
        statuses = {t.status for t in trials}
        if not self.saved and {"RUNNING", "PENDING", "TERMINATED"} <= statuses:
            recorder = Console(record=True, width=120, file=io.StringIO(), force_terminal=True)
            recorder.print(self._rich_status(list(trials), done, *sys_info))
            recorder.save_svg(OUT, title="tunekit.run(...) in a terminal")
            self.saved = True


def main() -> int:
    console = Console(force_terminal=True, width=120)
    reporter = SnapshotReporter(console=console, max_progress_rows=8)
    with tempfile.TemporaryDirectory() as tmp:
        tune.run(
            train,
            config={"lr": tune.loguniform(1e-3, 1e-1), "momentum": tune.grid_search([0.0, 0.9])},
            num_samples=5, metric="loss", mode="min", verbose=1, progress_reporter=reporter,
            local_dir=tmp, name="terminal_screenshot",
        )
    if not reporter.saved:
        print("no mid-run report to record", file=sys.stderr)
        return 1
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
