"""Build a Mininet network on the private OVS, pointed at a vtap controller.

Switches are userspace Open vSwitch bridges (datapath_type=netdev: no kernel module
needed), OpenFlow 1.3 only, fail-mode secure (no forwarding of their own without the
controller).
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import time
from functools import partial

import httpx
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import OVSSwitch

from vtap.lab.chatter import start_chatter, stop_chatter
from vtap.lab.dpdk import make_ports_dpdk
from vtap.lab.pki import Pki
from vtap.lab.topos import VtapTopo

log = logging.getLogger(__name__)


def ipv6_of(host_name: str) -> str:
    """The global IPv6 address a lab host gets with `ipv6=True`: h7 -> fc00::7."""
    return f"fc00::{int(host_name[1:]):x}"


def _prepare_interfaces(net: Mininet, *, ipv6: bool, quiet: bool) -> None:
    """Hosts' addresses and offloads; with `quiet`, IPv6 off (see `build_net`)."""
    for host in net.hosts:
        if ipv6:
            # No duplicate address detection: the address is usable at once.
            host.cmd(f"ip -6 addr add {ipv6_of(host.name)}/64 dev {host.defaultIntf()} nodad")
        elif quiet:
            host.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        # The userspace datapath does not complete checksums offloaded by veth.
        host.cmd(f"ethtool -K {host.defaultIntf()} tx off rx off >/dev/null 2>&1")
    if quiet:
        for sw in net.switches:
            for intf in sw.intfNames():
                if intf != "lo":
                    sw.cmd(f"sysctl -qw net.ipv6.conf.{intf}.disable_ipv6=1")


def build_net(topo: VtapTopo, controller_host: str, controller_port: int | list[int], *, ipv6: bool = False,
              pki: Pki | None = None, quiet: bool = False, chatter: bool = False, join: str | None = None,
              seed: int = 0, dpdk: bool = False) -> Mininet:
    """Hosts and switch ports keep Linux's defaults: IPv6 on, with link-local addresses,
    duplicate address detection, router solicitations and MLD. With `ipv6`, hosts also get
    fc00::i/64 besides 10.0.0.i/8. With `pki`, the switches speak OpenFlow over TLS (`ssl:`
    targets) with the PKI's switch certificate. Several ports: every switch connects to
    every one of them (a cluster's instances).

    `quiet` turns IPv6 off on switch ports and (unless `ipv6`) on hosts; its only use is
    tests that count frames exactly, which the kernel's own IPv6 frames would upset.
    `chatter` starts `vtap.lab.chatter` in every host (its timing seeded by `seed`) before any switch has a controller
    (stopped by the caller: `stop_chatter(net.chatter)` before `net.stop()`).
    `join="random:SEED"` gives the switches their controllers one by one, in an order and
    with gaps (0.1-0.8 s) that the seed decides, as switches of a real network come up;
    by default all at once. Either way `net.join_order` lists the switches in join order.
    `dpdk`: the OVS is OVS-DPDK, and every switch port becomes a DPDK port on its veth
    (`vtap.lab.dpdk`) before any switch has a controller.
    """
    setLogLevel("warning")
    rng = _join_rng(join)
    switch = partial(OVSSwitch, datapath="user", protocols="OpenFlow13", failMode="secure")
    net = Mininet(topo=topo, switch=switch, controller=None, autoSetMacs=False, build=False, waitConnected=False)
    _clear_stale_interfaces(topo)
    if pki is not None:
        subprocess.run(["ovs-vsctl", "set-ssl", str(pki.switch_key), str(pki.switch_cert), str(pki.controller_ca)], check=True)
    ports = controller_port if isinstance(controller_port, list) else [controller_port]
    targets = [f"{'ssl' if pki else 'tcp'}:{controller_host}:{port}" for port in ports]
    net.build()
    net.chatter = []
    try:
        _prepare_interfaces(net, ipv6=ipv6, quiet=quiet)
        if chatter:
            for i, host in enumerate(net.hosts):
                peers = [other.IP() for other in net.hosts if other is not host]
                net.chatter.append(start_chatter(host, peers, seed=seed * 1000 + i))
        # The bridges start without a controller (fail-secure: they forward nothing), and
        # get their targets through ovs-vsctl: no Mininet controller node, whose shell
        # only held an address and a port.
        net.start()
        if dpdk:
            make_ports_dpdk(net, lambda *a: subprocess.run(["ovs-vsctl", *a], check=True, capture_output=True,
                                                           text=True).stdout)
        order = rng.sample(net.switches, len(net.switches)) if rng is not None else net.switches
        net.controller_targets = targets
        net.join_order = attach(order, targets, rng)
    except BaseException:
        stop_chatter(net.chatter)
        net.stop()
        raise
    return net


