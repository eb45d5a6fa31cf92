"""The control server of ``run(server_port=...)``, ``TuneClient``, ``tunekit trials`` and
``tunekit dashboard DIR``: against a real run in a driver process and a real
directory, on 127.0.0.1 only."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

try:
    from _server_helpers import Driver, wait_until
except ImportError:  # tests imported as a package
    from tests._server_helpers import Driver, wait_until

import tunekit as tune
from tunekit import TuneClient, TuneError
from tunekit_core.cli import main
from tunekit_core.server import ControlServer, DirectoryBackend, is_loopback

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """One run with a token (on loopback a token is optional, and checked when set)."""
    run = Driver(tmp_path_factory.mktemp("served"), token=TOKEN)
    try:
        yield run
    finally:
        run.close()


@pytest.fixture
def client(driver):
    return TuneClient(driver.address, token=TOKEN)


def _running(client, count=1):
    trials = client.get_all_trials()["trials"]
    running = [t for t in trials if t["status"] == "RUNNING" and t["result"]]
    return running if len(running) >= count else None


def _at_least(items, count):
    return items if len(items) >= count else None


def _raw(url, method="GET", headers=None, body=None):
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_list_and_get_trials(client):
    # the server is up before the first trial is created
    trials = wait_until(lambda: _at_least(client.get_all_trials()["trials"], 3), timeout=60)
    assert sorted(t["config"]["x"] for t in trials[:3]) == [1, 2, 3]
    info = wait_until(lambda: _running(client), timeout=60)[0]
    assert set(info) >= {
        "id", "name", "trainable_name", "status", "config", "evaluated_params", "result",
        "local_path", "num_failures", "error_msg",
    }
    assert info["trainable_name"] == "train" and info["evaluated_params"] == {"x": info["config"]["x"]}
    assert info["result"]["training_iteration"] >= 1 and "loss" in info["result"]
    one = client.get_trial(info["id"])["trial"]
    assert one["id"] == info["id"] and one["config"] == info["config"]

def test_client_address_forms(driver):
    host, port = driver.address.split(":")
    for client in (TuneClient(driver.address), TuneClient(host, int(port)),
                   TuneClient(f"http://{driver.address}/")):
        assert client.server_address == host and client.server_port == int(port)
    with pytest.raises(ValueError, match="has no port"):
        TuneClient(host)


def test_unknown_trial_id_is_an_error(client, driver):
    with pytest.raises(TuneError, match=r"404.*No trial with id 'nope'"):
        client.get_trial("nope")
    with pytest.raises(TuneError, match="No trial with id"):
        client.stop_trial("nope")
    status, body = _raw(driver.url + "trials/nope", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 404 and "nope" in body["error"]


def test_add_trial_expands_grid_search_and_stop(client):
    added = client.add_trial(None, {"config": {"x": {"grid_search": [10, 20]}, "tag": "api"}})["trials"]
    assert [t["config"] for t in added] == [{"x": 10, "tag": "api"}, {"x": 20, "tag": "api"}]
    assert [t["evaluated_params"] for t in added] == [{"x": 10}, {"x": 20}]
    assert all(t["status"] in ("PENDING", "RUNNING") for t in added)
    listed = {t["id"]: t for t in client.get_all_trials()["trials"]}
    assert all(t["id"] in listed for t in added)
    # a queued trial stops at once; stopping it again changes nothing
    for info in added:
        stopped = client.stop_trial(info["id"])["trials"][0]
        assert stopped["id"] == info["id"] and stopped["status"] == "TERMINATED"
    assert client.stop_trial(added[0]["id"])["trials"][0]["status"] == "TERMINATED"

    with pytest.raises(TuneError, match="no experiment named 'other'"):
        client.add_trial("other", {"config": {"x": 1}})
    with pytest.raises(TuneError, match="Unsupported spec keys: stop"):
        client.add_trial(None, {"config": {"x": 1}, "stop": {"training_iteration": 1}})
    with pytest.raises(TuneError, match="does not evaluate"):
        client.add_trial(None, {"config": {"x": {"eval": "__import__('os').getpid()"}}})


def test_stop_a_running_trial(client):
    target = wait_until(lambda: _running(client), timeout=60)[0]
    stopped = client.stop_trial(target["id"])["trials"][0]
    assert stopped["status"] == "TERMINATED"
    assert client.get_trial(target["id"])["trial"]["status"] == "TERMINATED"


def test_token_is_required(driver):
    status, body = _raw(driver.url + "trials")
    assert status == 401 and "token" in body["error"]
    status, _ = _raw(driver.url + "trials", headers={"Authorization": "Bearer wrong"})
    assert status == 401
    status, body = _raw(driver.url + f"trials?token={TOKEN}")
    assert status == 200 and body["trials"]
    # a change needs the header: ?token= is for GET requests (the page) only
    status, _ = _raw(
        driver.url + f"stop_experiment?token={TOKEN}", method="PUT",
        headers={"Content-Type": "application/json"},
    )
    assert status == 401
    with pytest.raises(TuneError, match="401"):
        TuneClient(driver.address, token="wrong").get_all_trials()
    # the page passes the token on to its assets
    request = urllib.request.Request(driver.url + f"?token={TOKEN}")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert f"static/app.js?token={TOKEN}" in response.read().decode()


def test_cli_trials_commands(driver, capsys):
    common = ["--address", driver.address, "--token", TOKEN]
    assert main(["trials", "list", *common]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["ID", "STATUS", "ITER", "NAME", "PARAMS"]
    assert "x=1" in out and "x=3" in out

    assert main(["trials", "add", "--config", '{"x": {"grid_search": [30, 31]}}', *common]) == 0
    out = capsys.readouterr().out
    ids = re.findall(r"^(\S+_\d{5})\s", out, re.M)
    assert len(ids) == 2 and "x=30" in out and "x=31" in out

    assert main(["trials", "get", ids[0], *common]) == 0
    assert json.loads(capsys.readouterr().out)["trial"]["config"] == {"x": 30}
    for trial_id in ids:
        assert main(["trials", "stop", trial_id, *common]) == 0
        assert "TERMINATED" in capsys.readouterr().out

    assert main(["trials", "get", "nope", *common]) == 1
    assert "No trial with id 'nope'" in capsys.readouterr().err
    assert main(["trials", "list", "--address", driver.address, "--token", "wrong"]) == 1
    assert "401" in capsys.readouterr().err
    assert main(["trials", "add", "--config", "{not json", *common]) == 2


def test_stop_experiment_ends_the_run_and_the_server(driver, client):
    # (last in this module: it ends the shared run)
    trials = client.stop_experiment()["trials"]
    assert trials and {t["status"] for t in trials} == {"TERMINATED"}
    returned = driver.wait_for(re.compile(r"RUN_RETURNED (.*)"), 60)
    statuses = json.loads(returned.group(1))
    assert statuses == {t["id"]: "TERMINATED" for t in trials}
    # run() has returned while the driver process still lives: nothing listens any more
    host, port = driver.address.split(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=5).close()
    # the added trials are part of the experiment state, with their configs
    analysis = tune.ExperimentAnalysis(str(driver.experiment_dir))
    assert {t.trial_id: t.config for t in analysis.trials} == {t["id"]: t["config"] for t in trials}


def _quick(config):
    for i in range(3):
        tune.report(loss=(config["x"] - 2) ** 2 + 1.0 / (i + 1), score=i)


def test_added_trials_survive_a_resume(tmp_path):
    run = Driver(tmp_path)
    try:
        client = TuneClient(run.address)
        wait_until(lambda: len(client.get_all_trials()["trials"]) >= 3, timeout=60)
        added = client.add_trial(None, {"config": {"x": 7}})["trials"][0]
    finally:
        run.close()  # Ctrl+C: unfinished trials are saved to be resumed
    assert "RUN_RETURNED" in run.text()
    analysis = tune.run(
        _quick, name="served", local_dir=str(tmp_path / "results"),
        config={"x": tune.grid_search([1, 2, 3])}, resume=True, verbose=0,
    )
    trials = {t.trial_id: t for t in analysis.trials}
    assert len(trials) == 4 and {t.status for t in trials.values()} == {"TERMINATED"}
    resumed = trials[added["id"]]
    assert resumed.config == {"x": 7} and resumed.last_result["training_iteration"] == 3
    # it still belongs to the no-op searcher of added trials, not to the variant generator
    assert type(resumed._source.searcher) is tune.search.Searcher
    assert all(type(t._source.searcher) is not tune.search.Searcher
               for i, t in trials.items() if i != added["id"])


# ----------------------------------------------------------------------------- settings


def test_non_loopback_host_without_token_fails_at_start(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEKIT_SERVER_HOST", "0.0.0.0")
    monkeypatch.delenv("TUNEKIT_SERVER_TOKEN", raising=False)
    with pytest.raises(ValueError, match="without a token"):
        tune.run(lambda config: None, local_dir=str(tmp_path), server_port=0, verbose=0)
    assert not any(tmp_path.iterdir())  # refused before anything was created
    with pytest.raises(ValueError, match="TUNEKIT_SERVER_TOKEN"):
        ControlServer(DirectoryBackend(str(tmp_path)), host="192.0.2.1", port=0)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")


def test_server_port_errors(tmp_path):
    with pytest.raises(ValueError, match="server_port must be a port number"):
        tune.run(lambda config: None, local_dir=str(tmp_path), server_port=-1, verbose=0)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        with pytest.raises(OSError, match="Cannot start the tunekit control server"):
            tune.run(
                lambda config: None, local_dir=str(tmp_path), server_port=busy.getsockname()[1],
                verbose=0,
            )
    finally:
        busy.close()


# ----------------------------------------------------------------------------- tunekit dashboard


def _short_run(config):
    for i in range(5):
        tune.report(loss=config["x"] / (i + 1))


def test_dashboard_command_serves_a_finished_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNEKIT_SERVER_TOKEN", raising=False)
    monkeypatch.delenv("TUNEKIT_SERVER_HOST", raising=False)
    tune.run(
        _short_run, name="done", local_dir=str(tmp_path), config={"x": tune.grid_search([1, 2, 3])},
        verbose=0,
    )
    out = tmp_path / "dashboard.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tunekit_core.cli", "dashboard", str(tmp_path / "done"),
             "--port", "0", "--metric", "loss", "--mode", "min"],
            stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        url = wait_until(lambda: re.search(r"Open (http://\S+/)", out.read_text()), 60).group(1)
        status, doc = _raw(url + "api/experiment")
        assert status == 200 and doc["live"] is False and doc["can_control"] is False
        assert doc["metric"] == "loss" and "loss" in doc["metrics"] and doc["params"] == ["x"]
        assert doc["counts"] == {"TERMINATED": 3} and len(doc["trials"]) == 3
        trial_id = doc["trials"][0]["id"]
        status, history = _raw(url + f"api/trials/{trial_id}/history?keys=loss")
        assert status == 200 and history["columns"]["training_iteration"] == [1, 2, 3, 4, 5]
        status, best = _raw(url + "api/best?metric=loss&mode=min")
        assert status == 200 and best["points"][-1][1] == pytest.approx(0.2)
        status, body = _raw(url + "trials")
        assert status == 200 and {t["status"] for t in body["trials"]} == {"TERMINATED"}
        status, body = _raw(url + f"trials/{trial_id}", method="PUT")
        assert status == 405 and "read-only" in body["error"]
        with urllib.request.urlopen(url, timeout=30) as response:
            assert "static/app.js" in response.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
