"""Make ``docs/images/dashboard.png``: a screenshot of the dashboard of a real, running run.

    uv run --all-extras python docs/tools/screenshot_dashboard.py [--out PATH]

It runs a small experiment (a toy training curve whose floor depends on the
learning rate, momentum and width) with ``server_port``, opens the dashboard in
headless Chromium (Debian's ``chromium`` package, driven by Playwright; pass
``--chromium`` for another binary), sorts the table by the loss, selects a few
trials, takes the screenshot and ends the run through ``TuneClient``.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import socket
import tempfile
import threading
import time

import tunekit as tune

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WIDTH_PENALTY = {"narrow": 0.12, "medium": 0.04, "wide": 0.07}


def train(config):
    rng = random.Random(config["seed"])
    floor = (
        0.15 * abs(math.log10(config["lr"]) + 2.3)
        + 0.35 * (1 - config["momentum"])
        + WIDTH_PENALTY[config["width"]]
    )
    speed = 4 * config["lr"] ** 0.5
    for step in range(1, 121):
        time.sleep(0.1)
        loss = floor + (2.0 - floor) * math.exp(-speed * step) + rng.gauss(0, 0.01)
        tune.report(loss=loss, accuracy=max(0.0, 1 - loss / 2.2))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "..", "images", "dashboard.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    os.environ.pop("TUNEKIT_SERVER_TOKEN", None)
    os.environ.pop("TUNEKIT_SERVER_HOST", None)

    port = _free_port()
    local_dir = tempfile.mkdtemp(prefix="tunekit-screenshot-")
    run = threading.Thread(
        target=tune.run,
        args=(train,),
        kwargs=dict(
            name="toy_sgd",
            local_dir=local_dir,
            config={
                "lr": tune.loguniform(1e-3, 1e-1),
                "momentum": tune.uniform(0.5, 0.99),
                "width": tune.choice(["narrow", "medium", "wide"]),
                "seed": tune.randint(0, 10_000),
            },
            num_samples=24,
            metric="loss",
            mode="min",
            resources_per_trial={"cpu": 0.5},
            server_port=port,
            verbose=0,
        ),
        daemon=True,
    )
    run.start()
    client = tune.TuneClient("127.0.0.1", port)

    def statuses() -> list[str]:
        try:
            return [t["status"] for t in client.get_all_trials()["trials"]]
        except tune.TuneError:
            return []

    deadline = time.monotonic() + 300
    while statuses().count("TERMINATED") < 8 and time.monotonic() < deadline:
        time.sleep(0.5)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#trials tbody tr")
        page.locator('#trials th[data-key="metric"]').click()  # best first
        boxes = page.locator("#trials tbody input[type=checkbox]")
        for index in range(boxes.count()):
            if boxes.nth(index).is_checked():
                boxes.nth(index).uncheck()
        for index in (0, 1, 2, 5, 9):
            boxes.nth(index).check()
        page.wait_for_selector("#curves .scatterlayer .trace path.js-line", state="attached")
        time.sleep(2.5)  # one more poll, charts settled
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    client.stop_experiment()
    run.join(60)
    print(f"wrote {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
