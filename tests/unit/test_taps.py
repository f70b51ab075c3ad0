"""TAP compilation on a fake fabric: exactly one copy per monitor, originals untouched."""

from __future__ import annotations

import itertools

import pytest

from tests.unit.fabric import Fabric, view_from_topo
from vtap.compile.forwarding import compile_forwarding
from vtap.compile.network import compile_network
from vtap.compile.pipeline import TABLE_TAP
from vtap.compile.taps import compile_taps
from vtap.model.state import PolicyState
from vtap.lab.topos import parse_topo
from vtap.model.policy import Tap, TapSpec


def mac(i: int) -> str:
    return f"00:00:00:00:00:{i:02x}"


def ip(i: int) -> str:
    return f"10.0.0.{i}"


def tap(tap_id: int, **fields) -> Tap:
    fields.setdefault("name", f"t{tap_id}")
    return Tap(id=tap_id, spec=TapSpec(**fields))


def tcp(src: int, dst: int, sport: int = 40000, dport: int = 80, vlan: int | None = None) -> dict:
    pkt = {"eth_src": mac(src), "eth_dst": mac(dst), "eth_type": 0x0800, "ipv4_src": ip(src), "ipv4_dst": ip(dst),
           "ip_proto": 6, "tcp_src": sport, "tcp_dst": dport, "payload": f"{src}->{dst}:{dport}"}
    if vlan is not None:
        pkt["vlans"] = [vlan]
    return pkt


def udp(src: int, dst: int, dport: int = 53, vlan: int | None = None) -> dict:
    pkt = {"eth_src": mac(src), "eth_dst": mac(dst), "eth_type": 0x0800, "ipv4_src": ip(src), "ipv4_dst": ip(dst),
           "ip_proto": 17, "udp_src": 5000, "udp_dst": dport}
    if vlan is not None:
        pkt["vlans"] = [vlan]
    return pkt


def fabric(spec: str, taps: list[Tap]) -> Fabric:
    view = view_from_topo(parse_topo(spec))
    desired, _ = compile_network(view, taps)
    return Fabric(view, desired)


def send(fab: Fabric, src: int, pkt: dict):
    h = fab.view.hosts[mac(src)]
    return fab.inject(h.dpid, h.port, pkt)


def at(fab: Fabric, host: int, trace) -> list[dict]:
    h = fab.view.hosts[mac(host)]
    return [f for d, p, f in trace.frames if (d, p) == (h.dpid, h.port)]


def clean(frame: dict) -> dict:
    return {k: v for k, v in frame.items() if not (k == "vlans" and not v)}


@pytest.mark.parametrize("transport", ["vlan", "rewrite"])
@pytest.mark.parametrize("monitor", [2, 3, 9])  # same edge switch, same pod, other pod
def test_matching_packet_one_copy_original_untouched(transport, monitor):
    fab = fabric("fattree,4", [tap(1, src_ip=ip(1), dst_ip=ip(16), ip_proto="tcp", dst_port=80, monitor_ip=ip(monitor),
                                   transport=transport, src_mac=mac(1), dst_mac=mac(16))])
    pkt = tcp(1, 16)
    trace = send(fab, 1, pkt)
    assert [clean(f) for f in at(fab, 16, trace)] == [pkt]
    assert [clean(f) for f in at(fab, monitor, trace)] == [pkt]
    assert len(trace.delivered) == 2


@pytest.mark.parametrize("pkt", [tcp(1, 16, dport=81), udp(1, 16, dport=80), tcp(16, 1, sport=80, dport=40000), tcp(2, 16)])
def test_non_matching_packets_are_not_copied(pkt):
    fab = fabric("fattree,4", [tap(1, src_ip=ip(1), dst_ip=ip(16), ip_proto="tcp", dst_port=80, monitor_ip=ip(9))])
    src = int(pkt["eth_src"][-2:], 16)
    trace = send(fab, src, pkt)
    assert at(fab, 9, trace) == []
    assert len(trace.delivered) == 1


def test_both_directions_one_copy_each():
    fab = fabric("fattree,4", [tap(1, src_ip=ip(1), dst_ip=ip(16), ip_proto="tcp", dst_port=80, direction="both", monitor_ip=ip(9))])
    assert len(at(fab, 9, send(fab, 1, tcp(1, 16)))) == 1
    assert len(at(fab, 9, send(fab, 16, tcp(16, 1, sport=80, dport=40000)))) == 1


