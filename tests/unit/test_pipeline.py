"""Every rule vtap compiles fits the pipeline as declared in `vtap.compile.pipeline`."""

from __future__ import annotations

import pytest

from tests.unit.fabric import view_from_topo
from vtap.compile.network import compile_network
from vtap.compile.pipeline import (PIPELINE, TABLES, FlowRule, Owner, allocate_id, cookie, is_vtap_group, stable_hash,
                                   violations)
from vtap.lab.topos import parse_topo
from vtap.model.policy import Tap, TapSpec


def _taps() -> list[Tap]:
    specs = [
        dict(src_ip="10.0.0.1", dst_ip="10.0.0.16", ip_proto="tcp", dst_port=80, monitor_ip="10.0.0.9"),
        dict(src_mac="00:00:00:00:00:01", ip_proto="udp", vlan_id=100, monitor_mac="00:00:00:00:00:04"),
        dict(dst_ip="10.0.0.0/28", monitor_ip="10.0.0.7"),  # wide source: taps at every edge switch
        dict(src_ip="10.0.0.2", dst_ip="10.0.0.15", direction="both", ip_proto="udp", monitor_ip="10.0.0.5"),
        dict(src_mac="00:00:00:00:00:04", src_ip="10.0.0.4", dst_mac="00:00:00:00:00:0d", dst_ip="10.0.0.13",
             ip_proto="tcp", dst_port=22, monitor_ip="10.0.0.6", transport="rewrite"),
        dict(src_ip="10.0.0.3", dst_ip="10.0.0.14", ip_proto="sctp", monitor_ip="10.0.0.11"),
        # budgeted: cut, sampled and rate-limited to a remote monitor; a pool; cut to a local monitor
        dict(src_ip="10.0.0.8", direction="both", monitor_ip="10.0.0.12", snaplen=128, sample=4, rate_limit_pps=500),
        dict(dst_ip="10.0.0.10", monitor_pool=["10.0.0.1", "10.0.0.16", "10.0.0.2"], sample=2),
        dict(src_ip="10.0.0.6", monitor_ip="10.0.0.5", snaplen=64),
    ]
    return [Tap(id=i + 1, spec=TapSpec(name=f"t{i + 1}", **s)) for i, s in enumerate(specs)]


@pytest.mark.parametrize("packet_in_rate", [0, 1000])
def test_every_compiled_rule_fits_the_declared_pipeline(packet_in_rate):
    view = view_from_topo(parse_topo("fattree,4"))
    desired, comp = compile_network(view, _taps(), packet_in_rate)
    assert all(s.state == "compiled" for s in comp.states.values()), comp.states
    tables_used = set()
    for dpid, rules in desired.items():
        for flow in rules.flows:
            assert violations(flow) == [], (dpid, str(flow))
            tables_used.add(flow.table)
        assert all(is_vtap_group(g.group_id) for g in rules.groups)
    assert tables_used == set(TABLES)


def test_the_pipeline_only_goes_forward():
    for table in PIPELINE:
        assert all(n > table.table_id and n in TABLES for n in table.next_tables), table.name
    assert [t.table_id for t in PIPELINE] == sorted(TABLES)


def test_violations_name_what_is_wrong():
    bad = FlowRule(3, 1, (("eth_src", "00:00:00:00:00:01"),), (), 1, cookie(Owner.TAP))
    found = violations(bad)
    assert any("eth_src" in v for v in found)
    assert any("may not go to table 1" in v for v in found)
    assert any("holds no rules of cookie" in v for v in found)
    assert violations(FlowRule(9, 1, ())) == ["table 9 is not in the pipeline"]
    assert violations(FlowRule(2, 1, (), (), None, 0x1234)) == ["table forward holds no rules of cookie 0x1234 (owner None)"]


def test_one_allocator_gives_every_group_the_same_id_each_time_and_probes_within_its_range():
    base, mask = 0x76400000, 0x003FFFFF
    first = allocate_id(base, mask, stable_hash("delivery 00:00:00:00:00:03"), set())
    assert first == allocate_id(base, mask, stable_hash("delivery 00:00:00:00:00:03"), {1, 2})  # same inputs, same id
    assert first & ~mask == base
    assert allocate_id(base, mask, stable_hash("delivery 00:00:00:00:00:03"), {first}) == first + 1
    top = base | mask
    assert allocate_id(base, mask, mask, {top}) == base  # the probe wraps within the range, never past it
    assert allocate_id(base, mask, mask, {top, base, base + 1}) == base + 2
