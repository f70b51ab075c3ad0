"""The reconciler's pure diff: minimal, ordered, additive while settling."""

from __future__ import annotations

from vtap.control.reconciler import RuleDiff, apply, diff, messages
from vtap.model.rules import Bucket, FlowRule, GroupAction, GroupRule, Output, SwitchRules, match
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

A = FlowRule(2, 100, match(eth_dst="00:00:00:00:00:01"), (Output(1),), cookie=1)
A2 = FlowRule(2, 100, match(eth_dst="00:00:00:00:00:01"), (Output(2),), cookie=1)
B = FlowRule(2, 100, match(eth_dst="00:00:00:00:00:02"), (Output(2),), cookie=1)
C = FlowRule(1, 10, match(eth_type=0x800), (GroupAction(0x76000001),), goto=2, cookie=1)
G = GroupRule(0x76000001, "all", (Bucket((Output(3),)),))


def test_nothing_to_do_when_equal():
    s = SwitchRules(frozenset({A, B}), frozenset({G}))
    assert len(diff(s, s)) == 0


def test_add_modify_delete():
    installed = SwitchRules(frozenset({A, B}))
    desired = SwitchRules(frozenset({A2, C}), frozenset({G}))
    ch = diff(desired, installed)
    assert ch.add_flows == (C,) and ch.modify_flows == (A2,) and ch.delete_flows == (B,)
    assert ch.add_groups == (G,)
    assert apply(installed, ch) == desired


def test_additive_only_adds():
    installed = SwitchRules(frozenset({A, B}))
    desired = SwitchRules(frozenset({A2, C}))
    ch = diff(desired, installed, additive=True)
    assert ch == RuleDiff(add_flows=(C,))


def test_groups_come_before_flows_that_use_them_and_go_after():
    ch = diff(SwitchRules(frozenset({C}), frozenset({G})), SwitchRules())
    msgs = messages(ch)
    assert isinstance(msgs[0], parser.OFPGroupMod) and isinstance(msgs[1], parser.OFPFlowMod)
    back = diff(SwitchRules(), SwitchRules(frozenset({C}), frozenset({G})))
    msgs = messages(back)
    assert msgs[0].command == ofp.OFPFC_DELETE_STRICT and isinstance(msgs[-1], parser.OFPGroupMod)


def test_meters_diff_and_go_outside_the_bundle_around_it():
    from vtap.control.reconciler import meter_messages
    from vtap.model.rules import Meter

    m1, m1b, m2 = Meter(0x76740001, 1000, 100), Meter(0x76740001, 500, 50), Meter(0x76740002, 10, 1)
    installed = SwitchRules(meters=frozenset({m1, m2}))
    desired = SwitchRules(meters=frozenset({m1b}))
    ch = diff(desired, installed)
    assert ch.modify_meters == (m1b,) and ch.delete_meters == (m2,) and ch.add_meters == ()
    assert apply(installed, ch) == desired
    before, after = meter_messages(ch)
    assert [m.command for m in before] == [ofp.OFPMC_MODIFY] and [m.command for m in after] == [ofp.OFPMC_DELETE]
    assert messages(ch) == []  # nothing of it goes into the bundle


def test_a_large_diff_is_made_as_it_is_asked_for_in_the_safe_order(monkeypatch):
    """The messages of 1,100 new flows and their group are made one by one as the
    channel takes them (it gives the loop back every `SEND_SLICE`), the group first."""
    import itertools

    from vtap.control import reconciler

    flows = frozenset(FlowRule(2, 100, match(eth_dst=f"00:00:00:00:{i >> 8:02x}:{i & 0xff:02x}"), (GroupAction(G.group_id),),
                               cookie=1) for i in range(1100))
    made, flow_add = [], reconciler.translate.flow_add
    monkeypatch.setattr(reconciler.translate, "flow_add", lambda f: made.append(f) or flow_add(f))
    lazy = reconciler.made_messages(diff(SwitchRules(flows, frozenset({G})), SwitchRules()))
    first = list(itertools.islice(lazy, 11))
    assert len(made) == 10  # the group and ten flows asked for: ten made, not 1,100
    whole = first + list(lazy)
    assert len(whole) == 1101 and len(made) == 1100 and isinstance(whole[0], parser.OFPGroupMod)
    assert all(isinstance(m, parser.OFPFlowMod) and m.command == ofp.OFPFC_ADD for m in whole[1:])
