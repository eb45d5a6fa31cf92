"""A real ``tunekit.run(server_port=0)`` in a driver process, for the control-server and
dashboard tests. The driver's trials report slowly until the test ends the run
through the API (a time budget is the backstop); after ``run`` returns, the driver
says so and waits for its stdin to close, so a test can check that the server is
gone while the process still lives."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

DRIVER = r'''
import json, sys, time
import tunekit as tune

def train(config):
    for i in range(2000):
        time.sleep(0.05)
        tune.report(loss=(config["x"] - 2) ** 2 + 1.0 / (i + 1), score=i * config["x"])

analysis = tune.run(
    train, name="served", local_dir=sys.argv[1], config={"x": tune.grid_search([1, 2, 3])},
    metric="loss", mode="min", verbose=1, server_port=0, time_budget_s=120,
    resources_per_trial={"cpu": 1}, raise_on_failed_trial=False,
    progress_reporter=tune.CLIReporter(max_report_frequency=60),
)
print("RUN_RETURNED " + json.dumps({t.trial_id: t.status for t in analysis.trials}), flush=True)
sys.stdin.read()
'''

_ADDRESS = re.compile(r"dashboard: http://([0-9.]+:[0-9]+)/")


class Driver:
    """The driver process, its server address and its output file."""

    def __init__(self, tmp: Path, token: str | None = None):
        self.dir = tmp
        script = tmp / "driver.py"
        script.write_text(DRIVER)
        self.output = tmp / "driver.out"
        env = os.environ.copy()
        env.pop("TUNEKIT_SERVER_HOST", None)
        env.pop("TUNEKIT_SERVER_TOKEN", None)
        if token:
            env["TUNEKIT_SERVER_TOKEN"] = token
        env["TUNEKIT_PLAIN_PROGRESS"] = "1"
        with open(self.output, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), str(tmp / "results")],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        self.address = self.wait_for(_ADDRESS, 90).group(1)
        self.url = f"http://{self.address}/"
        self.experiment_dir = tmp / "results" / "served"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for(self, pattern: re.Pattern, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = pattern.search(self.text())
            if match:
                return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"the driver did not print {pattern.pattern!r}:\n{self.text()[-3000:]}")

    def close(self) -> None:
        """End the driver whatever state it is in."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            if "RUN_RETURNED" not in self.text():
                self.proc.send_signal(signal.SIGINT)  # a graceful end: trials stopped, saved
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
