"""A Ray cluster of several nodes on one machine, on loopback addresses (tests, benchmarks).

Each node is a separate ``ray start`` with its own loopback address (Ray replaces
``127.0.0.1`` with the machine's network address, so the nodes use ``127.0.0.2``,
``127.0.0.3``, ...), all under one private temporary directory. Every process of the
cluster is found through that directory or the cluster's address (on its command
line, or as a descendant of such a process) and stopped by process id: other Ray
sessions on the machine are never touched (``ray stop`` would stop them all).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    """A TCP port that is free on every address right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class LoopbackCluster:
    """Start, grow, break and stop a local multi-node Ray cluster.

    Args:
        env: extra environment for every node (``RAY_AUTH_MODE=disabled`` and
            ``RAY_USAGE_STATS_ENABLED=0`` are always set).
        object_store_bytes: object store size of each node (small by default).
        ray_cli: the ``ray`` command to start nodes with (default: the one beside this
            Python). Its environment is the one the nodes' worker processes run in.
    """

    def __init__(
        self,
        env: dict[str, str] | None = None,
        object_store_bytes: int = 100_000_000,
        ray_cli: str | None = None,
    ):
        self.temp_dir = tempfile.mkdtemp(prefix="tkray_", dir="/tmp")  # short: socket paths
        self.env = dict(os.environ)
        self.env.update(
            {
                "RAY_AUTH_MODE": "disabled",
                "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
            }
        )
        self.env.update(env or {})
        self.env.pop("RAY_ADDRESS", None)
        self.object_store_bytes = object_store_bytes
        self.address: str | None = None
        self.nodes: list[str] = []
        self._ray = ray_cli or os.path.join(os.path.dirname(sys.executable), "ray")

    def _start(self, args: list[str], timeout: float) -> None:
        command = [
            self._ray,
            "start",
            *args,
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            f"--object-store-memory={self.object_store_bytes}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        proc = subprocess.run(
            command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` failed:\n{proc.stdout[-4000:]}")

    def start_head(
        self, ip: str = "127.0.0.2", num_cpus: float = 1, resources: dict | None = None,
        timeout: float = 240,
    ) -> str:
        """Start the head node; returns the cluster address ``ip:port``."""
        port = free_port()
        args = [
            "--head",
            f"--node-ip-address={ip}",
            f"--port={port}",
            f"--num-cpus={num_cpus}",
            "--include-dashboard=false",
            f"--dashboard-port={free_port()}",
            # not Ray's default 10001, which another cluster on this machine may hold
            f"--ray-client-server-port={free_port()}",
        ]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        self._start(args, timeout)
        self.address = f"{ip}:{port}"
        self.nodes.append(ip)
        return self.address

    def add_node(
        self, ip: str, num_cpus: float = 1, resources: dict | None = None, timeout: float = 240,
        wait: bool = True,
    ) -> subprocess.Popen | None:
        """Start a worker node at ``ip`` joining the head.

        With ``wait=False`` the ``ray start`` runs in the background and its process is
        returned (the node joins a little later).
        """
        args = [f"--address={self.address}", f"--node-ip-address={ip}", f"--num-cpus={num_cpus}"]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        self.nodes.append(ip)
        if wait:
            self._start(args, timeout)
            return None
        command = [
            self._ray, "start", *args, "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
            f"--object-store-memory={self.object_store_bytes}",
            f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
        ]
        return subprocess.Popen(
            command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    # -- processes -----------------------------------------------------------------------
    def _processes(self) -> dict[int, tuple[int, str]]:
        table: dict[int, tuple[int, str]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            table[int(entry)] = (ppid, cmd)
        return table

    def _tree(self, table: dict[int, tuple[int, str]], roots: set[int]) -> set[int]:
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        found: set[int] = set()
        todo = list(roots)
        while todo:
            pid = todo.pop()
            if pid in found:
                continue
            found.add(pid)
            todo.extend(children.get(pid, ()))
        found.discard(os.getpid())
        return found

    def node_pids(self, ip: str) -> set[int]:
        """The raylet of the node at ``ip`` and every process under it (its workers)."""
        table = self._processes()
        roots = {
            pid
            for pid, (_, cmd) in table.items()
            if self.temp_dir in cmd and "raylet" in cmd.split(" ", 1)[0]
            and (f"--node_ip_address={ip} " in cmd + " " or f"--node-ip-address={ip} " in cmd + " ")
        }
        return self._tree(table, roots)

    def kill_node(self, ip: str) -> int:
        """SIGKILL the node at ``ip`` (its raylet and workers), as a machine crash would.

        Returns how many processes were killed.
        """
        pids = self.node_pids(ip)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if ip in self.nodes:
            self.nodes.remove(ip)
        return len(pids)

    def stop(self) -> None:
        """Kill every process of this cluster (by pid) and remove its directory."""
        # The head's Ray client server names the cluster's address, not its directory, and
        # outlives the `ray start` that started it.
        address = f"--address={self.address} " if self.address else None
        for _ in range(3):
            table = self._processes()
            roots = {
                pid
                for pid, (_, cmd) in table.items()
                if self.temp_dir in cmd or (address is not None and address in cmd + " ")
            }
            pids = self._tree(table, roots)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
