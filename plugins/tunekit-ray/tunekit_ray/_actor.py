"""The trial side of the Ray executor: a Ray actor that runs tunekit's worker loop.

Each actor connects back to the driver over TCP and then runs
:class:`tunekit_core.worker.Worker`, the same loop the local executor's worker
processes run: trials one after another, report batching with credit-based flow
control, stop and pause requests, checkpoints persisted into the trial directory.
Ray supplies the process, its placement and resources, and failure detection.

On a node that does not see the driver's experiment directory, :class:`RayWorker`
writes each trial into a staging directory on its node and sends checkpoints and
the trial's other files to the driver (see :mod:`tunekit_ray._transfer`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import traceback
from multiprocessing.connection import Connection

from tunekit_core.checkpoint import CHECKPOINT_KEY, TMP_PREFIX
from tunekit_core.worker import Worker, _pickle_exception

from . import _transfer

HELLO = b"TKRAY1 "


class RayWorker(Worker):
    """tunekit's worker loop with the Ray node id in each result and file transfer."""

    def __init__(self, conn: Connection, node_id: str, staging_root: str, max_transfer_bytes: int):
        super().__init__(conn)
        self.node_id = node_id
        self.staging_root = staging_root
        self.max_transfer_bytes = max_transfer_bytes
        # Set while a trial runs in a staging directory: {"dir", "restore_dir", "logs"}.
        self.staging: dict | None = None

    # -- staging -------------------------------------------------------------------------
    def _run_trial(self, spec: dict) -> None:
        transfer = spec.pop("ray_transfer", None)
        if transfer is not None:
            try:
                spec = self._stage(spec, transfer)
            except BaseException as exc:  # noqa: BLE001 - reported as the trial's failure
                with self.cond:
                    self.trial_id = spec["trial_id"]
                    self.buffer = []
                    self.inflight = 0
                self._cleanup_staging()
                self.finish(("error", traceback.format_exc(), _pickle_exception(exc)))
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
        super()._run_trial(spec)

    def _stage(self, spec: dict, transfer: dict) -> dict:
        driver_dir = spec["logdir"]
        local = os.path.join(self.staging_root, os.path.basename(driver_dir.rstrip(os.sep)))
        shutil.rmtree(local, ignore_errors=True)
        os.makedirs(local)
        spec = dict(spec)
        spec["logdir"] = local
        logs: set[str] = set()
        if spec.get("log_to_file"):
            mapped = []
            for path in spec["log_to_file"]:
                relative = os.path.relpath(path, driver_dir)
                if relative.startswith(os.pardir):
                    relative = os.path.basename(path)
                logs.add(os.path.normpath(relative))
                mapped.append(os.path.join(local, relative))
            spec["log_to_file"] = tuple(mapped)
        restore_dir = None
        if spec.get("restore") and transfer.get("restore_blob") is not None:
            restore_dir = os.path.join(local, f"{TMP_PREFIX}restore")
            _transfer.unpack_into(transfer["restore_blob"], restore_dir)
            spec["restore"] = {**spec["restore"], "path": restore_dir}
        self.staging = {"dir": local, "restore_dir": restore_dir, "logs": logs}
        return spec

    def _cleanup_staging(self) -> None:
        staging = self.staging
        self.staging = None
        if staging is not None:
            shutil.rmtree(staging["dir"], ignore_errors=True)

    def _ship_checkpoint(self, trial_id: str, path: str) -> None:
        size = _transfer.directory_size(path)
        if size > self.max_transfer_bytes:
            error = (
                f"The checkpoint {os.path.basename(path)} of this trial holds {size} bytes, more "
                f"than the Ray executor sends from a node to the driver ({self.max_transfer_bytes} "
                "bytes). Put the experiment directory (local_dir / storage_path) on storage every "
                "node mounts at the same path (e.g. NFS), or raise "
                "RayExecutor(max_transfer_bytes=...) / TUNEKIT_RAY_MAX_TRANSFER_BYTES."
            )
            Worker._send(self, ("ckpt", trial_id, path, None, error))
        else:
            Worker._send(self, ("ckpt", trial_id, path, _transfer.pack_directory(path), None))
        shutil.rmtree(path, ignore_errors=True)

    def _ship_files(self, trial_id: str) -> None:
        staging = self.staging
        if staging is None or not os.path.isdir(staging["dir"]):
            return
        skip = {name for name in os.listdir(staging["dir"]) if name.startswith(TMP_PREFIX)}
        if len(skip) == len(os.listdir(staging["dir"])):
            return
        size = _transfer.directory_size(staging["dir"])
        if staging["restore_dir"]:
            size -= _transfer.directory_size(staging["restore_dir"])
        if size > self.max_transfer_bytes:
            sys.stderr.write(
                f"tunekit: the files this trial wrote on node {self.node_id} ({size} bytes) are "
                f"more than max_transfer_bytes ({self.max_transfer_bytes}); they stay in "
                f"{staging['dir']} on that node.\n"
            )
            staging["dir"] = ""  # keep them there
            return
        blob = _transfer.pack_directory(staging["dir"], frozenset(skip))
        Worker._send(self, ("files", trial_id, blob, sorted(staging["logs"])))

    # -- wire ----------------------------------------------------------------------------
    def _send(self, msg) -> None:
        if msg[0] == "r":
            trial_id, batch, end = msg[1], msg[2], msg[3]
            node_id = self.node_id
            for result in batch:
                result["node_id"] = node_id
            if self.staging is not None:
                for result in batch:
                    path = result.get(CHECKPOINT_KEY)
                    if path:
                        self._ship_checkpoint(trial_id, path)
                if end is not None:
                    info = end[1] if end[0] == "done" else None
                    if info and info.get("checkpoint"):
                        self._ship_checkpoint(trial_id, info["checkpoint"])
                    self._ship_files(trial_id)
                    self._cleanup_staging()
        Worker._send(self, msg)


