"""Foundation on real OVS, `fattree,4` (20 switches, 16 hosts, looped): forwarding and failover."""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import Lab, ping
from tests.waiting import wait_until
from vtap.lab.topos import parse_topo


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(parse_topo("fattree,4"), tmp_path_factory.mktemp("fattree4"))
    yield lab
    lab.close()


def test_fattree_shape(lab):
    assert len(lab.net.switches) == 20 and len(lab.net.hosts) == 16
    assert len(lab.expected_links()) == 2 * 32


def test_pingall_has_no_loss(lab):
    assert lab.net.pingAll(timeout="1") == 0


def test_discovered_links_equal_the_topology(lab):
    assert lab.discovered_links() == lab.expected_links()


def test_every_host_at_its_true_switch_and_port(lab):
    hosts = {h["mac"]: h for h in lab.ctl.get("/api/v1/hosts")}
    assert set(hosts) == {n.MAC() for n in lab.net.hosts}
    for node in lab.net.hosts:
        h = hosts[node.MAC()]
        assert (int(h["dpid"], 16), h["port"]) == lab.attachment(node.name), node.name


def _next_hop_port(lab, switch: str, mac: str) -> int:
    for line in lab.ovs.ofctl("dump-flows", switch).splitlines():
        if f"dl_dst={mac}" in line and "table=2" in line:
            return int(line.rsplit("output:", 1)[1].split(",")[0])
    raise AssertionError(f"no forwarding rule for {mac} on {switch}")


def test_link_down_moves_the_path_and_traffic_recovers(lab):
    h1, h16 = lab.net["h1"], lab.net["h16"]
    assert ping(h1, h16.IP())
    edge = lab.net["e1"]
    port = _next_hop_port(lab, "e1", h16.MAC())
    intf = next(i for i, p in edge.ports.items() if p == port)
    peer = (intf.link.intf2 if intf.link.intf1 is intf else intf.link.intf1).node
    links_before = lab.discovered_links()

    lab.net.configLinkStatus("e1", peer.name, "down")
    try:
        t0 = time.monotonic()
        # Back-to-back pings (each waits up to 1 s for its reply) for 5 s.
        wait_until(lambda: ping(h1, h16.IP(), timeout=1), 5, interval=0, message="h1 never reached h16 again")
        recovered = time.monotonic() - t0
        assert recovered < 3.0, recovered
        assert _next_hop_port(lab, "e1", h16.MAC()) != port
        assert ping(h16, h1.IP())
        assert len(lab.discovered_links()) == len(links_before) - 2
    finally:
        lab.net.configLinkStatus("e1", peer.name, "up")
    lab.wait_health(switches=20, links=64, timeout=15)
    assert lab.discovered_links() == links_before
    assert lab.net.pingAll(timeout="1") == 0
