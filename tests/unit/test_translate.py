"""Rule specs survive a trip through os-ken's wire format and back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from vtap.compile.pipeline import MULTICAST_BIT
from vtap.model.network import OFPP_CONTROLLER
from vtap.model.rules import (
    Bucket,
    FlowRule,
    GroupAction,
    GroupRule,
    Multipath,
    Output,
    OutputTrunc,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    ToController,
    match,
)
from vtap.openflow import translate
from vtap.openflow.translate import PROTOCOL


def _roundtrip(msg):
    msg.set_xid(1)
    msg.serialize()
    buf = bytes(msg.buf)
    return ofproto_parser.msg(PROTOCOL, *ofproto_parser.header(buf), buf)


def test_flow_roundtrip():
    rule = FlowRule(
        2, 50, match(in_port=3, eth_dst=MULTICAST_BIT),
        (PushVlan(), SetField("vlan_vid", 0x1000 | 42), Output(1), GroupAction(0x76000005), PopVlan(), Output(OFPP_CONTROLLER)),
        goto=3, cookie=0x7674010000000000,
    )
    mod = _roundtrip(translate.flow_add(rule))
    stats = parser.OFPFlowStats(table_id=mod.table_id, priority=mod.priority, cookie=mod.cookie, match=mod.match, instructions=mod.instructions)
    assert translate.flow_from_stats(stats) == rule


def test_group_roundtrip():
    group = GroupRule(0x76000001, "all", (Bucket((Output(1),)), Bucket((SetField("eth_dst", "00:00:00:00:00:09"), Output(2)))))
    mod = translate.group_add(group)  # os-ken cannot parse a GroupMod: compare the objects
    desc = parser.OFPGroupDescStats(type_=mod.type, group_id=mod.group_id, buckets=mod.buckets)
    assert translate.group_from_desc(desc) == group


def test_all_ones_mask_reads_back_unmasked():
    assert translate._norm_value(("00:00:00:00:00:01", "ff:ff:ff:ff:ff:ff")) == "00:00:00:00:00:01"
    assert translate._norm_value(("10.0.0.0", "255.0.0.0")) == ("10.0.0.0", "255.0.0.0")


def test_flows_read_from_a_replys_bytes_are_what_os_ken_reads_and_what_was_written():
    """`flows_from_stats_body` (the reconciler's read of a switch, without os-ken's parse)
    gives, for every rule the compiler makes (every kind of policy, IPv6, masks, capture
    jobs, packet-in meters), what `flow_from_stats` gives from os-ken's parse of the
    same bytes, and that is the rule that was written."""
    from tests.unit.datapath import stats_entry
    from tests.unit.fabric import view_from_topo
    from tests.unit.test_pipeline import _taps
    from vtap.compile.network import compile_network
    from vtap.lab.topos import parse_topo
    from vtap.model.capture import CaptureTarget
    from vtap.model.policy import MatchSpec, Tap, TapSpec

    taps = _taps() + [Tap(id=50, spec=TapSpec(name="v6", src_ip="fd00::/64", dst_ip="fd00::1:0/112", monitor_ip="10.0.0.3")),
                      Tap(id=51, spec=TapSpec(name="v4wide", src_ip="10.0.0.0/30", dst_ip="10.0.0.16", monitor_ip="10.0.0.4"))]
    desired, _ = compile_network(view_from_topo(parse_topo("fattree,4")), taps, 1000,
                                 [CaptureTarget(1, MatchSpec(src_ip="10.0.0.1"), 96)])
    rules = sorted({f for r in desired.values() for f in r.flows}, key=str)
    assert any(isinstance(v, tuple) for f in rules for _, v in f.match)  # masked fields among them
    assert any(":" in str(v) and "fd00" in str(v) for f in rules for _, v in f.match)  # and IPv6
    entries = []
    for rule in rules:
        mod = translate.flow_add(rule)
        entries.append(stats_entry(parser.OFPFlowStats(table_id=mod.table_id, priority=mod.priority, cookie=mod.cookie,
                                                       match=mod.match, instructions=mod.instructions)))
    body = b"".join(entries)
    read = translate.flows_from_stats_body(body)
    assert [pos for _, pos in read] == [sum(map(len, entries[:i])) for i in range(len(entries))]
    for (fast, pos), rule in zip(read, rules):
        assert fast == translate.flow_from_stats(translate.parse_flow_stats(body, pos)) == rule


def test_a_flow_entry_vtap_cannot_read_is_left_to_os_ken_and_a_cut_one_is_an_error():
    from tests.unit.datapath import stats_entry

    odd = parser.OFPFlowStats(table_id=0, priority=5, cookie=1, match=parser.OFPMatch(tcp_flags=2, eth_type=0x800, ip_proto=6),
                              instructions=[])
    plain = translate.flow_add(FlowRule(0, 9, match(in_port=1), (Output(2),)))
    good = parser.OFPFlowStats(table_id=0, priority=9, cookie=0, match=plain.match, instructions=plain.instructions)
    body = stats_entry(odd) + stats_entry(good)
    (first, at), (second, _) = translate.flows_from_stats_body(body)
    assert first is None and at == 0 and second == FlowRule(0, 9, match(in_port=1), (Output(2),))
    try:
        translate.flows_from_stats_body(body[:-8])
    except translate.TranslationError as exc:
        assert "length" in str(exc)
    else:
        raise AssertionError("a cut entry was read")


def _os_ken_flow_mod(rule: FlowRule, command: int, **fields) -> bytes:
    """The flow mod as os-ken's own objects write it (what translate.py made before)."""
    msg = parser.OFPFlowMod(PROTOCOL, table_id=rule.table, command=command, priority=rule.priority,
                            match=translate.match_to_of(rule.match), **fields)
    msg.set_xid(7)
    msg.serialize()
    return bytes(msg.buf)


