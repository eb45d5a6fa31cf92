"""Storage sync: SyncConfig, ExperimentSyncer, SyncerCallback, downloads and REMOTE resume.

Remotes are real fsspec file systems: file://, memory://, and s3:// served by
moto's S3-compatible server on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import uuid
from types import SimpleNamespace

import fsspec
import pytest

import tunekit as tune
from tunekit.sync import (
    ExperimentSyncer,
    SyncConfig,
    SyncerCallback,
    download_experiment,
    make_syncer_callback,
    sync_down,
)
from tunekit_core.sync import MANIFEST_NAME

NAME = "exp"


def _train(config):
    for i in range(1, 4):
        log = config.get("log")
        if log:
            with open(log, "a") as f:
                f.write(f"{tune.get_trial_id()} {i}\n")
        tune.report({"i": i, "x": config["x"]}, checkpoint=tune.Checkpoint.from_dict({"i": i}))


def _run(local_dir, callbacks=(), log=None, resume=False, samples=3):
    config = {"x": tune.grid_search(list(range(samples)))}
    if log:
        config["log"] = log
    return tune.run(
        _train,
        name=NAME,
        local_dir=str(local_dir),
        config=config,
        keep_checkpoints_num=1,
        resources_per_trial={"cpu": 0.5},
        verbose=0,
        callbacks=list(callbacks),
        resume=resume,
    )


@pytest.fixture(scope="module")
def experiment_template(tmp_path_factory):
    """A finished experiment of 3 trials (3 results and a kept checkpoint each)."""
    local = tmp_path_factory.mktemp("template")
    _run(local)
    return local / NAME


@pytest.fixture
def experiment(experiment_template, tmp_path):
    """A private copy of the template experiment."""
    path = tmp_path / "local" / NAME
    shutil.copytree(experiment_template, path)
    return path


def _is_excluded(rel):
    parts = rel.split("/")
    name = parts[-1]
    return (
        any(p.startswith(".tmp_checkpoint_") or ".old-" in p for p in parts[:-1])
        or name == MANIFEST_NAME
        or name.endswith(("-wal", "-shm", "-journal", ".tmp", ".db.bak"))
    )


def _local_files(root):
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if not _is_excluded(rel):
                out[rel] = path
    return out


def _remote_files(url, storage_options=None):
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    root = root.rstrip("/")
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()
    return fs, root, sorted(p[len(root) + 1 :] for p in fs.find(root))


def _db_name(path):
    names = [n for n in os.listdir(path) if n.startswith("experiment_state-") and n.endswith(".db")]
    assert len(names) == 1, names
    return names[0]


def _assert_mirror(local, url, storage_options=None):
    """The remote holds exactly the local files (less the excluded ones), byte for byte;
    the state database as a consistent snapshot. Returns the snapshot's rows."""
    fs, root, remote = _remote_files(url, storage_options)
    expected = _local_files(local)
    assert remote == sorted(expected)
    db = _db_name(local)
    for rel, path in expected.items():
        if rel == db:
            continue
        with open(path, "rb") as f:
            assert fs.cat_file(f"{root}/{rel}") == f.read(), rel
    snapshot = os.path.join(str(local) + "-snapshot.db")
    with open(snapshot, "wb") as f:
        f.write(fs.cat_file(f"{root}/{db}"))
    conn = sqlite3.connect(snapshot)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        trials = conn.execute("SELECT trial_id, data FROM trials ORDER BY seq").fetchall()
        kv = dict(conn.execute("SELECT key, value FROM kv").fetchall())
    finally:
        conn.close()
        os.unlink(snapshot)
    return trials, kv


def _trial_dirs(path):
    return sorted(p for p in os.listdir(path) if os.path.isdir(os.path.join(path, p)))


# -- SyncConfig ----------------------------------------------------------------------------


