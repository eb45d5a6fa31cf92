"""The Ray executor: each trial runs in a Ray actor holding the trial's resources.

Design
------
A *slot* is one Ray placement group built from the trial's
``PlacementGroupFactory`` (its bundles and strategy) plus one actor scheduled into
its first bundle with that bundle's resources (``num_cpus``, ``num_gpus``,
``memory``, custom resources); tasks and actors the trainable starts itself land in
the placement group too. Slots are kept per resource shape and reused by the next
trial of the same shape, as the local executor reuses its worker processes
(``reuse_actors`` additionally keeps class-trainable instances, as there).

Each actor runs :class:`tunekit_core.worker.Worker`, the local executor's worker
loop, over a TCP connection to the driver (the driver listens on its Ray node's
address; actors connect back and authenticate with a per-run token). Results,
acknowledgements and stop/pause requests therefore travel exactly as with the local
executor, at socket speed, while Ray does placement, resources, process lifecycle
and failure detection.

The driver stays event-driven: :meth:`RayExecutor.wait` blocks in one
``multiprocessing.connection.wait`` on the actors' sockets, the listening socket and
a wake-up pipe. Ray's own completions (a placement group placed, an actor that
ended or died) arrive as ``ObjectRef.future()`` callbacks that queue the event and
write to the same pipe; :meth:`wakeup` writes to it too.

Queueing: :meth:`has_resources_for_trial` answers from a free slot of the trial's
shape, else from the cluster's available resources per node, read from Ray at most
once per run-loop step and reduced by this executor's own unplaced placement groups
and by what it started during the step. When the trial does not fit, one
placement group of its shape is *staged*: Ray places it as soon as resources free
up or a node that can hold it joins, and its readiness wakes the run loop, which
then starts the trial in it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import queue
import secrets
import socket
import sys
import time
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_ready
from typing import Any

from tunekit_core.checkpoint import CHECKPOINT_KEY
from tunekit_core.executor import Executor, TrialLaunch
from tunekit_core.resources import format_resources

from . import _transfer
from ._actor import HELLO

logger = logging.getLogger("tunekit")

_EPS = 1e-6
_DEFAULT_MAX_TRANSFER = 512 * 1024 * 1024
_TOTALS_TTL_S = 5.0
_SLOW_START_S = 60.0


class _Slot:
    """A placement group and the actor running in it (one trial at a time)."""

    __slots__ = (
        "id", "shape", "pg", "actor", "serve_ref", "ready_ref", "ready", "conn", "pid", "hostname",
        "node_ip", "node_id", "transfer", "trial", "launch", "known", "kill_at", "dead_at",
        "retiring", "idle_since", "ray_error", "checkpoints", "gone", "placed_at", "warned",
    )

    def __init__(self, slot_id: int, shape: Any):
        self.id = slot_id
        self.shape = shape
        self.pg = None
        self.actor = None
        self.serve_ref = None
        self.ready_ref = None
        self.ready = False  # the placement group is placed
        self.conn: Connection | None = None
        self.pid = 0
        self.hostname = ""
        self.node_ip = ""
        self.node_id = ""
        self.transfer = False  # this actor's node does not see the experiment directory
        self.trial = None
        self.launch: TrialLaunch | None = None  # waiting for the actor to connect
        self.known: set[str] = set()
        self.kill_at: float | None = None
        self.dead_at: float | None = None
        self.retiring = False
        self.idle_since = time.monotonic()
        self.ray_error: str | None = None
        self.checkpoints: dict[str, str] = {}  # path on the actor's node -> path here
        self.gone = False
        self.placed_at: float | None = None
        self.warned = False


class RayExecutor(Executor):
    """Runs each trial as a Ray actor on a Ray cluster (``trial_executor="ray"``).

    Args:
        reuse_actors: keep class-trainable instances and call ``reset_config`` (as with
            the local executor; actors themselves are always reused per resource shape).
        address: the Ray cluster to connect to (default: ``RAY_ADDRESS``, or the Ray
            that is already initialised in this process). ``"local"`` starts a local Ray.
        start_local: start a local single-node Ray when nothing is initialised and no
            address is set.
        init_kwargs: extra keyword arguments for ``ray.init`` (e.g.
            ``{"num_cpus": 4, "_node_ip_address": "127.0.0.2"}``).
        shared_storage: whether every node sees the driver's experiment directory at the
            same path (e.g. NFS). ``None`` (default) checks per node with a marker file;
            ``False`` always transfers checkpoints and trial files from nodes other than
            the driver's through the driver connection; ``True`` never does.
        max_transfer_bytes: the largest checkpoint (or set of trial files) sent from a node
            to the driver (default 512 MiB, or ``TUNEKIT_RAY_MAX_TRANSFER_BYTES``).
        stop_grace_s: how long a stopped trial may run on before its actor is killed
            (default 5 s, or ``TUNEKIT_STOP_GRACE_S``).
        idle_timeout_s: an actor without a trial for this long gives its resources back
            (default 10 s). Idle actors are also given back at once when a trial of
            another shape waits for resources.
        driver_host: the address actors connect to (default: the driver's Ray node IP).
        driver_port: the port the driver listens on (default: any free port).
    """

    def __init__(
        self,
        reuse_actors: bool = False,
        address: str | None = None,
        start_local: bool = False,
        init_kwargs: dict | None = None,
        shared_storage: bool | None = None,
        max_transfer_bytes: int | None = None,
        stop_grace_s: float | None = None,
        idle_timeout_s: float = 10.0,
        driver_host: str | None = None,
        driver_port: int = 0,
    ):
        self.reuse_actors = reuse_actors
        self._address = address
        self._start_local = start_local
        self._init_kwargs = dict(init_kwargs or {})
        self._shared_storage = shared_storage
        if max_transfer_bytes is None:
            max_transfer_bytes = int(
                os.environ.get("TUNEKIT_RAY_MAX_TRANSFER_BYTES", _DEFAULT_MAX_TRANSFER)
            )
        self.max_transfer_bytes = max_transfer_bytes
        if stop_grace_s is None:
            stop_grace_s = float(os.environ.get("TUNEKIT_STOP_GRACE_S", "5"))
        self.stop_grace_s = stop_grace_s
        self.idle_timeout_s = idle_timeout_s
        self._driver_host = driver_host
        self._driver_port = driver_port

        self._is_setup = False
        self._owns_ray = False
        self._ray = None
        self._actor_cls = None
        self._token = ""
        # (path, content) of the file that tells actors whether they see the experiment directory
        self._marker: tuple[str, str] | None = None
        self._listener: socket.socket | None = None
        self._local_listener: socket.socket | None = None  # actors on the driver's node
        self._local_path: str | None = None
        self._host = ""
        self._port = 0
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._slots: dict[int, _Slot] = {}
        self._next_slot = 0
        self._by_conn: dict[Connection, _Slot] = {}
        self._by_trial: dict[Any, _Slot] = {}
        self._unidentified: list[Connection] = []
        self._events: list[tuple] = []
        self._driver_node = ""
        self._sys_path: list[str] = []
        self._blobs: dict[str, bytes] = {}
        # per run-loop step
        self._view: dict[str, dict[str, float]] | None = None
        self._reserved: dict[Any, int] = {}
        self._wanted: set = set()
        self._node_totals: dict[str, dict[str, float]] | None = None
        self._totals_at = 0.0
        self._fitting_shapes: set = set()
        self._warned_shapes: set = set()

    # -- connecting ----------------------------------------------------------------------
    def _connect(self) -> None:
        import ray

        self._ray = ray
        if ray.is_initialized():
            return
        address = self._address or os.environ.get("RAY_ADDRESS") or None
        kwargs = dict(self._init_kwargs)
        kwargs.setdefault("log_to_driver", True)
        if address == "local" or (address is None and self._start_local):
            kwargs.setdefault("include_dashboard", False)
            address = "local"
        elif address is None:
            raise RuntimeError(
                "trial_executor='ray' found no Ray cluster: RAY_ADDRESS is not set and Ray is "
                "not initialised in this process. Start a cluster (`ray start --head`) and set "
                "RAY_ADDRESS=<head-ip>:<port>, call ray.init(...) before tunekit.run(), or pass "
                "trial_executor=RayExecutor(start_local=True) (or RAY_ADDRESS=local) to start a "
                "single-node Ray on this machine."
            )
        ray.init(address=address, **kwargs)
        self._owns_ray = True

    def setup(self, experiment_dir: str) -> None:
        if self._is_setup:
            return
        self._connect()
        ray = self._ray
        try:
            from ray.util.client import ray as client

            client_mode = client.is_connected()
        except Exception:  # noqa: BLE001 - no client support in this Ray
            client_mode = False
        if client_mode:
            raise RuntimeError(
                "This process is a Ray client (ray.init('ray://...')): the trials' actors could "
                "not reach a driver outside the cluster. Run the driver on the cluster with "
                "tunekit.run(..., _remote=True) or tunekit_ray.run_remote(...)."
            )
        from ._actor import TunekitTrial

        self._actor_cls = ray.remote(TunekitTrial)
        self._token = secrets.token_hex(16)
        self._driver_node = ray.get_runtime_context().get_node_id()
        self._host = self._driver_host or ray.util.get_node_ip_address()
        listener = socket.socket(
            socket.AF_INET6 if ":" in self._host else socket.AF_INET, socket.SOCK_STREAM
        )
        listener.bind((self._host, self._driver_port))
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._port = listener.getsockname()[1]
        # Actors on this node connect through a Unix socket (cheaper than TCP loopback).
        import tempfile

        self._local_path = os.path.join(tempfile.gettempdir(), f"tunekit-ray-{self._token[:12]}.sock")
        try:
            local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            local.bind(self._local_path)
            local.listen(128)
            local.setblocking(False)
            self._local_listener = local
        except OSError:
            self._local_listener = None
            self._local_path = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self._marker = None
        if self._shared_storage is None:
            # Not the run's token: the experiment directory may be uploaded (sync_config).
            # The ".tmp" name keeps it out of uploads, as a file being written would be.
            nonce = secrets.token_hex(8)
            path = os.path.join(experiment_dir, f".tunekit-ray-{nonce}.tmp")
            with open(path, "w") as f:
                f.write(nonce)
            self._marker = (path, nonce)
        paths = [p for p in sys.path if p]
        if os.environ.get("PYTHONPATH"):
            paths.extend(os.environ["PYTHONPATH"].split(os.pathsep))
        self._sys_path = list(dict.fromkeys(os.path.abspath(p) for p in paths))
        self._is_setup = True

    # -- resources -----------------------------------------------------------------------
    def total_resources(self) -> dict[str, float]:
        self._refresh_totals()
        totals: dict[str, float] = {}
        for resources in self._node_totals.values():
            for key, value in resources.items():
                totals[key] = totals.get(key, 0.0) + value
        return totals

    def _ensure_ray(self) -> None:
        if self._ray is None:
            self._connect()

    def _refresh_totals(self) -> None:
        """Each live node's resources, read from Ray at most every few seconds."""
        now = time.monotonic()
        if self._node_totals is None or now - self._totals_at > _TOTALS_TTL_S:
            self._ensure_ray()
            self._node_totals = {
                node["NodeID"]: _clean(node.get("Resources") or {})
                for node in self._ray.nodes()
                if node.get("Alive")
            }
            self._totals_at = now
            self._fitting_shapes.clear()

    def check_fits(self, trial) -> None:
        """Warn (once per resource shape) when no set of live nodes could hold ``trial``."""
        shape = trial.placement_group_factory
        if shape in self._warned_shapes:
            return
        self._refresh_totals()
        if shape in self._fitting_shapes:
            return
        totals = {node: dict(res) for node, res in self._node_totals.items()}
        if _place(totals, shape.bundles, shape.strategy) is not None:
            self._fitting_shapes.add(shape)
            return
        self._warned_shapes.add(shape)
        logger.warning(
            "Trial %s requests %s (%s), which no node of the Ray cluster can hold now "
            "(nodes: %s). It waits until nodes that can hold it join the cluster. Lower "
            "resources_per_trial or add nodes.",
            trial,
            " + ".join("{" + format_resources(b) + "}" for b in shape.bundles),
            shape.strategy,
            "; ".join(format_resources(r) for r in self._node_totals.values()) or "none",
        )

    def _resource_view(self) -> dict[str, dict[str, float]]:
        """Free resources per node for this step: Ray's figures less our unplaced groups."""
        if self._view is None:
            try:
                from ray._private.state import available_resources_per_node

                raw = available_resources_per_node()
            except Exception:  # noqa: BLE001 - an older or newer Ray: one pooled node
                raw = {"cluster": self._ray.available_resources()}
            view = {node: _clean(res) for node, res in raw.items()}
            for slot in self._slots.values():
                if not slot.ready and not slot.gone:
                    _place(view, _bundles(slot.shape), slot.shape.strategy)
            self._view = view
        return self._view

    def _free_slot(self, shape) -> _Slot | None:
        best = None
        for slot in self._slots.values():
            if (
                slot.shape == shape
                and slot.trial is None
                and slot.ready
                and not slot.retiring
                and not slot.gone
            ):
                if slot.conn is not None:
                    return slot
                best = slot
        return best

    def has_resources_for_trial(self, trial) -> bool:
        if trial in self._by_trial:
            return False  # its previous actor (a pause, a stop) has not let go yet
        shape = trial.placement_group_factory
        self._wanted.add(shape)
        if self._free_slot(shape) is not None:
            return True
        if not self._is_setup:
            return False
        if any(
            s.shape == shape and not s.ready and not s.gone and s.trial is None
            for s in self._slots.values()
        ):
            return False  # a staged group of this shape waits: Ray says when it is placed
        if _place(self._resource_view(), _bundles(shape), shape.strategy) is not None:
            self._reserved[shape] = self._reserved.get(shape, 0) + 1
            return True
        try:
            self._new_slot(shape)  # staged: Ray places it when resources appear
        except Exception:  # noqa: BLE001 - Ray refused the request: start_trial reports it
            return True
        return False

    # -- slots ---------------------------------------------------------------------------
    def _new_slot(self, shape) -> _Slot:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        slot = _Slot(self._next_slot, shape)
        self._next_slot += 1
        bundles = _bundles(shape)
        slot.pg = placement_group([_ray_bundle(b) for b in bundles], strategy=shape.strategy)
        head = shape.bundles[0]
        empty_head = not any(head.values())
        custom = {
            k: v for k, v in head.items() if k not in ("CPU", "GPU", "memory") and v
        }
        options: dict[str, Any] = {
            "num_cpus": 0 if empty_head else head.get("CPU", 0.0),
            "num_gpus": 0 if empty_head else head.get("GPU", 0.0),
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                slot.pg,
                placement_group_bundle_index=-1 if empty_head else 0,
                placement_group_capture_child_tasks=True,
            ),
            "max_restarts": 0,
        }
        if not empty_head and head.get("memory"):
            options["memory"] = head["memory"]
        if custom and not empty_head:
            options["resources"] = custom
        slot.actor = self._actor_cls.options(**options).remote()
        slot.serve_ref = slot.actor.serve.remote(
            self._host,
            self._port,
            (self._driver_node, self._local_path),
            self._token,
            slot.id,
            self._marker,
            self._sys_path,
            self.max_transfer_bytes,
        )
        self._slots[slot.id] = slot
        slot.ready_ref = slot.pg.ready()
        self._watch(slot.ready_ref, "placed", slot.id)
        self._watch(slot.serve_ref, "ended", slot.id)
        return slot

    def _watch(self, ref, kind: str, slot_id: int) -> None:
        def callback(future, kind=kind, slot_id=slot_id) -> None:
            self._done.put((kind, slot_id, future))
            self.wakeup()

        ref.future().add_done_callback(callback)

    def _retire(self, slot: _Slot) -> None:
        """Give the slot's resources back: ask its actor to end, or remove it now."""
        if slot.retiring or slot.gone:
            return
        slot.retiring = True
        if slot.conn is not None:
            self._send(slot, ("shutdown",))
            slot.dead_at = time.monotonic() + 5.0  # killed if it does not end by then
        else:
            self._destroy(slot)

    def _destroy(self, slot: _Slot) -> None:
        """Kill the actor, remove the placement group, forget the slot."""
        if slot.gone:
            return
        slot.gone = True
        ray = self._ray
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead
            pass
        self._close(slot)
        try:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(slot.pg)
        except Exception:  # noqa: BLE001 - already removed, or the cluster is gone
            pass
        self._slots.pop(slot.id, None)

    def _send(self, slot: _Slot, msg) -> None:
        if slot.conn is None:
            return
        try:
            slot.conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError):
            pass  # the actor died; its end is reported by wait()

    # -- trials --------------------------------------------------------------------------
    def start_trial(self, trial, launch: TrialLaunch) -> None:
        shape = trial.placement_group_factory
        slot = self._free_slot(shape)
        if slot is None:
            if self._reserved.get(shape):
                self._reserved[shape] -= 1
            try:
                slot = self._new_slot(shape)
            except Exception as exc:  # noqa: BLE001 - e.g. a bundle Ray does not accept
                import traceback

                self._events.append(
                    (
                        "error",
                        trial,
                        f"Ray refused the trial's actor or placement group {shape!r}:\n"
                        + traceback.format_exc(),
                        exc,
                    )
                )
                return
        slot.trial = trial
        self._by_trial[trial] = slot
        if slot.conn is not None:
            self._send_start(slot, trial, launch)
        else:
            slot.launch = launch

    def _send_start(self, slot: _Slot, trial, launch: TrialLaunch) -> None:
        # The run loop stamps results with this (it asked before the actor was known).
        trial._location = (slot.pid, slot.hostname, slot.node_ip)
        ref = launch.trainable
        if ref.key in slot.known:
            wire_ref = ("cached", ref.key, ref.kind, None)
        else:
            blob = ref.blob
            if blob is None:
                blob = self._blobs.get(ref.key)
                if blob is None:
                    with open(ref.path, "rb") as f:
                        blob = self._blobs[ref.key] = f.read()
            wire_ref = ("blob", ref.key, ref.kind, blob)
        spec = {
            "trial_id": trial.trial_id,
            "trial_name": str(trial),
            "logdir": trial.local_path,
            "config": launch.config,
            "trainable": wire_ref,
            "stop": launch.stop,
            "window": launch.window,
            "log_to_file": launch.log_to_file,
            "reuse_actors": launch.reuse_actors or self.reuse_actors,
            "resources": trial.resources,
            "restore": launch.restore,
            "checkpoint": launch.checkpoint,
            "export_formats": launch.export_formats,
        }
        slot.checkpoints = {}
        if slot.transfer:
            restore_blob = None
            path = (launch.restore or {}).get("path") or ""
            if os.path.isdir(path):
                size = _transfer.directory_size(path)
                if size > self.max_transfer_bytes:
                    self._free(slot)
                    self._events.append(
                        (
                            "error",
                            trial,
                            f"The checkpoint {path} to restore holds {size} bytes, more than the "
                            f"Ray executor sends to node {slot.node_ip} ({self.max_transfer_bytes} "
                            "bytes). Put the experiment directory on storage every node mounts at "
                            "the same path, or raise RayExecutor(max_transfer_bytes=...).",
                            None,
                        )
                    )
                    return
                restore_blob = _transfer.pack_directory(path)
            spec["ray_transfer"] = {"restore_blob": restore_blob}
        try:
            data = pickle.dumps(("start", spec), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            import cloudpickle

            data = cloudpickle.dumps(("start", spec), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            slot.conn.send_bytes(data)
        except (OSError, ValueError):
            pass  # reported when the connection's end is read
        slot.known.add(ref.key)

    def stop_trial(self, trial) -> None:
        self._stop(trial, save=False)

    def pause_trial(self, trial) -> None:
        """Stop ``trial`` after it saves a checkpoint (class trainables); resumed later."""
        self._stop(trial, save=True)

    def _stop(self, trial, save: bool) -> None:
        slot = self._by_trial.get(trial)
        if slot is None or slot.kill_at is not None:
            return
        if slot.conn is None:
            # Its actor has not connected yet: the trial never started.
            slot.launch = None
            self._free(slot)
            self._events.append(("done", trial, {"stopped": True}))
            return
        self._send(slot, ("stop", trial.trial_id, save))
        slot.kill_at = time.monotonic() + self.stop_grace_s

    def ack(self, trial, count: int) -> None:
        slot = self._by_trial.get(trial)
        if slot is not None:
            self._send(slot, ("ack", trial.trial_id, count))

    def num_busy(self) -> int:
        return len(self._by_trial)

    def trial_location(self, trial) -> tuple[int, str, str]:
        slot = self._by_trial.get(trial)
        if slot is None or slot.conn is None:
            return 0, "", ""
        return slot.pid, slot.hostname, slot.node_ip

    def _free(self, slot: _Slot) -> None:
        trial = slot.trial
        if trial is not None:
            self._by_trial.pop(trial, None)
        slot.trial = None
        slot.launch = None
        slot.kill_at = None
        slot.idle_since = time.monotonic()

    # -- events --------------------------------------------------------------------------
    def wait(self, timeout: float | None) -> list[tuple]:
        self._housekeeping()
        now = time.monotonic()
        deadline = None
        for slot in self._slots.values():
            for when in (slot.kill_at, slot.dead_at):
                if when is not None and (deadline is None or when < deadline):
                    deadline = when
            if slot.trial is None and slot.ready and not slot.retiring:
                when = slot.idle_since + self.idle_timeout_s
                if deadline is None or when < deadline:
                    deadline = when
            elif not slot.pid and slot.placed_at is not None and not slot.warned:
                when = slot.placed_at + _SLOW_START_S
                if deadline is None or when < deadline:
                    deadline = when
        if deadline is not None:
            left = max(0.0, deadline - now)
            timeout = left if timeout is None else min(timeout, left)
        events = self._events
        self._events = []
        if events or not self._done.empty():
            timeout = 0.0
        waitables: list[Any] = [*self._by_conn, *self._unidentified, self._wake_r]
        if self._listener is not None:
            waitables.append(self._listener)
        if self._local_listener is not None:
            waitables.append(self._local_listener)
        ready = wait_for_ready(waitables, timeout)
        for item in ready:
            if item is self._wake_r:
                try:
                    os.read(self._wake_r, 4096)
                except (BlockingIOError, OSError):
                    pass
            elif item is self._listener or item is self._local_listener:
                self._accept(item)
            elif item in self._by_conn:
                self._read(self._by_conn[item], events)
            else:
                self._identify(item)
        self._ray_events(events)
        now = time.monotonic()
        for slot in list(self._slots.values()):
            if slot.gone:
                continue
            if (
                not slot.pid
                and slot.placed_at is not None
                and not slot.warned
                and now - slot.placed_at >= _SLOW_START_S
            ):
                slot.warned = True
                logger.warning(
                    "The Ray actor for %s has not started %.0f s after Ray reserved its "
                    "resources. Ray may be preparing a runtime environment for it (a driver "
                    "started with `uv run` makes Ray run every worker through `uv run`; set "
                    "RAY_ENABLE_UV_RUN_RUNTIME_ENV=0 if the nodes have the environment), or the "
                    "node cannot start Python workers (check that tunekit-ray is installed "
                    "there, and the Ray logs of the node).",
                    slot.trial if slot.trial is not None else "a trial",
                    now - slot.placed_at,
                )
            if slot.kill_at is not None and slot.kill_at <= now:
                slot.kill_at = None
                self._kill_stopped(slot, events)
            elif slot.dead_at is not None and slot.dead_at <= now:
                self._on_exit(slot, events, final=True)
        # the next step sees fresh resource figures
        self._view = None
        self._reserved.clear()
        self._wanted = set()
        return events

    def _housekeeping(self) -> None:
        """Match waiting trials with free actors and give back slots nobody wants.

        A trial whose placement group is not placed yet moves to a free placed slot of
        its shape when there is one. Staged groups of shapes that no trial asked for in
        this step are removed; idle actors are given back after ``idle_timeout_s``, and
        at once when a trial of another shape waits for resources.
        """
        slots = list(self._slots.values())
        for slot in slots:
            if slot.trial is not None and slot.launch is not None and not slot.ready:
                target = self._free_slot(slot.shape)
                if target is not None:
                    trial, launch = slot.trial, slot.launch
                    self._free(slot)
                    target.trial = trial
                    self._by_trial[trial] = target
                    if target.conn is not None:
                        self._send_start(target, trial, launch)
                    else:
                        target.launch = launch
        waiting = {
            s.shape
            for s in slots
            if not s.ready and not s.gone and (s.trial is not None or s.shape in self._wanted)
        }
        now = time.monotonic()
        for slot in slots:
            if slot.trial is not None or slot.retiring or slot.gone:
                continue
            if not slot.ready:
                if slot.shape not in self._wanted:
                    self._destroy(slot)
                continue
            if now - slot.idle_since >= self.idle_timeout_s:
                self._retire(slot)
            elif waiting and slot.shape not in waiting and slot.shape not in self._wanted:
                self._retire(slot)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(True)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self._unidentified.append(Connection(sock.detach()))

    def _identify(self, conn: Connection) -> None:
        self._unidentified.remove(conn)
        try:
            frame = conn.recv_bytes(maxlength=65536)
        except (EOFError, OSError):
            conn.close()
            return
        prefix = HELLO + self._token.encode() + b" "
        if not (len(frame) > len(prefix) and secrets.compare_digest(frame[: len(prefix)], prefix)):
            logger.warning("The Ray executor refused a connection that did not present its token.")
            conn.close()
            return
        try:
            hello = json.loads(frame[len(prefix):])
            slot = self._slots.get(int(hello["slot"]))
        except (ValueError, KeyError, TypeError):
            conn.close()
            return
        if slot is None or slot.gone or slot.conn is not None:
            conn.close()
            return
        slot.conn = conn
        self._by_conn[conn] = slot
        slot.pid = int(hello["pid"])
        slot.hostname = str(hello["hostname"])
        slot.node_ip = str(hello["node_ip"])
        slot.node_id = str(hello["node_id"])
        shared = self._shared_storage
        if shared is None:
            shared = bool(hello.get("shared"))
        slot.transfer = slot.node_id != self._driver_node and not shared
        slot.ready = True  # an actor that runs in a group means the group is placed
        slot.idle_since = time.monotonic()
        if slot.retiring:
            self._send(slot, ("shutdown",))
            return
        trial = slot.trial
        if trial is not None and slot.launch is not None:
            launch = slot.launch
            slot.launch = None
            self._send_start(slot, trial, launch)

    def _read(self, slot: _Slot, events: list) -> None:
        conn = slot.conn
        loads = pickle.loads
        while True:
            try:
                msg = loads(conn.recv_bytes())
            except (EOFError, OSError):
                self._on_exit(slot, events)
                return
            except Exception as exc:  # noqa: BLE001 - a message that cannot be unpickled here
                trial = slot.trial
                if trial is not None:
                    events.append(
                        ("error", trial, f"Could not read a message from the Ray actor: {exc!r}", None)
                    )
                    self._free(slot)
                self._destroy(slot)
                return
            kind = msg[0]
            if kind == "r":
                self._on_results(slot, msg, events)
            elif kind == "ckpt":
                self._on_checkpoint(slot, msg, events)
            elif kind == "files":
                self._on_files(slot, msg)
            if slot.gone or not conn.poll():
                return

    def _on_checkpoint(self, slot: _Slot, msg, events: list) -> None:
        _, trial_id, remote_path, blob, error = msg
        trial = slot.trial
        if trial is None or trial.trial_id != trial_id:
            return
        if blob is None:
            events.append(("error", trial, error, None))
            self._free(slot)
            self._retire_after_error(slot)
            return
        try:
            local = _transfer.install_checkpoint(
                blob, trial.local_path, os.path.basename(remote_path.rstrip("/"))
            )
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk on the driver
            events.append(
                ("error", trial, f"Could not store the checkpoint sent by the Ray actor: {exc!r}", None)
            )
            self._free(slot)
            self._retire_after_error(slot)
            return
        slot.checkpoints[remote_path] = local

    def _on_files(self, slot: _Slot, msg) -> None:
        _, trial_id, blob, logs = msg
        trial = slot.trial
        if trial is None or trial.trial_id != trial_id or not trial.local_path:
            return
        try:
            _transfer.merge_files(blob, trial.local_path, frozenset(logs))
        except Exception as exc:  # noqa: BLE001 - the trial's result is not affected
            logger.warning("Could not store the files of trial %s sent by its Ray actor: %s", trial, exc)

    def _retire_after_error(self, slot: _Slot) -> None:
        self._destroy(slot)  # its trial is over; the actor may still be running it

    def _on_results(self, slot: _Slot, msg, events: list) -> None:
        _, trial_id, batch, end = msg
        trial = slot.trial
        if trial is None or trial.trial_id != trial_id:
            return
        mapping = slot.checkpoints
        if mapping:
            for result in batch:
                path = result.get(CHECKPOINT_KEY)
                if path is not None and path in mapping:
                    result[CHECKPOINT_KEY] = mapping.pop(path)
        if batch:
            events.append(("results", trial, batch))
        if end is not None:
            if end[0] == "done":
                info = end[1]
                if info and info.get("checkpoint") in mapping:
                    info = {**info, "checkpoint": mapping.pop(info["checkpoint"])}
                events.append(("done", trial, info))
                self._free(slot)
            else:
                exc = None
                if end[2] is not None:
                    try:
                        exc = pickle.loads(end[2])
                    except Exception:  # noqa: BLE001
                        exc = None
                events.append(("error", trial, end[1], exc))
                self._free(slot)
                slot.retiring = True  # the worker exits after a failed trial
                slot.dead_at = time.monotonic() + 5.0

    def _on_exit(self, slot: _Slot, events: list, final: bool = False) -> None:
        """The actor's connection ended (or it was declared dead): report and clean up.

        A trial's actor that ended on its own is reported once Ray says why (its node
        died, it was killed, ...), or after a second without word from Ray.
        """
        trial = slot.trial
        if trial is not None and slot.kill_at is None and slot.ray_error is None and not final:
            self._close(slot)
            slot.dead_at = time.monotonic() + 1.0
            return
        if trial is not None:
            stopping = slot.kill_at is not None
            self._free(slot)
            if stopping:
                events.append(("done", trial, {"stopped": True}))
            else:
                events.append(("error", trial, self._describe_death(slot), None))
        self._destroy(slot)

    def _close(self, slot: _Slot) -> None:
        if slot.conn is not None:
            self._by_conn.pop(slot.conn, None)
            try:
                slot.conn.close()
            except OSError:
                pass
            slot.conn = None

    def _kill_stopped(self, slot: _Slot, events: list) -> None:
        """A stopped trial did not end within the grace period: kill its actor."""
        trial = slot.trial
        if trial is not None:
            self._free(slot)
            events.append(("done", trial, {"stopped": True}))
        self._destroy(slot)

    def _describe_death(self, slot: _Slot) -> str:
        where = f"on node {slot.node_ip} (Ray node {slot.node_id})" if slot.node_id else ""
        text = (
            f"The Ray actor (pid {slot.pid}) running this trial {where} ended before the trial "
            "finished. Nothing was reported after its last result."
        )
        if slot.ray_error:
            text += f"\nRay reported:\n{slot.ray_error}"
        else:
            text += (
                " Its process died or was killed, or its node left the cluster. Check the "
                "trial's stdout/stderr (log_to_file=True) and the Ray logs of that node."
            )
        return text

    def _ray_events(self, events: list) -> None:
        while True:
            try:
                kind, slot_id, future = self._done.get_nowait()
            except queue.Empty:
                return
            slot = self._slots.get(slot_id)
            if slot is None or slot.gone:
                continue
            error = future.exception()
            if kind == "placed":
                if error is None:
                    slot.ready = True
                    slot.idle_since = slot.placed_at = time.monotonic()
                continue
            # the actor's serve() call ended: normally after "shutdown", or it died
            if error is not None:
                slot.ray_error = str(error)
            trial = slot.trial
            if trial is None:
                self._destroy(slot)
            elif not slot.pid:
                self._free(slot)
                events.append(
                    (
                        "error",
                        trial,
                        "The Ray actor for this trial could not start or connect to the "
                        f"driver.\nRay reported:\n{slot.ray_error or 'no error'}",
                        None,
                    )
                )
                self._destroy(slot)
            elif slot.conn is None:
                self._on_exit(slot, events, final=True)  # its connection ended already
            elif slot.dead_at is None or slot.dead_at > time.monotonic() + 2.0:
                # Its connection ends soon (everything it sent is read first); if not,
                # the node is unreachable: give up on it after 2 s.
                slot.dead_at = time.monotonic() + 2.0

    # -- ending --------------------------------------------------------------------------
    def wakeup(self) -> None:
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"!")
            except (BlockingIOError, OSError):
                pass

    def shutdown(self) -> None:
        if not self._is_setup:
            return
        ray = self._ray
        ends = []
        for slot in list(self._slots.values()):
            if slot.trial is None and slot.conn is not None and not slot.gone:
                self._send(slot, ("shutdown",))
                ends.append(slot.serve_ref)
        if ends:
            try:
                ray.wait(ends, num_returns=len(ends), timeout=2.0)
            except Exception:  # noqa: BLE001
                pass
        for slot in list(self._slots.values()):
            self._destroy(slot)
        for conn in self._unidentified:
            conn.close()
        self._unidentified.clear()
        self._slots.clear()
        self._by_conn.clear()
        self._by_trial.clear()
        self._events.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._local_listener is not None:
            self._local_listener.close()
            self._local_listener = None
            try:
                os.remove(self._local_path)
            except OSError:
                pass
        fds = (self._wake_r, self._wake_w)
        self._wake_r = self._wake_w = None
        for fd in fds:
            if fd is not None:
                os.close(fd)
        if self._marker:
            try:
                os.remove(self._marker[0])
            except OSError:
                pass
            self._marker = None
        self._blobs.clear()
        self._is_setup = False
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False


# -- helpers -------------------------------------------------------------------------------
def _clean(resources: dict) -> dict[str, float]:
    """Ray's resource dict without per-node and per-placement-group entries."""
    return {
        k: float(v)
        for k, v in resources.items()
        if not k.startswith("node:") and "_group_" not in k and k != "object_store_memory"
    }


def _bundles(shape) -> list[dict[str, float]]:
    """The bundles a placement group gets: an empty head bundle is left out."""
    bundles = [b for b in shape.bundles if any(b.values())]
    return bundles or [{"CPU": 0.0}]


def _ray_bundle(bundle: dict[str, float]) -> dict[str, float]:
    out = {k: v for k, v in bundle.items() if v}
    return out or {"CPU": 0.001}


def _fits(free: dict[str, float], bundle: dict[str, float]) -> bool:
    for key, value in bundle.items():
        if value and free.get(key, 0.0) + _EPS < value:
            return False
    return True


def _take(free: dict[str, float], bundle: dict[str, float]) -> None:
    for key, value in bundle.items():
        if value:
            free[key] = free.get(key, 0.0) - value


def _place(view: dict[str, dict[str, float]], bundles: list[dict[str, float]], strategy: str):
    """Simulate placing ``bundles`` on the nodes of ``view``; on success deduct them.

    Returns the chosen node of each bundle, or None when they do not fit.
    """
    nodes = list(view)
    if strategy in ("PACK", "STRICT_PACK"):
        total: dict[str, float] = {}
        for bundle in bundles:
            for key, value in bundle.items():
                total[key] = total.get(key, 0.0) + value
        for node in nodes:
            if _fits(view[node], total):
                _take(view[node], total)
                return [node] * len(bundles)
        if strategy == "STRICT_PACK":
            return None
    trial_view = {node: dict(view[node]) for node in nodes}
    chosen: list[str] = []
    for bundle in bundles:
        candidates = [n for n in nodes if _fits(trial_view[n], bundle)]
        if strategy in ("SPREAD", "STRICT_SPREAD"):
            fresh = [n for n in candidates if n not in chosen]
            if strategy == "STRICT_SPREAD":
                candidates = fresh
            elif fresh:
                candidates = fresh
        if not candidates:
            return None
        node = candidates[0]
        _take(trial_view[node], bundle)
        chosen.append(node)
    for node in nodes:
        view[node] = trial_view[node]
    return chosen
