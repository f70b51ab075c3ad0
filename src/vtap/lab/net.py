"""Build a Mininet network on the private OVS, pointed at a vtap controller.

Switches are userspace Open vSwitch bridges (datapath_type=netdev: no kernel module
needed), OpenFlow 1.3 only, fail-mode secure (no forwarding of their own without the
controller).
"""

from __future__ import annotations

import subprocess
import time
from functools import partial

import httpx
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import OVSSwitch, RemoteController

from vtap.lab.pki import Pki
from vtap.lab.topos import VtapTopo


def ipv6_of(host_name: str) -> str:
    """The global IPv6 address a lab host gets with `ipv6=True`: h7 -> fc00::7."""
    return f"fc00::{int(host_name[1:]):x}"


def build_net(topo: VtapTopo, controller_host: str, controller_port: int | list[int], *, ipv6: bool = False,
              pki: Pki | None = None) -> Mininet:
    """With `ipv6`, hosts keep IPv6 on and get fc00::i/64 besides 10.0.0.i/8. With `pki`,
    the switches speak OpenFlow over TLS (`ssl:` targets) with the PKI's switch certificate.
    Several ports: every switch connects to every one of them (a cluster's instances)."""
    setLogLevel("warning")
    switch = partial(OVSSwitch, datapath="user", protocols="OpenFlow13", failMode="secure")
    net = Mininet(topo=topo, switch=switch, controller=None, autoSetMacs=False, build=False, waitConnected=False)
    if pki is not None:
        subprocess.run(["ovs-vsctl", "set-ssl", str(pki.switch_key), str(pki.switch_cert), str(pki.controller_ca)], check=True)
    ports = controller_port if isinstance(controller_port, list) else [controller_port]
    for i, port in enumerate(ports):
        net.addController(RemoteController(f"c{i}", ip=controller_host, port=port, protocol="ssl" if pki else "tcp"))
    net.build()
    for host in net.hosts:
        if ipv6:
            # No duplicate address detection: the address is usable at once.
            host.cmd(f"ip -6 addr add {ipv6_of(host.name)}/64 dev {host.defaultIntf()} nodad")
        else:
            # Keep the lab to IPv4 unless asked: IPv6 autoconfiguration chatter makes
            # packet counts in tests noisy.
            host.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        # The userspace datapath does not complete checksums offloaded by veth.
        host.cmd(f"ethtool -K {host.defaultIntf()} tx off rx off >/dev/null 2>&1")
    for sw in net.switches:
        for intf in sw.intfNames():
            if intf != "lo":
                sw.cmd(f"sysctl -qw net.ipv6.conf.{intf}.disable_ipv6=1")
    net.start()
    # A switch that lost its controller retries every second, not after up to 8 s (OVS's
    # default backoff): what a restart or a cluster failover waits for (README, Deploying).
    uuids = subprocess.run(["ovs-vsctl", "--bare", "--columns=_uuid", "list", "Controller"], check=True,
                           capture_output=True, text=True).stdout.split()
    if uuids:
        subprocess.run(["ovs-vsctl"] + [a for u in uuids for a in ("--", "set", "Controller", u, "max_backoff=1000")], check=True)
    return net


def expected_links(net: Mininet) -> set[tuple[int, int, int, int]]:
    """Inter-switch links of the built network, one per direction, as (dpid, port, dpid, port)."""
    out = set()
    for link in net.links:
        a, b = link.intf1, link.intf2
        if isinstance(a.node, OVSSwitch) and isinstance(b.node, OVSSwitch):
            da, db = int(a.node.dpid, 16), int(b.node.dpid, 16)
            pa, pb = a.node.ports[a], b.node.ports[b]
            out.add((da, pa, db, pb))
            out.add((db, pb, da, pa))
    return out


def wait_ready(net: Mininet, api: str | None, timeout: float = 60.0) -> bool:
    """Wait until every switch is connected and, if the controller's API is reachable,
    until it has discovered every inter-switch link and brought every switch in sync."""
    deadline = time.monotonic() + timeout
    while not all(s.connected() for s in net.switches):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    if api is None:
        return True
    want = len(expected_links(net))
    n_switches = len(net.switches)
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{api}/api/v1/health", timeout=2).json()
            if health["links"] >= want and health["switches_in_sync"] >= n_switches:
                return True
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    return False