def test_reverse_direction_only():
    fab = fabric("fattree,4", [tap(1, src_ip=ip(1), dst_ip=ip(16), ip_proto="tcp", dst_port=80, direction="reverse", monitor_ip=ip(9))])
    assert at(fab, 9, send(fab, 1, tcp(1, 16))) == []
    assert len(at(fab, 9, send(fab, 16, tcp(16, 1, sport=80, dport=40000)))) == 1


def test_same_flow_two_monitors_each_get_a_copy():
    fab = fabric("fattree,4", [tap(1, src_ip=ip(1), dst_ip=ip(16), monitor_ip=ip(9)),
                               tap(2, src_ip=ip(1), dst_ip=ip(16), monitor_ip=ip(5))])
    trace = send(fab, 1, tcp(1, 16))
    assert len(at(fab, 9, trace)) == 1 and len(at(fab, 5, trace)) == 1 and len(at(fab, 16, trace)) == 1


def test_wide_and_narrow_policies_overlap():
    wide = tap(1, dst_ip="10.0.0.0/28", monitor_ip=ip(9))
    narrow = tap(2, src_ip=ip(1), dst_ip=ip(16), ip_proto="tcp", dst_port=80, monitor_ip=ip(5))
    same_monitor = tap(3, src_ip=ip(1), ip_proto="tcp", monitor_ip=ip(9))
    fab = fabric("fattree,4", [wide, narrow, same_monitor])
    trace = send(fab, 1, tcp(1, 16))  # in all three: one copy at 9 (twice named), one at 5
    assert len(at(fab, 9, trace)) == 1 and len(at(fab, 5, trace)) == 1
    trace = send(fab, 1, tcp(1, 16, dport=22))  # wide and same_monitor only
    assert len(at(fab, 9, trace)) == 1 and at(fab, 5, trace) == []
    trace = send(fab, 3, udp(3, 14))  # wide only
    assert len(at(fab, 9, trace)) == 1 and at(fab, 5, trace) == []


def test_partially_overlapping_policies_get_their_intersection():
    a = tap(1, src_ip=ip(1), monitor_ip=ip(9))
    b = tap(2, dst_ip=ip(16), monitor_ip=ip(5))
    fab = fabric("fattree,4", [a, b])
    trace = send(fab, 1, tcp(1, 16))
    assert len(at(fab, 9, trace)) == 1 and len(at(fab, 5, trace)) == 1
    trace = send(fab, 1, tcp(1, 15))
    assert len(at(fab, 9, trace)) == 1 and at(fab, 5, trace) == []
    trace = send(fab, 2, tcp(2, 16))
    assert at(fab, 9, trace) == [] and len(at(fab, 5, trace)) == 1


def test_vlan_filter_and_seed_tap2():
    fab = fabric("fattree,4", [tap(1, src_mac=mac(1), src_ip=ip(1), ip_proto="udp", vlan_id=100, monitor_mac=mac(4), monitor_ip=ip(4))])
    pkt = udp(1, 16, vlan=100)
    trace = send(fab, 1, pkt)
    assert [clean(f) for f in at(fab, 4, trace)] == [pkt]
    assert at(fab, 4, send(fab, 1, udp(1, 16, vlan=200))) == []
    assert at(fab, 4, send(fab, 1, udp(1, 16))) == []


def test_every_pair_copied_exactly_once_by_a_wide_policy():
    fab = fabric("fattree,4", [tap(1, dst_ip="10.0.0.0/8", monitor_ip=ip(9), direction="both")])
    for a, b in itertools.permutations([1, 4, 8, 12, 16], 2):
        trace = send(fab, a, tcp(a, b))
        assert len(at(fab, 9, trace)) == 1, (a, b)
        assert len(at(fab, b, trace)) == 1


def test_rewrite_is_ambiguous_for_real_traffic_to_the_monitor():
    """The case the seed's transport cannot tell apart: h1 talks to the monitor h9 itself
    with the tapped port; the recovery rule takes it for a copy and rewrites it."""
    spec = dict(src_ip=ip(1), src_mac=mac(1), dst_ip=ip(16), dst_mac=mac(16), ip_proto="tcp", dst_port=80, monitor_ip=ip(9))
    real = tcp(1, 9)
    vlan = fabric("fattree,4", [tap(1, **spec)])
    assert [clean(f) for f in at(vlan, 9, send(vlan, 1, real))] == [real]
    rewrite = fabric("fattree,4", [tap(1, transport="rewrite", **spec)])
    got = [clean(f) for f in at(rewrite, 9, send(rewrite, 1, real))]
    assert got != [real] and got[0]["ipv4_dst"] == ip(16)  # the real packet was corrupted