def _clear_stale_interfaces(topo: VtapTopo) -> None:
    """Delete switch interfaces left by a lab whose process was killed before it could stop
    its network. A host's veth dies with the host's namespace, but a link between two
    switches has both ends in the root namespace and outlives its lab; Mininet, building
    fast, does not delete before it creates, and would fail on "File exists"."""
    present = set(os.listdir("/sys/class/net"))
    stale = sorted(name for sw in topo.switches() for port in topo.ports.get(sw, {})
                   if (name := f"{sw}-eth{port}") in present)
    for name in stale:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    if stale:
        log.warning("deleted %d interfaces left by an earlier lab: %s", len(stale), " ".join(stale))


def _join_rng(join: str | None) -> random.Random | None:
    if join is None:
        return None
    kind, _, seed = join.partition(":")
    if kind != "random" or not seed.lstrip("-").isdigit():
        raise ValueError(f"join {join!r}: use random:SEED (SEED an integer)")
    return random.Random(int(seed))


def attach(switches: list[OVSSwitch], targets: list[str], rng: random.Random | None) -> list[str]:
    """Give each switch its controllers, all in one transaction, or (with `rng`) one
    switch at a time with random gaps; the switches' names in that order. A switch that
    lost its controller retries every second (`max_backoff`), not after up to 8 s (OVS's
    default backoff): what a restart or a cluster failover waits for (README, Deploying)."""
    def args(sw: OVSSwitch) -> list[str]:
        create = [a for i, target in enumerate(targets) for a in
                  ("--", f"--id=@{sw.name}c{i}", "create", "Controller", f'target="{target}"', "max_backoff=1000")]
        ids = ",".join(f"@{sw.name}c{i}" for i in range(len(targets)))
        return [*create, "--", "set", "bridge", sw.name, f"controller=[{ids}]"]

    if rng is None:
        subprocess.run(["ovs-vsctl", *(a for sw in switches for a in args(sw))], check=True, stdout=subprocess.DEVNULL)
        return [sw.name for sw in switches]
    for n, sw in enumerate(switches):
        if n:
            time.sleep(rng.uniform(0.1, 0.8))
        subprocess.run(["ovs-vsctl", *args(sw)], check=True, stdout=subprocess.DEVNULL)  # not the new rows' UUIDs
    return [sw.name for sw in switches]


def attachment(host) -> tuple[int, int]:
    """The true (dpid, port) of the switch port a Mininet host is wired to."""
    link = host.defaultIntf().link
    peer = link.intf2 if link.intf1.node is host else link.intf1
    return int(peer.node.dpid, 16), peer.node.ports[peer]


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
    """Without an API: wait until every switch says it is connected (OVSDB reports that
    every few seconds only). With the controller's API: until it has every switch
    connected, every inter-switch link discovered, every port's role known and every
    switch in sync (polled every 0.1 s: when this returns, the lab has just converged)."""
    deadline = time.monotonic() + timeout
    if api is None:
        while not all(s.connected() for s in net.switches):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True
    want = len(expected_links(net))
    n_switches = len(net.switches)
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{api}/api/v1/health", timeout=2).json()
            if (health["switches"] >= n_switches and health["links"] >= want and health["switches_in_sync"] >= n_switches
                    and not health["ports_unknown"]):
                return True
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    return False
