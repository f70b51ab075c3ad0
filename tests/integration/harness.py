"""Real parts for integration tests: a private OVS, the controller as its own process, a lab."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from vtap.lab.net import build_net, expected_links, wait_ready
from vtap.lab.ovs import PrivateOVS
from vtap.lab.process import ControllerProcess


class Lab:
    """One private OVS, one controller process and one Mininet topology, shared by a test module."""

    def __init__(self, topo, workdir: Path):
        self.workdir = workdir
        self.ovs = PrivateOVS(workdir / "ovs").start()
        self.ovs.export()
        self.ctl = ControllerProcess(workdir / "state", workdir / "controller.log")
        self.net = None
        try:
            self.ctl.start()
            self.net = build_net(topo, "127.0.0.1", self.ctl.of_port)
            if not wait_ready(self.net, self.ctl.api, timeout=90):
                raise RuntimeError(f"lab not ready; see {workdir / 'controller.log'}")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            if self.net is not None:
                self.net.stop()
        finally:
            if self.ctl.proc and self.ctl.proc.poll() is None:
                self.ctl.stop()
            self.ovs.stop()
            self.ovs.restore_env()

    def expected_links(self) -> set[tuple[int, int, int, int]]:
        return expected_links(self.net)

    def discovered_links(self) -> set[tuple[int, int, int, int]]:
        return {(int(l["src_dpid"], 16), l["src_port"], int(l["dst_dpid"], 16), l["dst_port"]) for l in self.ctl.get("/api/v1/links")}

    def attachment(self, host_name: str) -> tuple[int, int]:
        """The true (dpid, port) a host is wired to."""
        intf = self.net[host_name].defaultIntf()
        link = intf.link
        peer = link.intf2 if link.intf1 is intf else link.intf1
        return int(peer.node.dpid, 16), peer.node.ports[peer]

    def tables(self) -> dict[str, tuple[list[str], list[str]]]:
        """Every switch's flows and groups, without counters, sorted: comparable across time."""
        out = {}
        for sw in self.net.switches:
            flows = self.ovs.ofctl("--no-stats", "dump-flows", sw.name).splitlines()
            groups = self.ovs.ofctl("dump-groups", sw.name).splitlines()[1:]
            out[sw.name] = (sorted(l.strip() for l in flows if "OFPST" not in l), sorted(g.strip() for g in groups))
        return out

    def wait_tables_equal(self, want: dict, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        got = self.tables()
        while got != want and time.monotonic() < deadline:
            time.sleep(0.25)
            got = self.tables()
        return got

    def wait_health(self, *, switches: int, links: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        health = {}
        while time.monotonic() < deadline:
            try:
                health = self.ctl.get("/api/v1/health")
                if health["switches"] == switches and health["switches_in_sync"] == switches and health["links"] == links:
                    return health
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"controller not settled: {health}")


def ping(host, ip: str, count: int = 1, timeout: int = 1) -> bool:
    out = host.cmd(f"ping -c{count} -W{timeout} {ip}; echo rc=$?")
    return out.strip().endswith("rc=0")
