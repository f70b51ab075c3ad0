"""A whole lab in one object: a private OVS, `vtap serve` as its own process, a topology.
With `cluster=N`: an etcd (or `etcd_members` of them) and N `vtap serve` instances on
it, every switch connected to all of them; `ctl` is the first, the one that led first.

Used by the demo, the benchmarks and the integration tests, so that all of them start
and tear down the real parts the same way (bridges deleted before the daemons stop,
every process ended by its PID, even when start-up fails half way).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from vtap.lab.chatter import stop_chatter
from vtap.lab.etcd import EtcdCluster
from vtap.lab.net import build_net, wait_ready
from vtap.lab.ovs import PrivateOVS
from vtap.lab.pki import make_pki
from vtap.lab.process import ControllerProcess, free_port
from vtap.lab.topos import VtapTopo


class LabSession:
    def __init__(self, topo: VtapTopo, workdir: Path, *, ready_timeout: float = 90.0, ipv6: bool = False,
                 of_tls: bool = False, serve_args: tuple[str, ...] = (), cluster: int = 0, etcd_members: int = 1,
                 quiet: bool = False, chatter: bool = False, join: str | None = None, seed: int = 0,
                 dpdk: bool = False, ovsdb: bool = False, ctl_env: dict[str, str] | None = None):
        """`ipv6`, `quiet`, `chatter`, `join`, `seed` and `dpdk`: as in `build_net` (`dpdk`:
        and the OVS is OVS-DPDK, `vtap.lab.dpdk`). `ovsdb`: the OVS serves its database on
        TCP and the controller makes tunnel ports over it (`--tunnels ovsdb`), the remote
        path a compute node's switch takes."""
        self.topo = topo
        self.ipv6 = ipv6
        self.quiet = quiet
        self.chatter = chatter
        self.seed = seed
        self.join = join
        self.workdir = Path(workdir)
        self.ready_timeout = ready_timeout
        self.dpdk = dpdk
        ovsdb_port = free_port() if ovsdb else None
        self.ovs = PrivateOVS(self.workdir / "ovs", dpdk=dpdk, ovsdb_tcp=ovsdb_port)
        self.pki = make_pki(self.workdir / "pki") if of_tls else None
        args = serve_args + (self.pki.serve_args() if self.pki else ())
        if ovsdb_port:
            args += ("--tunnels", "ovsdb", "--ovsdb", f"tcp:127.0.0.1:{ovsdb_port}")
        self.etcd = EtcdCluster(etcd_members, self.workdir / "etcd") if cluster else None
        if cluster:
            self.ctls = [ControllerProcess(self.workdir / f"state-c{i}", self.workdir / f"controller-c{i}.log",
                                           args + self.etcd.serve_args() + ("--member-id", f"c{i}"))
                         for i in range(cluster)]
        else:
            self.ctls = [ControllerProcess(self.workdir / "state", self.workdir / "controller.log", args)]
        for ctl in self.ctls:
            ctl.env = dict(ctl_env or {})
        self.net = None
        self.timings: dict[str, float] = {}

    @property
    def ctl(self) -> ControllerProcess:
        """The controller (in a cluster, the first instance)."""
        return self.ctls[0]

    @ctl.setter
    def ctl(self, replacement: ControllerProcess) -> None:
        # A test may put another process in its place: it is then the one `close` stops.
        self.ctls[0] = replacement

    def start(self) -> LabSession:
        """Start everything; on any failure, stop what was started and re-raise."""
        self.ovs.start()
        self.ovs.export()
        try:
            if self.etcd is not None:
                self.etcd.start()
            self.ctl.start()
            for other in self.ctls[1:]:
                other.start(token=self.ctl.token)
            t0 = time.monotonic()
            self.net = build_net(self.topo, "127.0.0.1", [c.of_port for c in self.ctls], ipv6=self.ipv6, pki=self.pki,
                                 quiet=self.quiet, chatter=self.chatter, join=self.join, seed=self.seed, dpdk=self.dpdk)
            t_built = time.monotonic()
            if not wait_ready(self.net, self.leader().api, timeout=self.ready_timeout):
                raise RuntimeError(f"the controller did not connect every switch and discover the topology in "
                                   f"{self.ready_timeout:g} s; see {self.ctl.log_path}")
            t_ready = time.monotonic()
            self.timings = {"build_s": t_built - t0, "discovered_in_sync_s": t_ready - t_built}
            return self
        except BaseException:
            self.close()
            raise

    def leader(self, timeout: float = 10.0) -> ControllerProcess:
        """The instance that leads now (the only one, without a cluster)."""
        if len(self.ctls) == 1:
            return self.ctl
        deadline = time.monotonic() + timeout
        while True:
            for c in self.ctls:
                if c.proc is None or c.proc.poll() is not None:
                    continue
                try:
                    if c.http.get("/api/v1/cluster", timeout=2).json().get("role") == "leader":
                        return c
                except (httpx.HTTPError, ValueError):
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("no instance of the cluster leads")
            time.sleep(0.1)

    def close(self) -> None:
        try:
            if self.net is not None:
                try:
                    stop_chatter(self.net.chatter)
                finally:
                    self.net.stop()
                    self.net = None
        finally:
            try:
                for c in self.ctls:
                    if c.proc is not None and c.proc.poll() is None:
                        c.stop()
            finally:
                try:
                    if self.etcd is not None:
                        self.etcd.stop()
                finally:
                    self.ovs.stop()
                    self.ovs.restore_env()

    def __enter__(self) -> LabSession:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
