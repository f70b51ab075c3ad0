"""Copy budgets on the strict fake fabric: cut, sampled, rate-limited and pooled copies,
originals untouched (compile/budget.py). Real OVS runs the same rules in
tests/integration/test_budget.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.unit.fabric import Fabric, view_from_topo
from tests.unit.test_taps import at, clean, ip, mac, send, tap
from vtap.compile.network import compile_network
from vtap.compile.pipeline import TABLE_SEND, TABLE_TAP, violations
from vtap.lab.topos import parse_topo
from vtap.model.policy import TapSpec
from vtap.model.rules import GroupAction
from vtap.model.state import PolicyState


def udp(src: int, dst: int, sport: int, dport: int = 53, size: int = 1000) -> dict:
    return {"eth_src": mac(src), "eth_dst": mac(dst), "eth_type": 0x0800, "ipv4_src": ip(src), "ipv4_dst": ip(dst),
            "ip_proto": 17, "udp_src": sport, "udp_dst": dport, "size": size}


def build(taps, topo="fattree,4", down=frozenset()):
    view = view_from_topo(parse_topo(topo), down=down)
    desired, comp = compile_network(view, taps)
    for rules in desired.values():
        for f in rules.flows:
            assert violations(f) == [], str(f)
    return Fabric(view, desired), comp, desired


@pytest.mark.parametrize("monitor", [2, 3, 9])  # same edge switch, same pod, other pod
def test_snaplen_cuts_the_copy_not_the_original(monitor):
    fab, comp, _ = build([tap(1, src_ip=ip(1), monitor_ip=ip(monitor), snaplen=128)])
    pkt = udp(1, 16, 4000)
    trace = send(fab, 1, pkt)
    assert [clean(f) for f in at(fab, 16, trace)] == [pkt]
    copies = at(fab, monitor, trace)
    assert [c["size"] for c in copies] == [128]
    assert clean({**copies[0], "size": 1000}) == pkt
    small = send(fab, 1, udp(1, 16, 4000, size=100))
    assert [c["size"] for c in at(fab, monitor, small)] == [100]


def test_sample_copies_whole_flows_in_both_directions():
    fab, _, _ = build([tap(1, src_ip=ip(1), dst_ip=ip(16), direction="both", monitor_ip=ip(9), sample=4)])
    copied = []
    for sport in range(1000, 1400):
        fwd = send(fab, 1, udp(1, 16, sport, 53))
        back = send(fab, 16, udp(16, 1, 53, sport))
        assert len(at(fab, 16, fwd)) == 1 and len(at(fab, 1, back)) == 1  # originals all arrive
        n_fwd, n_back = len(at(fab, 9, fwd)), len(at(fab, 9, back))
        assert n_fwd == n_back and n_fwd in (0, 1), sport  # a flow is copied both ways or not at all
        copied.append(n_fwd)
    assert 0.20 <= sum(copied) / len(copied) <= 0.30


def test_pool_spreads_flows_keeps_directions_together_and_moves_only_a_down_members_share():
    pool = [ip(5), ip(12)]
    policy = tap(1, src_ip=ip(1), dst_ip=ip(16), direction="both", monitor_pool=pool)
    fab, comp, _ = build([policy])
    assert comp.states[1].state == PolicyState.COMPILED
    where = {}
    for sport in range(2000, 2200):
        fwd, back = send(fab, 1, udp(1, 16, sport)), send(fab, 16, udp(16, 1, 53, sport))
        hits = [m for m in (5, 12) if at(fab, m, fwd)]
        assert len(hits) == 1 and [m for m in (5, 12) if at(fab, m, back)] == hits, sport
        where[sport] = hits[0]
    share = sum(1 for m in where.values() if m == 5) / len(where)
    assert 0.35 <= share <= 0.65
    h12 = fab.view.hosts[mac(12)]
    fab2, comp2, _ = build([policy], down={(h12.dpid, h12.port)})
    assert comp2.states[1].state == PolicyState.DEGRADED and ip(12) in comp2.states[1].reason
    for sport, m in where.items():
        fwd = send(fab2, 1, udp(1, 16, sport))
        assert len(at(fab2, 5, fwd)) == 1 and not at(fab2, 12, fwd)  # everything to the live one, once


def test_pool_of_three_with_one_down_keeps_the_others_flows():
    policy = tap(1, src_ip=ip(1), monitor_pool=[ip(5), ip(9), ip(12)])
    fab, _, _ = build([policy])
    before = {s: [m for m in (5, 9, 12) if at(fab, m, send(fab, 1, udp(1, 16, s)))] for s in range(3000, 3150)}
    h9 = fab.view.hosts[mac(9)]
    fab2, _, _ = build([policy], down={(h9.dpid, h9.port)})
    moved = {5: 0, 12: 0}
    for s, (m,) in before.items():
        now = [x for x in (5, 9, 12) if at(fab2, x, send(fab2, 1, udp(1, 16, s)))]
        if m == 9:
            assert now in ([5], [12])
            moved[now[0]] += 1
        else:
            assert now == [m], s  # a live member keeps its flows
    assert all(moved.values()), moved  # the down member's share is spread over both


def test_rate_limit_meters_copies_only_after_forwarding():
    fab, comp, desired = build([tap(1, src_ip=ip(1), monitor_ip=ip(9), rate_limit_pps=500)])
    d = fab.view.hosts[mac(1)].dpid
    tap_rules = [f for f in desired[d].flows if f.table == TABLE_TAP and f.write]
    assert tap_rules and all(not any(isinstance(a, GroupAction) for a in f.actions) for f in tap_rules)
    sends = [f for f in desired[d].flows if f.table == TABLE_SEND]
    assert len(sends) == 1 and sends[0].meter is not None
    assert [(m.rate_pps, m.burst) for m in desired[d].meters if m.meter_id == sends[0].meter] == [(500, 50)]
    assert comp.meter_monitors == {(d, sends[0].meter): (1, mac(9))}
    trace = send(fab, 1, udp(1, 16, 4000))
    assert len(at(fab, 16, trace)) == 1 and len(at(fab, 9, trace)) == 1


def test_rate_is_split_over_tap_switches_and_pool_members():
    _, _, desired = build([tap(1, dst_ip=ip(16), monitor_pool=[ip(5), ip(9)], rate_limit_pps=1000)])
    rates = {m.rate_pps for rules in desired.values() for m in rules.meters if m.meter_id >> 24 == 0x75}
    assert rates == {63}  # 8 edge switches x 2 members: ceil(1000 / 16)


def test_overlap_one_copy_per_monitor_each_shaped_by_its_policy():
    a = tap(1, src_ip=ip(1), monitor_ip=ip(9), snaplen=128)
    b = tap(2, src_ip=ip(1), dst_ip=ip(16), monitor_ip=ip(12))  # overlaps a, another monitor, no budget
    c = tap(3, src_ip=ip(1), dst_ip=ip(16), monitor_ip=ip(9))  # overlaps a, same monitor: a is older and shapes it
    fab, _, _ = build([a, b, c])
    trace = send(fab, 1, udp(1, 16, 4000))
    assert [f["size"] for f in at(fab, 9, trace)] == [128]
    assert [f["size"] for f in at(fab, 12, trace)] == [1000]
    assert [f["size"] for f in at(fab, 16, trace)] == [1000]


def test_delivery_accounting_counts_budgeted_copies_at_their_send_groups():
    _, comp, desired = build([tap(1, src_ip=ip(1), monitor_pool=[ip(2), ip(9)], snaplen=64, sample=2)])
    tap_groups = {k: v for k, v in comp.sent_buckets.items() if None in v}
    assert tap_groups and all(v == (None,) for v in tap_groups.values())
    sends = {k: v for k, v in comp.sent_buckets.items() if None not in v}
    assert sorted(v for v in sends.values()) == [(mac(2),), (mac(9),)]
    assert any(mac(2) == m for m in comp.cut_deliveries.values())  # the local member's cut copies: its own counter
    assert not comp.meter_monitors and not any(m.meter_id >> 24 == 0x75 for r in desired.values() for m in r.meters)


@pytest.mark.parametrize("field,value", [("snaplen", 10), ("snaplen", 9217), ("sample", 0), ("rate_limit_pps", -1),
                                         ("rate_limit_pps", 0), ("monitor_pool", []), ("monitor_pool", ["nope"]),
                                         ("monitor_pool", ["10.0.0.0/24"])])
def test_bad_budget_values_name_their_field(field, value):
    body = {"name": "t", "src_ip": ip(1), field: value}
    if field != "monitor_pool":
        body["monitor_ip"] = ip(9)
    with pytest.raises(ValidationError) as exc:
        TapSpec(**body)
    assert exc.value.errors()[0]["loc"] == (field,)


def test_budgets_need_the_vlan_transport():
    with pytest.raises(ValidationError, match="need transport vlan"):
        TapSpec(name="t", src_ip=ip(1), monitor_ip=ip(9), transport="rewrite", snaplen=128)
    with pytest.raises(ValidationError, match="monitor_pool replaces"):
        TapSpec(name="t", src_ip=ip(1), monitor_ip=ip(9), monitor_pool=[ip(5)])


def test_an_operators_scope_covers_every_pool_member():
    from vtap.model.access import Scope, scope_violations
    scope = Scope(sources=["10.0.0.0/29"], monitors=["10.0.0.9"])
    spec = TapSpec(name="t", src_ip=ip(1), dst_ip=ip(2), monitor_pool=[ip(9), ip(10)])
    assert scope_violations(spec, scope) == [("monitor_pool", "10.0.0.10 is outside your scope's monitors")]


def test_a_policy_whose_budget_ids_are_taken_gets_an_error_and_leaves_the_others_alone():
    old = tap(1, src_ip=ip(1), monitor_ip=ip(9), snaplen=128)
    young = tap(1 + (1 << 17), src_ip=ip(1), dst_ip=ip(16), monitor_ip=ip(12), snaplen=64)  # same send-group id
    fab, comp, _ = build([old, young])
    assert comp.states[1].state == PolicyState.COMPILED
    assert comp.states[young.id].state == PolicyState.ERROR and "re-create" in comp.states[young.id].reason
    trace = send(fab, 1, udp(1, 16, 4000))
    assert [f["size"] for f in at(fab, 9, trace)] == [128] and at(fab, 12, trace) == []


def test_a_budgeted_policys_rules_include_its_send_and_cut_groups_and_truncation():
    fab, comp, _ = build([tap(1, src_ip=ip(1), monitor_ip=ip(9), snaplen=128, rate_limit_pps=100)])
    mine = comp.rules_of(1)
    d = fab.view.hosts[mac(1)].dpid
    tables = {f.table for f in mine[d].flows}
    assert {TABLE_TAP, 4, TABLE_SEND, 6} <= tables
    ids = {g.group_id for g in mine[d].groups}
    for base, size in ((0x76000000, 0x400000), (0x76C00000, 0x200000), (0x76E00000, 0x200000)):  # tap, send, cut
        assert any(base <= i < base + size for i in ids), hex(base)


@pytest.mark.parametrize("value", [False, 3, "10.0.0.9", {"a": 1}])
def test_a_pool_that_is_not_a_list_is_a_type_error_naming_it(value):
    with pytest.raises(ValidationError) as exc:
        TapSpec(name="t", src_ip=ip(1), monitor_pool=value)
    assert exc.value.errors()[0]["loc"][0] == "monitor_pool"
