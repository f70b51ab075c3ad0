"""Hosts known by every address they use, whatever they send first (`linear,4`, IPv4 + IPv6).

No pingall here: the controller must find what policies name by itself (ARP and ND
interception, probing). Hosts have 10.0.0.i and fc00::i.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import Lab, create_tap, delete_tap, ip, mac, traffic, wait_tap
from tests.waiting import wait_until
from vtap.lab.net import ipv6_of
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Flow


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(parse_topo("linear,4"), tmp_path_factory.mktemp("addresses"), ipv6=True)
    yield lab
    lab.close()


def host_ips(lab: Lab) -> dict[str, list[str]]:
    return {h["mac"]: h["ips"] for h in lab.ctl.get("/api/v1/hosts")}


def test_a_silent_monitor_and_unseen_hosts_are_found_by_probing(lab):
    # Nothing has sent IPv4 yet: no host is known by its IPv4 address.
    assert not any(ip(i) in ips for i in range(1, 5) for ips in host_ips(lab).values())
    t0 = time.monotonic()
    tap = create_tap(lab, name="probed", src_ip=ip(1), dst_ip=ip(2), ip_proto="udp", monitor_ip=ip(3))
    wait_tap(lab, tap["id"], timeout=5)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, f"active after {elapsed:.2f} s"
    known = host_ips(lab)
    assert ip(3) in known[mac(3)] and ip(1) in known[mac(1)] and ip(2) in known[mac(2)]
    got = traffic(lab, "h1", Flow(mac(1), mac(2), ip(1), ip(2), "udp"), "p1", 20, ["h2", "h3"])
    assert len(got["h2"]) == 20 and got["h3"] == got["h2"]
    delete_tap(lab, tap["id"])


def test_a_host_first_seen_through_ipv6_gets_its_ipv4_from_its_first_arp_reply(lab):
    h4 = lab.net["h4"]
    # h4's first words are IPv6 (a solicitation for h1's address, then an echo).
    assert "rc=0" in h4.cmd(f"ping -6 -c1 -W2 {ipv6_of('h1')}; echo rc=$?")
    t0 = time.monotonic()
    wait_until(lambda: mac(4) in host_ips(lab), 2, interval=0.02, message="h4 not known after its IPv6 ping")
    assert time.monotonic() - t0 < 2
    assert ip(4) not in host_ips(lab)[mac(4)]
    assert any(":" in a for a in host_ips(lab)[mac(4)])
    # h2 asks for h4's IPv4 address; h4 only answers (a unicast ARP reply).
    pinger = lab.net["h2"].popen(["ping", "-c1", "-W2", ip(4)])
    t0 = time.monotonic()
    wait_until(lambda: ip(4) in host_ips(lab)[mac(4)], 2, interval=0.02, message=f"h4 not known by {ip(4)}")
    took = time.monotonic() - t0
    pinger.wait()
    assert took < 1.0
    tap = create_tap(lab, name="v4-after-v6", src_ip=ip(4), dst_ip=ip(1), ip_proto="udp", direction="both", monitor_ip=ip(3))
    wait_tap(lab, tap["id"], timeout=5)
    a = traffic(lab, "h4", Flow(mac(4), mac(1), ip(4), ip(1), "udp"), "b1", 15, ["h1", "h3"])
    b = traffic(lab, "h1", Flow(mac(1), mac(4), ip(1), ip(4), "udp", 80, 40000), "b2", 15, ["h4", "h3"])
    assert len(a["h1"]) == 15 and a["h3"] == a["h1"]
    assert len(b["h4"]) == 15 and b["h3"] == b["h4"]
    delete_tap(lab, tap["id"])


def test_ipv6_policy_copies_exactly_the_matching_ipv6_packets(lab):
    v6 = {i: ipv6_of(f"h{i}") for i in range(1, 5)}
    # Every address named is found: fc00::3 only by the controller's own solicitation.
    tap = create_tap(lab, name="v6", src_ip=v6[1], dst_ip=v6[2], ip_proto="udp", dst_port=5353, monitor_ip=v6[3])
    wait_tap(lab, tap["id"], timeout=5)
    assert v6[3] in host_ips(lab)[mac(3)]
    got = traffic(lab, "h1", Flow(mac(1), mac(2), v6[1], v6[2], "udp", 40000, 5353), "s6", 20, ["h2", "h3"])
    assert len(got["h2"]) == 20 and got["h3"] == got["h2"]
    for tag, f in [("n6a", Flow(mac(1), mac(2), v6[1], v6[2], "udp", 40000, 5354)),
                   ("n6b", Flow(mac(1), mac(2), v6[1], v6[2], "tcp", 40000, 5353)),
                   ("n6c", Flow(mac(1), mac(2), ip(1), ip(2), "udp", 40000, 5353))]:
        got = traffic(lab, "h1", f, tag, 5, ["h2", "h3"])
        assert len(got["h2"]) == 5 and got["h3"] == [], tag
    # Neighbour discovery through the controller: hosts reach each other over IPv6.
    assert "rc=0" in lab.net["h2"].cmd(f"ping -6 -c2 -W2 {v6[4]}; echo rc=$?")
    delete_tap(lab, tap["id"])
