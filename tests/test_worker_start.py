"""How the local executor starts its workers: forked from the driver when safe, else fresh."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

import tunekit as tune
from tunekit_core.local_executor import LocalExecutor

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is Linux-only here")


def run(trainable, tmp_path, **kwargs):
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("local_dir", str(tmp_path))
    return tune.run(trainable, **kwargs)


def describe_worker(config):
    """What a trial sees of the process it runs in."""
    import numpy as np

    with open("/proc/self/cmdline", "rb") as f:
        cmdline = f.read().decode(errors="replace")
    sockets = pipes = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            mode = os.fstat(int(name)).st_mode
        except OSError:
            continue
        sockets += stat.S_ISSOCK(mode)
        pipes += stat.S_ISFIFO(mode) and int(name) > 2
    tune.report(
        score=1,
        spawned="tunekit_core.worker" in cmdline,
        driver_marker=getattr(sys, "_tunekit_test_marker", None),
        own_session=os.getsid(0) == os.getpid(),
        parent=os.getppid(),
        node_ip=os.environ.get("TUNEKIT_NODE_IP"),
        draw=int(np.random.randint(2**31)),
        sockets=sockets,
        pipes=pipes,
    )


@pytest.fixture
def marker():
    """Something only the driver's memory holds: a forked worker sees it, a fresh one does not."""
    sys._tunekit_test_marker = "set in the driver"
    yield
    del sys._tunekit_test_marker


def _rows(analysis):
    return [t.last_result for t in analysis.trials]


def test_workers_are_forked_by_default(tmp_path):
    """In a fresh driver: the pytest process may hold library threads (tqdm's monitor,
    fsspec's loop) left by earlier tests, and with other threads running the driver spawns."""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys, threading
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import tunekit as tune
        from test_worker_start import describe_worker

        if __name__ == "__main__":
            assert threading.active_count() == 1, threading.enumerate()
            sys._tunekit_test_marker = "set in the driver"
            import numpy as np
            np.random.seed(0)  # the driver's global generator, copied into every fork
            analysis = tune.run(describe_worker, num_samples=4, resources_per_trial={{"cpu": 0.5}},
                                verbose=0, local_dir={str(tmp_path)!r})
            print(json.dumps([t.last_result for t in analysis.trials], default=str))
    """))
    env = {k: v for k, v in os.environ.items() if k != "TUNEKIT_WORKER_START"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 4
    for row in rows:
        assert not row["spawned"] and row["driver_marker"] == "set in the driver"
        assert row["own_session"]  # Ctrl+C in the terminal reaches the driver only
        assert row["node_ip"]
        # Only its own socket to the driver: the driver's ends of the other workers' and
        # the searcher's sockets, and its wake pipe, were not kept open in the child.
        assert row["sockets"] == 1 and row["pipes"] == 0
    assert len({row["parent"] for row in rows}) == 1  # the driver
    # Several workers forked from one driver do not share numpy's random stream.
    assert len({row["draw"] for row in rows}) > 1


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_spawn_on_request(tmp_path, marker, monkeypatch, how):
    if how == "argument":
        executor = LocalExecutor(start_method="spawn")
    else:
        monkeypatch.setenv("TUNEKIT_WORKER_START", "spawn")
        executor = None
    analysis = run(describe_worker, tmp_path, num_samples=2, trial_executor=executor)
    for row in _rows(analysis):
        assert row["spawned"] and row["driver_marker"] is None
        assert row["own_session"] and row["sockets"] == 1 and row["pipes"] == 0


def test_a_driver_with_threads_spawns_unless_fork_is_forced(tmp_path, marker, monkeypatch):
    monkeypatch.delenv("TUNEKIT_WORKER_START", raising=False)
    release = threading.Event()
    thread = threading.Thread(target=release.wait, daemon=True)
    thread.start()
    try:
        analysis = run(describe_worker, tmp_path, num_samples=1, name="auto")
        assert _rows(analysis)[0]["spawned"]
        analysis = run(describe_worker, tmp_path, num_samples=1, name="forced",
                       trial_executor=LocalExecutor(start_method="fork"))
        assert not _rows(analysis)[0]["spawned"]
    finally:
        release.set()
        thread.join()


def test_gpu_trials_get_fresh_workers(tmp_path, marker, monkeypatch):
    monkeypatch.setenv("TUNEKIT_NUM_GPUS", "1")
    monkeypatch.setenv("TUNEKIT_WORKER_START", "fork")  # even when fork is forced
    analysis = run(describe_worker, tmp_path, num_samples=1, resources_per_trial={"cpu": 1, "gpu": 1},
                   name="gpu")
    assert _rows(analysis)[0]["spawned"]
    analysis = run(describe_worker, tmp_path, num_samples=1, resources_per_trial={"cpu": 1}, name="cpu")
    assert not _rows(analysis)[0]["spawned"]


def test_unknown_start_method_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="'auto', 'fork' or 'spawn'"):
        LocalExecutor(start_method="forkserver")
    monkeypatch.setenv("TUNEKIT_WORKER_START", "thread")
    with pytest.raises(ValueError, match="TUNEKIT_WORKER_START"):
        LocalExecutor()


def test_buffered_driver_output_is_not_written_again_by_forked_workers(tmp_path):
    """print() into a pipe is block-buffered: a fork that did not flush first would copy the
    buffer into every worker, which would write it again."""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import tunekit as tune

        def train(config):
            print("from the trial")
            tune.report(score=1)

        if __name__ == "__main__":
            print("before the run")
            tune.run(train, num_samples=3, verbose=0, local_dir={str(tmp_path)!r})
            print("after the run")
    """))
    # (PYTHONUNBUFFERED would hide the problem)
    env = {k: v for k, v in os.environ.items() if k not in ("TUNEKIT_WORKER_START", "PYTHONUNBUFFERED")}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         env=env, check=True).stdout
    assert out.count("before the run") == 1 and out.count("after the run") == 1
    assert out.count("from the trial") == 3