def test_hosts_frames_with_reserved_vlan_ids_are_dropped():
    fab = fabric("fattree,4", [tap(1, src_ip=ip(1), monitor_ip=ip(9))])
    trace = send(fab, 2, tcp(2, 16, vlan=3968))
    assert trace.delivered == []


def test_pending_until_the_monitor_is_known():
    view = view_from_topo(parse_topo("linear,3"))
    comp = compile_taps(view, [tap(1, src_ip=ip(1), monitor_ip="10.0.0.99"), tap(2, src_mac=mac(77), monitor_ip=ip(3))])
    assert comp.states[1].state == PolicyState.PENDING and comp.states[2].state == PolicyState.PENDING
    assert comp.rules == {}


def test_deterministic_and_removal_leaves_nothing():
    taps = [tap(1, src_ip=ip(1), monitor_ip=ip(9)), tap(2, dst_ip="10.0.0.0/28", monitor_ip=ip(5), transport="rewrite")]
    view = view_from_topo(parse_topo("fattree,4"))
    a, ca = compile_network(view, taps)
    b, _ = compile_network(view_from_topo(parse_topo("fattree,4")), list(reversed(taps)))
    assert a == b
    assert ca.states[1].state == PolicyState.COMPILED
    none, _ = compile_network(view, [])
    base = compile_forwarding(view)
    assert all(r.groups == base[d].groups and not any(f.table == TABLE_TAP and f.priority > 0 for f in r.flows)
               for d, r in none.items())  # only base forwarding's groups
    disabled, _ = compile_network(view, [Tap(id=1, spec=taps[0].spec.model_copy(update={"enabled": False}))])
    assert disabled == none


def test_rules_of_a_policy():
    view = view_from_topo(parse_topo("fattree,4"))
    comp = compile_taps(view, [tap(1, src_ip=ip(1), monitor_ip=ip(9))])
    mine = comp.rules_of(1)
    assert view.hosts[mac(1)].dpid in mine
    assert any(r.groups for r in mine.values())


def test_degraded_when_the_source_switch_is_gone_or_the_monitor_unreachable():
    from vtap.model.view import NetworkView

    view = view_from_topo(parse_topo("linear,3"))
    no_s1 = NetworkView({d: v for d, v in view.devices.items() if d != 1}, frozenset(l for l in view.links if 1 not in (l.src_dpid, l.dst_dpid)), view.hosts)
    comp = compile_taps(no_s1, [tap(1, src_mac=mac(1), monitor_ip=ip(3))])
    assert comp.states[1].state == PolicyState.DEGRADED
    cut = view_from_topo(parse_topo("linear,3"), down={(2, 3)})  # s2-s3 down: h3 unreachable from s1
    comp = compile_taps(cut, [tap(1, src_mac=mac(1), monitor_ip=ip(3))])
    assert comp.states[1].state == PolicyState.DEGRADED and "no path" in comp.states[1].reason


def test_the_policy_follows_a_host_that_moves():
    from dataclasses import replace

    from vtap.model.view import NetworkView

    view = view_from_topo(parse_topo("fattree,4"))
    taps = [tap(1, src_mac=mac(1), dst_ip=ip(16), monitor_ip=ip(9))]
    before = Fabric(view, compile_network(view, taps)[0])
    assert len(at(before, 9, send(before, 1, tcp(1, 16)))) == 1
    # h1 re-attaches at h6's edge switch, on a free port.
    h6 = view.hosts[mac(6)]
    moved_host = replace(view.hosts[mac(1)], dpid=h6.dpid, port=9)
    device = view.devices[h6.dpid]
    from vtap.model.network import Port

    devices = dict(view.devices)
    devices[h6.dpid] = replace(device, ports=device.ports + (Port(9, "x-eth9", "02:00:00:00:00:99", True),))
    moved = NetworkView(devices, view.links, {**view.hosts, mac(1): moved_host})
    after = Fabric(moved, compile_network(moved, taps)[0])
    trace = send(after, 1, tcp(1, 16))
    assert len(at(after, 9, trace)) == 1 and len(at(after, 16, trace)) == 1
    tap_switches = {d for d, r in compile_taps(moved, taps).rules_of(1).items() if any(f.table == TABLE_TAP for f in r.flows)}
    assert tap_switches == {h6.dpid}