def _bytes(msg) -> bytes:
    msg.set_xid(7)
    msg.serialize()
    return bytes(msg.buf)


def _assert_written_as_os_ken_writes(rule: FlowRule) -> None:
    assert _bytes(translate.flow_add(rule)) == _os_ken_flow_mod(
        rule, ofp.OFPFC_ADD, cookie=rule.cookie, instructions=translate._instructions(rule))
    assert _bytes(translate.flow_modify(rule)) == _os_ken_flow_mod(
        rule, ofp.OFPFC_MODIFY_STRICT, cookie=rule.cookie, instructions=translate._instructions(rule))
    assert _bytes(translate.flow_delete(rule)) == _os_ken_flow_mod(
        rule, ofp.OFPFC_DELETE_STRICT, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)


def test_the_flow_mods_of_every_kind_of_policy_are_the_bytes_os_ken_writes():
    """Every rule the compiler makes for each kind of policy (budgets, tunnels, rewrite,
    pools: Nicira actions, meters, write actions, goto) and the forwarding's."""
    from vtap.bench.compile import KINDS, population, topo_view
    from vtap.compile.network import compile_network
    from vtap.lab.topos import parse_topo

    view = topo_view(parse_topo("fattree,4"))
    seen_actions = set()
    for kind in KINDS:
        desired, _ = compile_network(view, population(kind, 12))
        for rules in desired.values():
            for rule in rules.flows:
                _assert_written_as_os_ken_writes(rule)
                seen_actions |= {type(a).__name__ for a in rule.actions + rule.write}
    # (push_vlan and controller2 are in groups and captures here: any action, in the next test)
    assert seen_actions >= {"Output", "GroupAction", "SetField", "PopVlan", "OutputTrunc", "Resubmit", "Multipath"}


_ACTIONS = st.one_of(
    st.builds(Output, st.sampled_from([1, 2, 7, 0xFFFFFFF8, OFPP_CONTROLLER])),
    st.builds(GroupAction, st.integers(0, 0xFFFFFF00)),
    st.builds(SetField, st.just("vlan_vid"), st.integers(0x1000, 0x1FFF)),
    st.builds(SetField, st.just("eth_dst"), st.sampled_from(["00:00:00:00:00:09", "02:00:00:00:00:01"])),
    st.builds(PushVlan), st.builds(PopVlan),
    st.builds(ToController, st.integers(0, 0xFFFF), st.integers(1, 0xFFFF)),
    st.builds(OutputTrunc, st.integers(1, 64), st.integers(60, 1500)),
    st.builds(Resubmit, st.integers(0, 254)),
    st.builds(Multipath, st.sampled_from(["modulo_n", "hrw"]), st.integers(0, 0xFFFF), st.integers(1, 64),
              st.sampled_from(["reg0", "reg1"]), st.integers(0, 16), st.integers(6, 16)),
)


@settings(max_examples=150, deadline=None)
@given(table=st.integers(0, 254), priority=st.integers(0, 0xFFFF), in_port=st.integers(1, 64),
       actions=st.lists(_ACTIONS, max_size=4).map(tuple), write=st.lists(_ACTIONS, max_size=2).map(tuple),
       goto=st.none() | st.integers(1, 254), cookie=st.integers(0, 2**64 - 1), meter=st.none() | st.integers(1, 2**32 - 1))
def test_any_flow_mod_is_the_bytes_os_ken_writes(table, priority, in_port, actions, write, goto, cookie, meter):
    _assert_written_as_os_ken_writes(FlowRule(table, priority, match(in_port=in_port, eth_type=0x0800), actions, goto=goto,
                                              cookie=cookie, meter=meter, write=write))
