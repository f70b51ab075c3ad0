"""The strict fake fabric: it refuses what a switch would refuse or could not apply
unambiguously, and runs the compiled rules the same whether they come as values or as
the OpenFlow messages the reconciler would send to an empty switch."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest

from tests.unit.fabric import Fabric, view_from_topo
from vtap.compile.network import compile_network
from vtap.control import reconciler
from vtap.lab.topos import parse_topo
from vtap.model.policy import Tap, TapSpec
from vtap.model.rules import Bucket, FlowRule, GroupAction, GroupRule, Output, SwitchRules, match
from vtap.model.view import NetworkView
from vtap.openflow import translate

BROADCAST = "ff:ff:ff:ff:ff:ff"


def _mac(i: int) -> str:
    return f"00:00:00:00:00:{i:02x}"


def _ip(i: int) -> str:
    return f"10.0.0.{i}"


def _tcp(src: int, dst: int, eth_dst: str | None = None) -> dict:
    return {"eth_src": _mac(src), "eth_dst": eth_dst or _mac(dst), "eth_type": 0x0800, "ipv4_src": _ip(src),
            "ipv4_dst": _ip(dst), "ip_proto": 6, "tcp_src": 40000, "tcp_dst": 80}


def _tiny() -> NetworkView:
    """linear,2: h1 on s1 port 1, s1 port 2 to s2 port 2, h2 on s2 port 1."""
    return view_from_topo(parse_topo("linear,2"))


def _rules(flows: Iterable[FlowRule] = (), groups: Iterable[GroupRule] = ()) -> dict[int, SwitchRules]:
    """Rules for s1 alone (s2 holds nothing: whatever reaches it is dropped)."""
    return {1: SwitchRules(frozenset(flows), frozenset(groups))}


@pytest.mark.parametrize("goto", [0, 1])
def test_goto_to_the_same_or_an_earlier_table_fails(goto):
    view = _tiny()
    with pytest.raises(AssertionError, match="switch 0000000000000001 table 1: goto must go to a later table"):
        Fabric(view, _rules([FlowRule(1, 10, match(), goto=goto)]))


def test_equal_priority_flows_both_matching_a_packet_fail_at_lookup():
    view = _tiny()
    by_port = FlowRule(0, 10, match(in_port=1), (Output(3),))
    by_type = FlowRule(0, 10, match(eth_type=0x0800), (Output(4),))
    fab = Fabric(view, _rules([by_port, by_type]))
    assert fab.inject(1, 1, {"eth_type": 0x86DD}).delivered == [(1, 3)]  # one match: fine
    with pytest.raises(AssertionError, match=r"switch 0000000000000001 table 0: .* matches 2 flows of priority 10: .*eth_type=0x800.* / .*in_port=1"):
        fab.inject(1, 1, {"eth_type": 0x0800})
    # As compile/regions.py does it: the intersection, above both, makes the lookup unambiguous.
    both = FlowRule(0, 20, match(eth_type=0x0800, in_port=1), (Output(5),))
    assert Fabric(view, _rules([by_port, by_type, both])).inject(1, 1, {"eth_type": 0x0800}).delivered == [(1, 5)]


def test_a_group_id_defined_twice_fails():
    view = _tiny()
    groups = [GroupRule(7, "all", (Bucket((Output(1),)),)), GroupRule(7, "all", (Bucket((Output(3),)),))]
    with pytest.raises(AssertionError, match="switch 0000000000000001: group id 0x7 defined twice"):
        Fabric(view, _rules(groups=groups))
    once = groups[0]  # the same group sent twice is refused by a switch too (OFPGMFC_GROUP_EXISTS)
    with pytest.raises(AssertionError, match="defined twice"):
        Fabric.from_messages(view, {1: [translate.group_add(once), translate.group_add(once)]})


def test_a_group_action_to_a_missing_group_fails():
    view = _tiny()
    with pytest.raises(AssertionError, match=r"group 0x8 does not exist, used by .*group:8"):
        Fabric(view, _rules([FlowRule(0, 10, match(), (GroupAction(8),))], [GroupRule(7, "all", ())]))


def test_two_different_flows_under_one_key_fail():
    view = _tiny()
    with pytest.raises(AssertionError, match="table 0: two flows under one key"):
        Fabric(view, _rules([FlowRule(0, 10, match(in_port=1), (Output(2),)), FlowRule(0, 10, match(in_port=1), ())]))


def _policies(n: int) -> list[Tap]:
    """Wide and narrow, overlapping, both transports, on a network of hosts 1..n."""
    specs = [
        dict(dst_ip="10.0.0.0/28", direction="both", monitor_ip=_ip(n)),
        dict(src_ip=_ip(1), dst_ip=_ip(2), ip_proto="tcp", dst_port=80, monitor_ip=_ip(2)),
        dict(src_ip=_ip(1), monitor_ip=_ip(n - 1)),
        dict(dst_ip=_ip(n), monitor_ip=_ip(2), transport="rewrite"),
        dict(src_ip=_ip(2), dst_ip=_ip(n), dst_mac=_mac(n), ip_proto="tcp", monitor_ip=_ip(1), transport="rewrite"),
        # copy budgets: registers, resubmit, multipath, truncation, meters, write-actions
        dict(src_ip=_ip(3), direction="both", monitor_pool=[_ip(1), _ip(n)], sample=2, snaplen=96, rate_limit_pps=900),
        dict(src_ip=_ip(1), dst_ip=_ip(3), monitor_ip=_ip(2), snaplen=64),
    ]
    return [Tap(id=i, spec=TapSpec(name=f"t{i}", **s)) for i, s in enumerate(specs, 1)]


@pytest.mark.parametrize("spec", ["fattree,4", "linear,4"])
def test_compiled_rules_run_clean_and_the_same_through_openflow_messages(spec):
    view = view_from_topo(parse_topo(spec))
    desired, _ = compile_network(view, _policies(len(view.hosts)))
    fab = Fabric(view, desired)
    # What the reconciler sends a switch that holds nothing yet.
    wire = Fabric.from_messages(view, {d: reconciler.messages(reconciler.diff(r, SwitchRules())) for d, r in desired.items()})
    for d, rules in desired.items():  # every rule reads back as it was written: the reconciler sees no difference
        assert {f for t in wire.tables[d].values() for f in t} == set(rules.flows), d
        assert set(wire.groups[d].values()) == set(rules.groups), d
    hosts = {int(h.mac[-2:], 16): h for h in view.hosts.values()}
    for a, b in itertools.permutations(hosts, 2):
        src, dst = hosts[a], hosts[b]
        trace = fab.inject(src.dpid, src.port, _tcp(a, b))
        assert (dst.dpid, dst.port) in trace.delivered, (a, b)
        assert wire.inject(src.dpid, src.port, _tcp(a, b)) == trace, (a, b)
    src = hosts[1]
    trace = fab.inject(src.dpid, src.port, _tcp(1, 255, eth_dst=BROADCAST))
    assert {(h.dpid, h.port) for h in hosts.values() if h is not src} <= set(trace.delivered)
    assert wire.inject(src.dpid, src.port, _tcp(1, 255, eth_dst=BROADCAST)) == trace
