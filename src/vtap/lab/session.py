"""A whole lab in one object: a private OVS, `vtap serve` as its own process, a topology.

Used by the demo, the benchmarks and the integration tests, so that all of them start
and tear down the real parts the same way (bridges deleted before the daemons stop,
every process ended by its PID, even when start-up fails half way).
"""

from __future__ import annotations

import time
from pathlib import Path

from vtap.lab.net import build_net, wait_ready
from vtap.lab.ovs import PrivateOVS
from vtap.lab.pki import make_pki
from vtap.lab.process import ControllerProcess
from vtap.lab.topos import VtapTopo


class LabSession:
    def __init__(self, topo: VtapTopo, workdir: Path, *, ready_timeout: float = 90.0, ipv6: bool = False,
                 of_tls: bool = False, serve_args: tuple[str, ...] = ()):
        self.topo = topo
        self.ipv6 = ipv6
        self.workdir = Path(workdir)
        self.ready_timeout = ready_timeout
        self.ovs = PrivateOVS(self.workdir / "ovs")
        self.pki = make_pki(self.workdir / "pki") if of_tls else None
        args = serve_args + (self.pki.serve_args() if self.pki else ())
        self.ctl = ControllerProcess(self.workdir / "state", self.workdir / "controller.log", args)
        self.net = None
        self.timings: dict[str, float] = {}

    def start(self) -> LabSession:
        """Start everything; on any failure, stop what was started and re-raise."""
        self.ovs.start()
        self.ovs.export()
        try:
            self.ctl.start()
            t0 = time.monotonic()
            self.net = build_net(self.topo, "127.0.0.1", self.ctl.of_port, ipv6=self.ipv6, pki=self.pki)
            t_built = time.monotonic()
            if not wait_ready(self.net, None, timeout=self.ready_timeout):
                raise RuntimeError("switches did not connect to the controller")
            t_connected = time.monotonic()
            if not wait_ready(self.net, self.ctl.api, timeout=self.ready_timeout):
                raise RuntimeError(f"the controller did not discover the topology; see {self.ctl.log_path}")
            t_ready = time.monotonic()
            self.timings = {
                "build_s": t_built - t0,
                "connected_s": t_connected - t_built,
                "discovered_in_sync_s": t_ready - t_built,
            }
            return self
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            if self.net is not None:
                self.net.stop()
                self.net = None
        finally:
            try:
                if self.ctl.proc is not None and self.ctl.proc.poll() is None:
                    self.ctl.stop()
            finally:
                self.ovs.stop()
                self.ovs.restore_env()

    def __enter__(self) -> LabSession:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
