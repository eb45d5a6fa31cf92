"""The dashboard page of ``run(server_port=...)`` in headless Chromium (Debian's
``chromium`` package, driven by Playwright with its executable_path): the page
loads, the table lists, sorts and filters the trials, a learning curve draws, and
a trial stopped through the API (or the page's Stop button) shows as TERMINATED.

Without /usr/bin/chromium (or Playwright) the tests skip, unless
TUNEKIT_REQUIRE_BROWSER=1 (CI sets it once it has installed chromium): then they fail.
"""

from __future__ import annotations

import os

import pytest

try:
    from _server_helpers import Driver, wait_until
except ImportError:  # tests imported as a package
    from tests._server_helpers import Driver, wait_until

from tunekit import TuneClient

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _browser_or_skip():
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem, sync_playwright = "Playwright for Python is not installed", None
    if problem is None and not os.path.exists(CHROMIUM):
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    if problem is not None:
        if os.environ.get("TUNEKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TUNEKIT_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _browser_or_skip()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def driver(tmp_path_factory, browser):
    run = Driver(tmp_path_factory.mktemp("e2e"))
    try:
        client = TuneClient(run.address)
        wait_until(lambda: len(client.get_all_trials()["trials"]) >= 3, timeout=60)
        yield run
    finally:
        run.close()


@pytest.fixture
def page(browser, driver):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(driver.url)
    try:
        yield page
        assert not errors, errors
    finally:
        page.close()


def _running_ids(client, count):
    """Ids of ``count`` running trials with two results or more (a line to draw), or None."""
    running = [
        t["id"] for t in client.get_all_trials()["trials"]
        if t["status"] == "RUNNING" and (t["result"] or {}).get("training_iteration", 0) >= 2
    ]
    return running if len(running) >= count else None


def _status_cell(page, trial_id):
    return page.locator(f'#trials tr[data-id="{trial_id}"] td[data-col="status"]')


def test_page_lists_sorts_filters_and_draws_a_curve(page, driver):
    from playwright.sync_api import expect

    rows = page.locator("#trials tbody tr")
    expect(rows).to_have_count(3)
    ids = [t["id"] for t in TuneClient(driver.address).get_all_trials()["trials"]]
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.id)")) == sorted(ids)
    expect(page.locator("#exp-name")).to_have_text("served")

    # a click on a header sorts by that column, a second click reverses it
    page.locator('#trials th[data-key="p:x"]').click()
    expect(page.locator('#trials tbody td[data-col="p:x"]')).to_have_text(["1", "2", "3"])
    page.locator('#trials th[data-key="p:x"]').click()
    expect(page.locator('#trials tbody td[data-col="p:x"]')).to_have_text(["3", "2", "1"])

    page.locator("#filter").fill("x=2")
    expect(rows).to_have_count(1)
    page.locator("#filter").fill("")
    expect(rows).to_have_count(3)

    # select exactly one trial that has results: its learning curve is an SVG path
    running = wait_until(lambda: _running_ids(TuneClient(driver.address), 1), timeout=60)[0]
    for box in page.locator("#trials tbody input[type=checkbox]").all():
        if box.is_checked():
            box.uncheck()
    page.locator(f'#trials tr[data-id="{running}"] input[type=checkbox]').check()
    curve = page.locator("#curves .scatterlayer .trace path.js-line")
    wait_until(lambda: curve.count() == 1 and len(curve.first.get_attribute("d") or "") > 20)
    expect(page.locator("#metric")).to_have_value("loss")
    assert page.locator("#best .scatterlayer .trace").count() == 1


def test_stopping_a_trial_shows_in_the_page(page, driver):
    from playwright.sync_api import expect

    client = TuneClient(driver.address)
    first, second = wait_until(lambda: _running_ids(client, 2), timeout=60)[:2]
    expect(_status_cell(page, first)).to_have_text("RUNNING")

    # through the API: the page picks it up on its next poll
    assert client.stop_trial(first)["trials"][0]["status"] == "TERMINATED"
    expect(_status_cell(page, first)).to_have_text("TERMINATED", timeout=15_000)

    # through the page's own Stop button
    page.locator(f'#trials tr[data-id="{second}"] button.stop').click()
    expect(_status_cell(page, second)).to_have_text("TERMINATED", timeout=15_000)
    assert client.get_trial(second)["trial"]["status"] == "TERMINATED"
