"""Short, loggable names of the messages vtap sends, to name the request an error
answers: from the message, or from its bytes.

A batch keeps each message's bytes until its barrier, not the message: os-ken's objects
for one flow mod in a bundle (the mod, its match, instructions and actions, the bundle
wrapper, each with its buffer) are ~2 KiB, and a bulk change's batches to every switch,
all alive until their barriers, had held ~200 MiB at 100,000 policies and left the
controller's pages part empty once freed. The bytes are named again only when the
switch answers one with an error.
"""

from __future__ import annotations

import struct
from typing import Any

from os_ken.ofproto import ofproto_common, ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from vtap.openflow.translate import BUNDLE_ADD_HEAD, OFP_HEADER, PROTOCOL

_ID_MOD = struct.Struct("!HxxI")  # group and meter mods, after the header: command, (type, pad | flags), id


def describe_error(msg: Any) -> str:
    return f"OFPT_ERROR type={msg.type} code={msg.code}"


def describe(msg: Any) -> str:
    """A sent message's name and the fields that tell it from its neighbours."""
    name = type(msg).__name__
    if isinstance(msg, parser.OFPFlowMod):  # os-ken's, or translate's FlowMod: one on the wire
        return f"OFPFlowMod(command={msg.command}, table={msg.table_id}, priority={msg.priority}, match={dict(sorted(msg.match.items()))})"
    if isinstance(msg, parser.OFPGroupMod):
        return f"{name}(command={msg.command}, group_id={msg.group_id})"
    if isinstance(msg, parser.OFPMeterMod):
        return f"{name}(command={msg.command}, meter_id={msg.meter_id})"
    if isinstance(msg, parser.ONFBundleAddMsg):
        return f"bundle {msg.bundle_id}: {describe(msg.message)}"
    return name


def describe_bytes(data: bytes) -> str:
    """`describe` of a message from its bytes (what it would say of the message itself)."""
    version, kind, length, xid = OFP_HEADER.unpack_from(data)
    if kind == ofp.OFPT_EXPERIMENTER and len(data) > BUNDLE_ADD_HEAD.size:
        *_, experimenter, exp_type, bundle_id, _ = BUNDLE_ADD_HEAD.unpack_from(data)
        if experimenter == ofproto_common.ONF_EXPERIMENTER_ID and exp_type == ofp.ONF_ET_BUNDLE_ADD_MESSAGE:
            return f"bundle {bundle_id}: {describe_bytes(data[BUNDLE_ADD_HEAD.size:])}"
    if kind == ofp.OFPT_FLOW_MOD:
        return describe(ofproto_parser.msg(PROTOCOL, version, kind, length, xid, data[:length]))
    if kind in (ofp.OFPT_GROUP_MOD, ofp.OFPT_METER_MOD):
        command, ident = _ID_MOD.unpack_from(data, OFP_HEADER.size)
        return (f"OFPGroupMod(command={command}, group_id={ident})" if kind == ofp.OFPT_GROUP_MOD
                else f"OFPMeterMod(command={command}, meter_id={ident})")
    return f"message type {kind}"
