"""The ``tunekit`` command line: ``tunekit plugins list``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    from test_registry import TEST_MODULES, plugin_site, test_plugins  # noqa: F401
except ImportError:  # tests imported as a package
    from tests.test_registry import TEST_MODULES, plugin_site, test_plugins  # noqa: F401

from tunekit_core.cli import main

STANDARD_MODULES = ("tunekit_fifo", "tunekit_loggers", "tunekit_basic_search")


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m tunekit_core.cli`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "tunekit_core.cli", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )


def test_plugins_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "DISTRIBUTION", "VERSION", "LOADS"]
    rows = {tuple(line.split()[:2]): line.split() for line in lines[1:] if line.strip()}
    assert rows[("fifo", "scheduler")][2:] == ["tunekit-fifo", "0.1.0", "yes"]
    assert rows[("json", "logger")][2] == "tunekit-loggers"
    assert rows[("random", "searcher")][2] == "tunekit-basic-search"
    assert rows[("local", "executor")][2] == "tunekit"


def test_plugins_list_json_and_kind_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "list", "--json", "--kind", "logger"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in records} >= {"json", "csv"}
    assert {r["kind"] for r in records} == {"logger"}
    csv_record = next(r for r in records if r["name"] == "csv")
    assert csv_record == {
        "name": "csv",
        "kind": "logger",
        "group": "tunekit.loggers",
        "distribution": "tunekit-loggers",
        "version": "0.1.0",
        "value": "tunekit_loggers:CSVLoggerCallback",
        "loads": True,
        "problem": None,
        "active": True,
    }


def test_bad_kind_and_no_command_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["plugins", "list", "--kind", "nope"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main([]) == 2
    assert "plugins" in capsys.readouterr().out


def test_console_script_and_module_entry_work() -> None:
    done = _cli("plugins", "list", "--json")
    assert done.returncode == 0, done.stderr
    assert any(r["name"] == "fifo" for r in json.loads(done.stdout))
    script = Path(sys.executable).with_name("tunekit")
    if script.exists():
        done = subprocess.run(
            [str(script), "plugins", "list"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "tunekit-fifo" in done.stdout


def test_listing_with_broken_and_third_party_plugins(test_plugins: Path) -> None:
    done = _cli("plugins", "list")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    rows = {tuple(line.split()[:2]): line for line in out.splitlines()[1:] if line.strip()}
    assert "tunekit-test-plugins" in rows[("acme_fifo", "scheduler")]
    assert "tunekit-test-plugins" in rows[("broken", "scheduler")]
    assert rows[("ghost", "scheduler")].split()[4] == "no"
    assert "scheduler 'ghost' (tunekit-test-plugins 0.3.0): does not load" in out
    assert "tunekit-definitely-not-installed" in out
    assert "shadowed" in rows[("fifo", "scheduler")]

    done = _cli("plugins", "list", "--json")
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    fifo = [r for r in records if r["name"] == "fifo"]
    assert [(r["distribution"], r["active"]) for r in fifo] == [
        ("tunekit-test-dupe", True),
        ("tunekit-fifo", False),
    ]


def test_import_flag_reports_broken_plugins(test_plugins: Path) -> None:
    done = _cli("plugins", "list", "--import", "--json")
    assert done.returncode == 1  # a plugin failed to import
    records = {(r["kind"], r["name"]): r for r in json.loads(done.stdout)}
    broken = records[("scheduler", "broken")]
    assert not broken["loads"]
    assert "RuntimeError: tk_test_broken exploded on import" in broken["problem"]
    assert records[("scheduler", "acme_fifo")]["loads"]
    assert records[("scheduler", "fifo")]["loads"]


PROBE = """
import json, sys
from tunekit_core.cli import main
rc = main(sys.argv[1:])
prefixes = {prefixes!r}
imported = sorted(m for m in sys.modules if m in prefixes or m.split(".")[0] in prefixes)
print("IMPORTED=" + json.dumps(imported), file=sys.stderr)
sys.exit(rc)
"""


def _imported_plugin_modules(*args: str) -> tuple[int, list[str]]:
    # plugin packages, and the core executor plugin (a submodule: matched by full name)
    prefixes = {*STANDARD_MODULES, *TEST_MODULES, "tunekit_core.local_executor"}
    code = PROBE.format(prefixes=sorted(prefixes))
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("IMPORTED="))
    return done.returncode, json.loads(line.removeprefix("IMPORTED="))


def test_listing_imports_no_plugin_module(test_plugins: Path) -> None:
    rc, imported = _imported_plugin_modules("plugins", "list")
    assert rc == 0
    assert imported == []
    rc, imported = _imported_plugin_modules("plugins", "list", "--json")
    assert rc == 0
    assert imported == []
    # the probe does see imports: --import imports every plugin
    rc, imported = _imported_plugin_modules("plugins", "list", "--import")
    assert rc == 1
    assert {"tunekit_fifo", "tunekit_loggers", "tk_test_plugins"} <= set(imported)