def test_sync_config_defaults_match_ray():
    config = SyncConfig()
    assert config.upload_dir is None
    assert config.syncer == "auto"
    assert config.sync_on_checkpoint is True
    assert config.sync_period == 300
    assert tune.sync.SyncConfig is SyncConfig


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"upload_dir": "/plain/path"}, ValueError, ["not a URL", "file:///plain/path"]),
        ({"upload_dir": "nosuchproto://b/x"}, ValueError, ["Protocol not known", "s3fs"]),
        ({"upload_dir": ""}, ValueError, ["URL string"]),
        ({"upload_dir": "s3://b/x", "syncer": "rsync"}, ValueError, ["syncer='auto'"]),
        ({"sync_period": -1}, ValueError, ["sync_period"]),
        ({"sync_period": True}, ValueError, ["sync_period"]),
        ({"sync_period": "300"}, ValueError, ["sync_period"]),
        ({"sync_on_checkpoint": "yes"}, TypeError, ["sync_on_checkpoint"]),
        ({"storage_options": ["x"]}, TypeError, ["storage_options"]),
    ],
)
def test_sync_config_rejects_bad_values(kwargs, error, words):
    with pytest.raises(error) as info:
        SyncConfig(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_sync_config_names_the_missing_package():
    pytest.importorskip("s3fs")
    assert SyncConfig(upload_dir="s3://bucket/x").upload_dir == "s3://bucket/x"
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - only where gcsfs is installed
        pytest.skip("gcsfs is installed")
    with pytest.raises(ValueError, match=r"pip install gcsfs"):
        SyncConfig(upload_dir="gs://bucket/x")


def test_make_syncer_callback_and_download_arguments(tmp_path):
    exp_dir = str(tmp_path / NAME)
    assert make_syncer_callback(None, exp_dir, NAME) is None
    assert make_syncer_callback(SyncConfig(), exp_dir, NAME) is None
    off = SyncConfig(upload_dir=f"file://{tmp_path}/up", syncer=None)
    assert make_syncer_callback(off, exp_dir, NAME) is None
    with pytest.raises(TypeError, match="SyncConfig"):
        make_syncer_callback({"upload_dir": "s3://b"}, exp_dir, NAME)

    config = SyncConfig(
        upload_dir=f"file://{tmp_path}/up/", sync_period=7, sync_on_checkpoint=False
    )
    callback = make_syncer_callback(config, exp_dir, NAME)
    assert isinstance(callback, SyncerCallback) and isinstance(callback, tune.Callback)
    assert callback.syncer.remote_url == f"file://{tmp_path}/up/{NAME}"
    assert callback.syncer.sync_period == 7
    assert callback.sync_on_checkpoint is False

    with pytest.raises(ValueError, match="upload_dir"):
        download_experiment(None, exp_dir, NAME)
    with pytest.raises(ValueError, match="no experiment state"):
        download_experiment(config, exp_dir, NAME)
    with pytest.raises(ValueError, match="nothing to download"):
        sync_down(f"file://{tmp_path}/up/{NAME}", exp_dir)
    assert not os.path.exists(exp_dir)


# -- ExperimentSyncer on file:// and memory:// -----------------------------------------------


@pytest.fixture(params=["file", "memory"])
def remote_url(request, tmp_path):
    if request.param == "file":
        yield f"file://{tmp_path}/remote/{NAME}"
        return
    root = f"/tunekit-test-{uuid.uuid4().hex[:8]}"
    yield f"memory://{root}/{NAME}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_sync_up_mirrors_the_directory_with_a_database_snapshot(experiment, remote_url):
    # Files that must not travel: temporaries and a half-written checkpoint.
    trial = os.path.join(experiment, _trial_dirs(experiment)[0])
    (experiment / ".experiment_state-x.json.tmp").write_text("partial")
    os.makedirs(os.path.join(trial, ".tmp_checkpoint_000009_abcdef"))
    with open(os.path.join(trial, ".tmp_checkpoint_000009_abcdef", "data"), "w") as f:
        f.write("partial")
    # A live database: a committed row that is still only in the -wal file.
    db = os.path.join(experiment, _db_name(experiment))
    live = sqlite3.connect(db, isolation_level=None)
    try:
        assert live.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
        live.execute("PRAGMA wal_autocheckpoint=0")
        live.execute("INSERT INTO kv(key, value) VALUES ('probe', 'in-the-wal')")
        assert os.path.getsize(db + "-wal") > 0

        syncer = ExperimentSyncer(str(experiment), remote_url, sync_period=3600)
        assert syncer.sync_up(force=True)
        trials, kv = _assert_mirror(experiment, remote_url)
    finally:
        live.close()
    assert len(trials) == 3
    assert kv["probe"] == "in-the-wal"
    stats = syncer.last_stats
    assert stats.uploaded_files == stats.scanned_files == len(_local_files(experiment))
    _fs, _root, remote = _remote_files(remote_url)
    assert not any(r.endswith(("-wal", "-shm", ".tmp")) or ".tmp_checkpoint_" in r for r in remote)


def test_sync_up_uploads_only_changed_files(experiment, remote_url):
    syncer = ExperimentSyncer(str(experiment), remote_url, sync_period=3600)
    assert syncer.sync_up()
    total = syncer.last_stats.uploaded_files
    assert total == len(_local_files(experiment))
    assert syncer.sync_up() is False  # within sync_period
    assert syncer.sync_up(force=True)
    assert syncer.last_stats.uploaded_files == 0

    fs, root, _ = _remote_files(remote_url)
    trial = _trial_dirs(experiment)[1]
    changed = f"{trial}/result.json"
    before = {rel: fs.info(f"{root}/{rel}") for rel in _local_files(experiment)}
    with open(experiment / trial / "result.json", "a") as f:
        f.write('{"extra": 1}\n')
    (experiment / trial / "new_file.txt").write_text("new")
    assert syncer.sync_up(force=True)
    assert syncer.last_stats.uploaded_files == 2
    assert syncer.last_stats.scanned_files == total + 1
    _assert_mirror(experiment, remote_url)
    stamp = "mtime" if remote_url.startswith("file:") else "created"
    for rel, info in before.items():
        now = fs.info(f"{root}/{rel}")
        if rel == changed:
            assert now[stamp] != info[stamp] or now["size"] != info["size"]
        else:
            assert now[stamp] == info[stamp], rel


def test_sync_up_removes_what_was_removed_locally(experiment, remote_url):
    syncer = ExperimentSyncer(str(experiment), remote_url, sync_period=0)
    syncer.sync_up()
    trial = _trial_dirs(experiment)[0]
    checkpoints = [n for n in os.listdir(experiment / trial) if n.startswith("checkpoint_")]
    assert checkpoints
    fs, root, _ = _remote_files(remote_url)
    assert fs.isdir(f"{root}/{trial}/{checkpoints[0]}")
    # a checkpoint pruned, a new one written, a file deleted
    shutil.rmtree(experiment / trial / checkpoints[0])
    os.makedirs(experiment / trial / "checkpoint_000007")
    (experiment / trial / "checkpoint_000007" / "data").write_text("7")
    os.unlink(experiment / trial / "params.pkl")
    syncer.sync_up()
    assert syncer.last_stats.deleted_dirs == 1
    _assert_mirror(experiment, remote_url)
    fs, root, remote = _remote_files(remote_url)
    assert not fs.exists(f"{root}/{trial}/{checkpoints[0]}")
    assert f"{trial}/checkpoint_000007/data" in remote
    # a whole trial directory removed
    shutil.rmtree(experiment / trial)
    syncer.sync_up()
    _assert_mirror(experiment, remote_url)
    assert not fs.exists(f"{root}/{trial}")
    # the whole experiment directory gone: refuse, rather than empty the remote copy
    shutil.rmtree(experiment)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        syncer.sync_up()
    assert len(fs.find(root)) == syncer.last_stats.scanned_files


def test_a_new_syncer_continues_from_the_manifest(experiment, remote_url):
    ExperimentSyncer(str(experiment), remote_url).sync_up()
    again = ExperimentSyncer(str(experiment), remote_url)
    again.sync_up()
    assert again.last_stats.uploaded_files == 0
    # Another remote: the manifest does not apply, everything goes up.
    other = remote_url + "-other"
    elsewhere = ExperimentSyncer(str(experiment), other)
    elsewhere.sync_up()
    assert elsewhere.last_stats.uploaded_files == len(_local_files(experiment))
    # The remote was wiped behind the syncer's back: the manifest is not trusted.
    fs, root, _ = _remote_files(remote_url)
    fs.rm(root, recursive=True)
    fresh = ExperimentSyncer(str(experiment), remote_url)
    fresh.sync_up()
    assert fresh.last_stats.uploaded_files == len(_local_files(experiment))
    _assert_mirror(experiment, remote_url)


def test_sync_down_restores_the_experiment(experiment, remote_url, tmp_path):
    ExperimentSyncer(str(experiment), remote_url).sync_up()
    target = tmp_path / "restored" / NAME
    count = sync_down(remote_url, str(target))
    assert count == len(_local_files(experiment))
    for rel, path in _local_files(experiment).items():
        if not rel.endswith(".db"):
            with open(path, "rb") as a, open(target / rel, "rb") as b:
                assert a.read() == b.read(), rel
    assert not [p for p in os.listdir(tmp_path / "restored") if p.startswith(".tunekit-download")]
    # the restored directory syncs incrementally to the same remote
    syncer = ExperimentSyncer(str(target), remote_url)
    syncer.sync_up()
    assert syncer.last_stats.uploaded_files == 0


def test_sync_down_into_an_existing_directory(experiment, remote_url, tmp_path):
    ExperimentSyncer(str(experiment), remote_url).sync_up()
    target = tmp_path / "restored" / NAME
    db = _db_name(experiment)
    os.makedirs(target / "local-only")
    (target / "local-only" / "keep.txt").write_text("mine")
    (target / db).write_bytes(b"stale")
    (target / (db + "-wal")).write_bytes(b"stale wal that must not be replayed")
    sync_down(remote_url, str(target))
    assert (target / "local-only" / "keep.txt").read_text() == "mine"
    assert not (target / (db + "-wal")).exists()
    conn = sqlite3.connect(target / db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM trials").fetchone() == (3,)
    finally:
        conn.close()
    assert sorted(_trial_dirs(target)) == sorted(_trial_dirs(experiment) + ["local-only"])
    # an empty directory (as run() prepares it) is filled as well
    empty = tmp_path / "empty" / NAME
    os.makedirs(empty)
    sync_down(remote_url, str(empty))
    assert _trial_dirs(empty) == _trial_dirs(experiment)


# -- SyncerCallback ------------------------------------------------------------------------


def test_syncer_callback_periodic_checkpoint_and_final_syncs(experiment, tmp_path):
    url = f"file://{tmp_path}/remote/{NAME}"
    remote = tmp_path / "remote" / NAME
    callback = SyncerCallback(ExperimentSyncer(str(experiment), url, sync_period=3600))
    callback.on_step_end(iteration=1, trials=[])  # first step: a background sync
    callback.wait()
    assert callback.syncer.last_stats.uploaded_files == len(_local_files(experiment))

    trial = _trial_dirs(experiment)[2]
    os.makedirs(experiment / trial / "checkpoint_000042")
    (experiment / trial / "checkpoint_000042" / "data").write_text("42")
    (experiment / "other.txt").write_text("not part of the trial")
    callback.on_step_end(iteration=2, trials=[])  # within the period: nothing
    assert callback._thread is None
    callback.on_checkpoint(
        iteration=2,
        trials=[],
        trial=SimpleNamespace(local_path=str(experiment / trial)),
        checkpoint=tune.Checkpoint(str(experiment / trial / "checkpoint_000042")),
    )
    assert (remote / trial / "checkpoint_000042" / "data").read_text() == "42"
    assert not (remote / "other.txt").exists()  # only the trial's directory

    quiet = SyncerCallback(callback.syncer, sync_on_checkpoint=False)
    os.makedirs(experiment / trial / "checkpoint_000043")
    quiet.on_checkpoint(
        iteration=3,
        trials=[],
        trial=SimpleNamespace(local_path=str(experiment / trial)),
        checkpoint=tune.Checkpoint(str(experiment / trial / "checkpoint_000043")),
    )
    assert not (remote / trial / "checkpoint_000043").exists()

    callback.on_experiment_end(trials=[])
    _assert_mirror(experiment, url)


def test_syncer_callback_logs_failures_without_raising(experiment, tmp_path, caplog):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    callback = SyncerCallback(ExperimentSyncer(str(experiment), f"file://{blocker}/{NAME}", 0))
    with caplog.at_level(logging.WARNING, logger="tunekit"):
        callback.on_step_end(iteration=1, trials=[])
        callback.wait()
        callback.on_experiment_end(trials=[])
    assert callback.last_error is not None
    messages = [r for r in caplog.records if "Could not sync the experiment" in r.getMessage()]
    assert [r.levelno for r in messages] == [logging.WARNING, logging.ERROR]


def test_run_with_syncer_callback_on_file_remote(tmp_path):
    url = f"file://{tmp_path}/remote"
    config = SyncConfig(upload_dir=url, sync_period=0)
    local = tmp_path / "local"
    callback = make_syncer_callback(config, str(local / NAME), NAME)
    analysis = _run(local, callbacks=[callback])
    assert callback.last_error is None
    assert len(analysis.trials) == 3
    # The callback uploaded every trial file by the end of the experiment...
    fs, root, remote = _remote_files(f"{url}/{NAME}")
    trial_files = {r: p for r, p in _local_files(local / NAME).items() if "/" in r}
    assert trial_files and set(trial_files) <= set(remote)
    for rel, path in trial_files.items():
        with open(path, "rb") as f:
            assert fs.cat_file(f"{root}/{rel}") == f.read(), rel
    # ...and the state written after the experiment-end hook (final database commit,
    # the JSON snapshot) goes up with a last forced sync once run() has finished.
    callback.syncer.sync_up(force=True)
    assert callback.syncer.last_stats.uploaded_files <= 2
    trials, _kv = _assert_mirror(local / NAME, f"{url}/{NAME}")
    assert len(trials) == 3
    # keep_checkpoints_num=1: pruned checkpoints are gone remotely too
    for trial in _trial_dirs(local / NAME):
        remote = tmp_path / "remote" / NAME / trial
        assert sorted(n for n in os.listdir(remote) if n.startswith("checkpoint_")) == [
            "checkpoint_000003"
        ]


# -- s3:// against moto's server -------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint():
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint, monkeypatch, tmp_path):
    """A fresh bucket on the moto server; dummy credentials and the endpoint in the env."""
    import s3fs

    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"tunekit-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_endpoint})
    fs.mkdir(bucket)
    yield bucket
    s3fs.S3FileSystem.clear_instance_cache()


def test_s3_sync_with_storage_options(experiment, s3_bucket, moto_endpoint):
    options = {"client_kwargs": {"endpoint_url": moto_endpoint}}
    config = SyncConfig(upload_dir=f"s3://{s3_bucket}/experiments", storage_options=options)
    callback = make_syncer_callback(config, str(experiment), NAME)
    syncer = callback.syncer
    url = f"s3://{s3_bucket}/experiments/{NAME}"
    assert syncer.remote_url == url
    assert syncer.sync_up(force=True)
    trials, _kv = _assert_mirror(experiment, url, options)
    assert len(trials) == 3

    trial = _trial_dirs(experiment)[0]
    checkpoint = next(n for n in os.listdir(experiment / trial) if n.startswith("checkpoint_"))
    shutil.rmtree(experiment / trial / checkpoint)
    with open(experiment / trial / "progress.csv", "a") as f:
        f.write("9,9\n")
    syncer.sync_up(force=True)
    assert syncer.last_stats.uploaded_files == 1
    assert syncer.last_stats.deleted_dirs == 1
    _assert_mirror(experiment, url, options)


def test_s3_round_trip_resume_runs_nothing_again(s3_bucket, moto_endpoint, monkeypatch, tmp_path):
    # Endpoint from the environment, as for any S3-compatible server (botocore reads it).
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    config = SyncConfig(upload_dir=f"s3://{s3_bucket}/runs", sync_period=0)
    local = tmp_path / "local"
    exp_dir = local / NAME
    log = str(tmp_path / "executed.log")
    callback = make_syncer_callback(config, str(exp_dir), NAME)
    _run(local, callbacks=[callback], log=log, samples=4)
    assert callback.last_error is None
    with open(log) as f:
        executed = f.read().splitlines()
    assert len(executed) == 4 * 3

    shutil.rmtree(local)
    download_experiment(config, str(exp_dir), NAME)
    assert _trial_dirs(exp_dir) and _db_name(exp_dir)

    callback = make_syncer_callback(config, str(exp_dir), NAME)
    analysis = _run(local, callbacks=[callback], log=log, resume=True, samples=4)
    assert callback.last_error is None
    with open(log) as f:
        assert f.read().splitlines() == executed  # nothing ran again
    assert len(analysis.trials) == 4
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    assert sorted(t.last_result["i"] for t in analysis.trials) == [3, 3, 3, 3]
    # the resumed run's syncer continued from the downloaded manifest: only the state
    # database (and whatever the resumed run rewrote) went up again
    assert callback.syncer.last_stats.uploaded_files < len(_local_files(exp_dir)) / 2


def test_run_sync_config_and_remote_resume_through_run(s3_bucket, moto_endpoint, monkeypatch, tmp_path):
    """The public path: run(sync_config=...) uploads; resume='REMOTE' continues from the copy."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    config = SyncConfig(upload_dir=f"s3://{s3_bucket}/public", sync_period=0)
    local = tmp_path / "local"
    log = str(tmp_path / "executed.log")
    common = dict(
        name=NAME,
        local_dir=str(local),
        config={"x": tune.grid_search([0, 1, 2]), "log": log},
        keep_checkpoints_num=1,
        resources_per_trial={"cpu": 0.5},
        verbose=0,
        sync_config=config,
    )
    tune.run(_train, **common)
    executed = open(log).read().splitlines()
    shutil.rmtree(local)
    analysis = tune.run(_train, resume="REMOTE", **common)
    assert open(log).read().splitlines() == executed  # nothing ran again
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * 3
    with pytest.raises(ValueError, match="upload_dir"):
        tune.run(_train, name="other", local_dir=str(tmp_path / "x"), resume="REMOTE", verbose=0)