def test_rules_of_a_rewrite_policy_hold_no_copy_vlan_rules():
    view = view_from_topo(parse_topo("fattree,4"))
    comp = compile_taps(view, [tap(1, src_ip=ip(1), dst_ip=ip(16), dst_mac=mac(16), monitor_ip=ip(9), transport="rewrite"),
                               tap(2, src_ip=ip(2), monitor_ip=ip(5))])
    mine = comp.rules_of(1)
    assert mine and not any(dict(f.match).get("vlan_vid") for r in mine.values() for f in r.flows)


def test_rewrite_recovery_rules_that_meet_at_the_monitor_are_unambiguous():
    """Found by the strict fake switch: recovery matches lose the tap point's in_port and
    take the monitor's address, so they can coincide (one policy, both directions) or
    overlap at one priority (two policies). Closed under intersection, each region
    restores only what every recovery containing it agrees on."""
    view = view_from_topo(parse_topo("linear,4"))
    both = tap(1, dst_mac=mac(3), direction="both", transport="rewrite", monitor_ip=ip(4))
    desired, _ = compile_network(view, [both])
    fab = Fabric(view, desired)  # strict: no two flows with one key
    pkt = udp(3, 1)  # the reverse direction pins no destination: the copy keeps the monitor's MAC
    trace = send(fab, 3, pkt)
    assert [clean(f) for f in at(fab, 1, trace)] == [pkt]
    assert [clean(f) for f in at(fab, 4, trace)] == [{**pkt, "eth_dst": mac(4)}]

    two = [tap(1, src_mac=mac(1), transport="rewrite", monitor_ip=ip(4)),
           tap(2, dst_ip=ip(3), transport="rewrite", monitor_ip=ip(4))]
    desired, _ = compile_network(view, two)
    fab = Fabric(view, desired)
    real = udp(1, 4)  # h1's own traffic to the monitor (and its copy) meet both recoveries: one rule wins, by priority
    assert [clean(f) for f in at(fab, 4, send(fab, 1, real))] == [real, real]
    copied = udp(1, 3)  # both policies: one copy (one monitor), its destination never lost
    trace = send(fab, 1, copied)
    assert [clean(f) for f in at(fab, 3, trace)] == [copied]
    assert [clean(f)["ipv4_dst"] for f in at(fab, 4, trace)] == [ip(3)]


@pytest.mark.parametrize("transport", ["vlan", "rewrite"])
def test_copies_fail_over_with_the_originals_before_the_controller_knows(transport):
    """The first link of the copy path (and the originals' path) goes down; the rules stay
    as compiled: the switch's fast-failover groups carry both over the alternate, each
    exactly once."""
    view = view_from_topo(parse_topo("fattree,4"))
    policy = tap(1, src_ip=ip(1), dst_ip=ip(16), src_mac=mac(1), dst_mac=mac(16), monitor_ip=ip(9), transport=transport)
    fab = Fabric(view, compile_network(view, [policy])[0])
    h1, h9, h16 = (view.hosts[mac(i)] for i in (1, 9, 16))
    path = view.path(h1.dpid, h9.dpid)
    assert view.path(h1.dpid, h16.dpid)[:2] == path[:2]  # one link on both paths
    a, b = path[:2]
    fab.down = {(a, view.port_toward(a, b)), (b, view.port_toward(b, a))}
    pkt = tcp(1, 16)
    trace = fab.inject(h1.dpid, h1.port, pkt)
    assert [clean(f) for f in at(fab, 16, trace)] == [pkt]
    assert [clean(f) for f in at(fab, 9, trace)] == [pkt]
    assert len(trace.delivered) == 2


def test_a_monitor_keeps_its_copy_vlan_when_others_come_and_go():
    """Copy VLAN ids by a stable hash of the monitor's MAC: the monitors already tagged
    keep their ids when one with a lower MAC is added or goes (numbered in MAC order, they
    shifted, and copies in flight during the switches' update reached another monitor)."""
    view = view_from_topo(parse_topo("fattree,4"))
    later = [tap(i, src_ip=ip(1), monitor_ip=ip(m)) for i, m in ((1, 9), (2, 10), (3, 11))]
    first = compile_taps(view, [tap(4, src_ip=ip(2), monitor_ip=ip(3))] + later).monitor_tags
    again = compile_taps(view, later).monitor_tags
    assert len(set(first.values())) == 4 and again == {m: v for m, v in first.items() if m != mac(3)}
    assert compile_taps(view, list(reversed(later))).monitor_tags == again  # and in any order
