"""Comes up on any network (issue 23): stock shapes whose every interface talks from the first second.

Linux defaults everywhere (IPv6 on at hosts and switch ports: DAD, router solicitations,
MLD) and every host running the lab's chatter generator (ARP, IPv6 ND, mDNS, foreign
LLDP) before any switch connects. Three shapes with loops — fattree,4, a ring of 8 with
chords, a random 3-regular graph of 12 — three seeds each, the switches connecting all
at once or one by one in a random order with gaps; then a controller restarted under a
tapped stream. Each lab is its own (a shape and a seed), so these tests are few and
sharp: bring-up, the view checked against the wiring, pingall.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.integration.harness import Lab, create_tap, ip, longest_run, mac, wait_tap
from tests.waiting import wait_until
from vtap.lab.convergence import measure
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Capture, Flow, marked, send_from

SHAPES = ("fattree,4", "ring,8", "random,12,{seed}")
CONVERGED_S = 5.0  # the bound: all links in the view this long after the last switch connects
PACKET_INS_PER_SWITCH_S = 10.0  # once converged: LLDP (one per link port a second) and the hosts' ARP/ND


def check_view(lab: Lab) -> None:
    """The view is the wiring: every link both ways, every host at its true port, none at a link port."""
    assert lab.discovered_links() == lab.expected_links()
    link_ports = {(d, p) for d, p, _, _ in lab.expected_links()}
    hosts = {h["mac"]: (int(h["dpid"], 16), h["port"]) for h in lab.ctl.get("/api/v1/hosts")}
    assert not set(hosts.values()) & link_ports, f"hosts at link ports: {hosts}"
    assert hosts == {node.MAC(): lab.attachment(node.name) for node in lab.net.hosts}
    roles = {(int(d["dpid"], 16), p["port_no"]): p["role"] for d in lab.ctl.get("/api/v1/devices") for p in d["ports"]
             if p["port_no"] < 0xFFFFFF00}
    assert {k for k, r in roles.items() if r == "link"} == link_ports
    assert {k for k, r in roles.items() if r == "edge"} == set(hosts.values())


@pytest.mark.parametrize("join", ["together", "random order"])
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("shape", SHAPES)
def test_comes_up_on_a_chatty_network(tmp_path, shape, seed, join):
    topo = parse_topo(shape.format(seed=seed))
    lab = Lab(topo, tmp_path, chatter=True, seed=seed, join=f"random:{seed}" if join == "random order" else None,
              ready_timeout=60)
    try:
        conv = measure(lab, after_s=3.0)
        print(f"{shape.format(seed=seed)} seed {seed} {join}: {conv.as_dict()}")
        assert conv.converged_after_last_connect_s <= CONVERGED_S, conv
        assert conv.packet_ins_per_switch_s_after <= PACKET_INS_PER_SWITCH_S, conv
        check_view(lab)
        assert lab.net.pingAll(timeout="1") == 0
    finally:
        lab.close()


def test_a_restart_under_a_tapped_stream_comes_back_to_the_same_view_and_tables(tmp_path):
    """fattree,4, chatter on: the controller stops and starts again while h1 sends 500
    packets a second to h16, tapped to h9. The switches forward on their rules
    meanwhile; the new controller finds the same view and ends with the same tables."""
    lab = Lab(parse_topo("fattree,4"), tmp_path, chatter=True, seed=7)
    try:
        tap = create_tap(lab, name="restart", src_ip=ip(1), dst_ip=ip(16), ip_proto="udp", monitor_ip=ip(9))
        wait_tap(lab, tap["id"])
        assert lab.net.pingAll(timeout="1") == 0
        view = (lab.discovered_links(), {h["mac"]: (h["dpid"], h["port"]) for h in lab.ctl.get("/api/v1/hosts")})
        before = lab.tables()
        caps = {n: Capture(lab.net[n], lab.workdir / f"restart-{n}.pcap").start() for n in ("h16", "h9")}
        sender = threading.Thread(target=send_from, args=(lab.net["h1"], Flow(mac(1), mac(16), ip(1), ip(16), "udp"), "r", 3000),
                                  kwargs={"interval": 0.002})
        sender.start()
        time.sleep(1.5)
        assert lab.ctl.stop() == 0
        lab.ctl.start()
        sender.join()
        got = {n: [f for _, f in c.stop() if f[6:12] == bytes.fromhex(mac(1).replace(":", ""))
                   and (marked(f) or "").startswith("r:")] for n, c in caps.items()}
        lab.wait_health(switches=20, links=64, timeout=30)
        wait_until(lambda: lab.ctl.get("/api/v1/health")["ports_unknown"] == 0, 10)
        assert lab.wait_tables_equal(before, timeout=15) == before
        assert (lab.discovered_links(), {h["mac"]: (h["dpid"], h["port"]) for h in lab.ctl.get("/api/v1/hosts")}) == view
        # The switches forwarded and copied on their rules throughout. A forwarding outage
        # (rules gone while the controller was away or came back) would lose hundreds of
        # packets in a row; a busy 2-core host may drop a few at a veth. So: every packet
        # but a few scattered ones, none twice, and every original that arrived copied.
        seq = {n: [int(marked(f).split(":")[1]) for f in frames] for n, frames in got.items()}
        missing = sorted(set(range(3000)) - set(seq["h16"]))
        assert len(missing) <= 30 and longest_run(missing) <= 25, missing
        assert len(set(seq["h16"])) == len(seq["h16"]) and len(set(seq["h9"])) == len(seq["h9"])
        assert set(seq["h16"]) <= set(seq["h9"]), sorted(set(seq["h16"]) - set(seq["h9"]))
        assert lab.net.pingAll(timeout="1") == 0
    finally:
        lab.close()
