"""etcd members on loopback, in a directory of their own: for `vtap lab --cluster`, the
cluster tests and the benchmark. Debian's `etcd-server` (3.4); stopped by PID.

Secured as a deployment should be (`tls=True`, the default): clients and peers speak
TLS with certificates of the lab's own CA (`vtap.lab.certs`), etcd requires a client
certificate (`--client-cert-auth`), and etcd's authentication is on, so a certificate's
common name is the user it acts as. The `vtap` user's role may read and write the keys
under `prefix` and nothing else; `root` only sets etcd up. `serve_args()` is what a
controller is started with.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import httpx
from aetcd import rpc

from vtap.lab.certs import LabCA
from vtap.lab.process import free_port

# One apply is one transaction: etcd's defaults (128 operations, 1.5 MiB) would bound it
# at 128 policies; these hold 10,000.
MAX_TXN_OPS = 20000
MAX_REQUEST_BYTES = 32 * 1024 * 1024
USER = "vtap"  # the controllers' etcd user: the common name of their certificate


def prefix_end(prefix: bytes) -> bytes:
    """The end of etcd's key range for every key starting with `prefix`."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdCluster:
    """`size` etcd members on 127.0.0.1 forming one cluster."""

    def __init__(self, size: int = 1, directory: str | Path | None = None, *, tls: bool = True, prefix: str = "/vtap/"):
        if shutil.which("etcd") is None:
            raise RuntimeError("etcd is not installed (Debian package etcd-server; `make test` installs it)")
        self.dir = Path(directory or tempfile.mkdtemp(prefix="vtap-etcd-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.members = [(f"m{i}", free_port(), free_port()) for i in range(size)]
        self.procs: dict[str, subprocess.Popen] = {}
        self.prefix = prefix
        self.ca: LabCA | None = None
        if tls:
            self.ca = LabCA(self.dir / "pki")
            self.ca.issue("member", "etcd", server=True)
            for user in ("root", USER, "stranger"):  # stranger: signed by the CA, but no etcd user
                self.ca.issue(user, user)
        self.scheme = "https" if tls else "http"

    @property
    def url(self) -> str:
        """What `vtap serve --store` takes."""
        return ("etcds://" if self.ca else "etcd://") + ",".join(f"127.0.0.1:{client}" for _, client, _ in self.members)

    def tls_files(self, user: str = USER) -> tuple[str | None, str | None, str | None]:
        """(CA, certificate, key) a client acting as `user` presents."""
        if self.ca is None:
            return None, None, None
        return str(self.ca.ca), str(self.ca.cert(user)), str(self.ca.key(user))

    def serve_args(self) -> tuple[str, ...]:
        ca, cert, key = self.tls_files()
        return ("--store", self.url) + (("--etcd-ca", ca, "--etcd-cert", cert, "--etcd-key", key) if ca else ())

    def start(self) -> EtcdCluster:
        """Start every member and set up its users; on any failure, stop them and re-raise."""
        initial = ",".join(f"{name}={self.scheme}://127.0.0.1:{peer}" for name, _, peer in self.members)
        try:
            for name, _, _ in self.members:
                self.start_member(name, initial)
            deadline = time.monotonic() + 20
            while not all(self.healthy(name) for name, _, _ in self.members):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd did not become healthy; see {self.dir}")
                time.sleep(0.1)
            if self.ca is not None:
                self._enable_auth()
            return self
        except BaseException:
            self.stop(keep_data=True)
            raise

    def _tls_args(self) -> list[str]:
        if self.ca is None:
            return []
        cert, key, ca = str(self.ca.cert("member")), str(self.ca.key("member")), str(self.ca.ca)
        return ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth",
                "--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca, "--peer-client-cert-auth"]

    def start_member(self, name: str, initial: str | None = None) -> None:
        """Start (or restart, on its data dir) one member."""
        _, client, peer = next(m for m in self.members if m[0] == name)
        initial = initial or ",".join(f"{n}={self.scheme}://127.0.0.1:{p}" for n, _, p in self.members)
        client_url, peer_url = f"{self.scheme}://127.0.0.1:{client}", f"{self.scheme}://127.0.0.1:{peer}"
        log = open(self.dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            ["etcd", "--name", name, "--data-dir", str(self.dir / name),
             "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", self.dir.name,
             "--max-txn-ops", str(MAX_TXN_OPS), "--max-request-bytes", str(MAX_REQUEST_BYTES),
             "--heartbeat-interval", "100", "--election-timeout", "1000", "--logger", "zap", "--log-outputs", "stderr",
             *self._tls_args()],
            stdout=log, stderr=log,
        )

    def healthy(self, name: str) -> bool:
        _, client, _ = next(m for m in self.members if m[0] == name)
        ca, cert, key = self.tls_files("root")
        verify: ssl.SSLContext | bool = True
        if ca:
            verify = ssl.create_default_context(cafile=ca)
            verify.load_cert_chain(cert, key)
        try:
            reply = httpx.get(f"{self.scheme}://127.0.0.1:{client}/health", timeout=1, verify=verify)
            return reply.json().get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def channel(self, user: str) -> grpc.Channel:
        """A blocking gRPC channel to the first member, acting as `user`."""
        ca, cert, key = (Path(p).read_bytes() for p in self.tls_files(user))
        return grpc.secure_channel(f"127.0.0.1:{self.members[0][1]}", grpc.ssl_channel_credentials(ca, key, cert))

    def _enable_auth(self) -> None:
        """Users `root` and `vtap`, `vtap` allowed `prefix` only, then authentication on
        (idempotent: a member restarted on its data keeps them)."""
        with self.channel("root") as channel:
            auth = rpc.AuthStub(channel)
            try:
                auth.UserGet(rpc.AuthUserGetRequest(name=USER), timeout=5)
                return  # set up before this member restarted
            except grpc.RpcError as exc:
                if "not found" not in (exc.details() or ""):
                    raise
            for user, role in (("root", "root"), (USER, USER)):
                auth.UserAdd(rpc.AuthUserAddRequest(name=user, password=secrets.token_hex(16)), timeout=5)
                if role != "root":
                    auth.RoleAdd(rpc.AuthRoleAddRequest(name=role), timeout=5)
                auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user=user, role=role), timeout=5)
            key = self.prefix.encode()
            auth.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(
                name=USER, perm=rpc.Permission(permType=rpc.Permission.READWRITE, key=key, range_end=prefix_end(key))),
                timeout=5)
            auth.AuthEnable(rpc.AuthEnableRequest(), timeout=5)

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
