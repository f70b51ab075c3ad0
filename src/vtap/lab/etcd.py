"""etcd members on loopback, in a directory of their own: for `vtap lab --cluster`, the
cluster tests and the benchmark. Debian's `etcd-server` (3.4); stopped by PID."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from vtap.lab.process import free_port

# One apply is one transaction: etcd's defaults (128 operations, 1.5 MiB) would bound it
# at 128 policies; these hold 10,000.
MAX_TXN_OPS = 20000
MAX_REQUEST_BYTES = 32 * 1024 * 1024


class EtcdCluster:
    """`size` etcd members on 127.0.0.1 forming one cluster."""

    def __init__(self, size: int = 1, directory: str | Path | None = None):
        if shutil.which("etcd") is None:
            raise RuntimeError("etcd is not installed (Debian package etcd-server; `make test` installs it)")
        self.dir = Path(directory or tempfile.mkdtemp(prefix="vtap-etcd-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.members = [(f"m{i}", free_port(), free_port()) for i in range(size)]
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """What `vtap serve --store` takes."""
        return "etcd://" + ",".join(f"127.0.0.1:{client}" for _, client, _ in self.members)

    def start(self) -> EtcdCluster:
        initial = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in self.members)
        for name, _, _ in self.members:
            self.start_member(name, initial)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(self.healthy(name) for name, _, _ in self.members):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not become healthy; see {self.dir}")

    def start_member(self, name: str, initial: str | None = None) -> None:
        """Start (or restart, on its data dir) one member."""
        _, client, peer = next(m for m in self.members if m[0] == name)
        initial = initial or ",".join(f"{n}=http://127.0.0.1:{p}" for n, _, p in self.members)
        log = open(self.dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            ["etcd", "--name", name, "--data-dir", str(self.dir / name),
             "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", self.dir.name,
             "--max-txn-ops", str(MAX_TXN_OPS), "--max-request-bytes", str(MAX_REQUEST_BYTES),
             "--heartbeat-interval", "100", "--election-timeout", "1000", "--logger", "zap", "--log-outputs", "stderr"],
            stdout=log, stderr=log,
        )

    def healthy(self, name: str) -> bool:
        _, client, _ = next(m for m in self.members if m[0] == name)
        try:
            return httpx.get(f"http://127.0.0.1:{client}/health", timeout=1).json().get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def stop_member(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self, *, keep_data: bool = False) -> None:
        for name in list(self.procs):
            self.stop_member(name)
        if not keep_data:
            shutil.rmtree(self.dir, ignore_errors=True)
