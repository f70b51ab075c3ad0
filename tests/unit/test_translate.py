"""Rule specs survive a trip through os-ken's wire format and back."""

from __future__ import annotations

from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3_parser as parser

from vtap.compile.pipeline import MULTICAST_BIT
from vtap.model.network import OFPP_CONTROLLER
from vtap.model.rules import Bucket, FlowRule, GroupAction, GroupRule, Output, PopVlan, PushVlan, SetField, match
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