class TunekitTrial:
    """The Ray actor class (wrapped with ``ray.remote`` by the executor)."""

    def serve(
        self,
        host: str,
        port: int,
        local: tuple[str, str | None],
        token: str,
        slot_id: int,
        marker: tuple[str, str] | None,
        sys_path: list[str],
        max_transfer_bytes: int,
    ) -> str:
        """Connect to the driver and run trials until it says shutdown (or goes away).

        ``local`` is ``(driver's node id, its Unix socket path)``: an actor on the
        driver's node connects through that socket, others over TCP to ``host:port``.
        """
        import ray

        for entry in sys_path:
            if entry not in sys.path and os.path.isdir(entry):
                sys.path.append(entry)
        node_ip = ray.util.get_node_ip_address()
        node_id = ray.get_runtime_context().get_node_id()
        os.environ["TUNEKIT_NODE_IP"] = node_ip
        driver_node, local_path = local
        sock = None
        if node_id == driver_node and local_path:
            # the driver's own node: its Unix socket (cheaper than TCP loopback)
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(local_path)
            except OSError:
                sock.close()
                sock = None
        if sock is None:
            sock = socket.create_connection((host, port), timeout=60)
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn = Connection(sock.detach())
        hello = {
            "slot": slot_id,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "node_ip": node_ip,
            "node_id": node_id,
            "shared": bool(marker) and _marker_matches(*marker),
        }
        conn.send_bytes(HELLO + token.encode() + b" " + json.dumps(hello).encode())
        staging_root = os.path.join(tempfile.gettempdir(), "tunekit-ray", token[:16])
        RayWorker(conn, node_id, staging_root, max_transfer_bytes).serve()
        try:
            os.rmdir(staging_root)  # empty once every trial's files went to the driver
        except OSError:
            pass
        return "shutdown"


def _marker_matches(path: str, content: str) -> bool:
    """Whether this node sees the driver's marker file (its experiment directory)."""
    try:
        with open(path) as f:
            return f.read().strip() == content
    except OSError:
        return False
