"""Translate rule specs (vtap.model.rules) to os-ken OpenFlow 1.3 messages and back.

Reading back must give exactly the spec that was written, so that the reconciler can
compare desired and installed rules as plain values. Where a switch reports a field in
another but equivalent form (an all-ones mask, max_len on a plain output), it is
normalised here.
"""

from __future__ import annotations

import socket
import struct
from functools import lru_cache

from os_ken.ofproto import ofproto_common
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from vtap.model.network import OFPP_CONTROLLER
from vtap.model.rules import (
    Action,
    Bucket,
    FlowRule,
    GroupAction,
    GroupRule,
    Match,
    Meter,
    Multipath,
    Output,
    OutputTrunc,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    ToController,
)
from vtap.openflow.oxm import FIELDS, RawMatch


class _OpenFlow13:
    """What os-ken's messages ask of the datapath they are made for, to encode and decode
    themselves: OpenFlow 1.3's constants and parser (os-ken's `ProtocolDesc` would
    import every version's: see the package's docstring)."""

    ofproto = ofp
    ofproto_parser = parser


PROTOCOL = _OpenFlow13()

_GROUP_TYPES = {"all": ofp.OFPGT_ALL, "select": ofp.OFPGT_SELECT, "indirect": ofp.OFPGT_INDIRECT, "ff": ofp.OFPGT_FF}
_GROUP_NAMES = {v: k for k, v in _GROUP_TYPES.items()}
# Open vSwitch's multipath: hash fields `symmetric_l3l4+udp` (nx_hash_fields 3), algorithms.
NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP = 3
_MP_ALGORITHMS = {"modulo_n": 0, "hrw": 2}
_MP_NAMES = {v: k for k, v in _MP_ALGORITHMS.items()}
NX_IN_PORT = 0xFFF8  # resubmit's 16-bit port: "the packet's own in_port" (OpenFlow 1.0's OFPP_IN_PORT)


NXAC2PT_METER_ID = 5  # Open vSwitch's controller2 property: the meter the controller action goes through


def _register_meter_id_property() -> None:
    """Teach os-ken the controller2 action's meter property (it knows max_len, reason and
    the rest, not this one), so that both writing and reading it back work."""
    # os-ken defines the property classes inside a function: reach them through the action's parser.
    parse = parser.NXActionController2.parser.__func__
    props = dict(zip(parse.__code__.co_freevars, (c.cell_contents for c in parse.__closure__)))["NXActionController2Prop"]
    if NXAC2PT_METER_ID in props._TYPES:
        return

    class MeterId(props):
        _arg_name = "meter_id"

        @classmethod
        def parser_prop(cls, buf, length):
            return struct.unpack_from("!I", buf, 0)[0], 4

        @classmethod
        def serialize_prop(cls, meter_id):
            return bytearray(struct.pack("!HHI", NXAC2PT_METER_ID, 8, meter_id))

    props.register_type(NXAC2PT_METER_ID)(MeterId)


_register_meter_id_property()


class TranslationError(ValueError):
    """A switch reported something vtap cannot represent (it then leaves it alone)."""


def _action_to_of(action: Action):
    if isinstance(action, Output):
        max_len = ofp.OFPCML_NO_BUFFER if action.port == OFPP_CONTROLLER else 0
        return parser.OFPActionOutput(action.port, max_len)
    if isinstance(action, GroupAction):
        return parser.OFPActionGroup(action.group_id)
    if isinstance(action, SetField):
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, PushVlan):
        return parser.OFPActionPushVlan(action.ethertype)
    if isinstance(action, PopVlan):
        return parser.OFPActionPopVlan()
    if isinstance(action, ToController):
        return parser.NXActionController2(max_len=action.max_len, meter_id=action.meter_id)
    if isinstance(action, OutputTrunc):
        return parser.NXActionOutputTrunc(action.port, action.max_len)
    if isinstance(action, Resubmit):
        return parser.NXActionResubmitTable(in_port=NX_IN_PORT, table_id=action.table)
    if isinstance(action, Multipath):
        return parser.NXActionMultipath(NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP, action.basis, _MP_ALGORITHMS[action.algorithm],
                                        action.links - 1, 0, action.ofs << 6 | (action.nbits - 1), action.dst)
    raise TypeError(f"unknown action {action!r}")


def _action_from_of(action) -> Action:
    if isinstance(action, parser.OFPActionOutput):
        return Output(action.port)
    if isinstance(action, parser.OFPActionGroup):
        return GroupAction(action.group_id)
    if isinstance(action, parser.OFPActionSetField):
        return SetField(action.key, _norm_value(action.value))
    if isinstance(action, parser.OFPActionPushVlan):
        return PushVlan(action.ethertype)
    if isinstance(action, parser.OFPActionPopVlan):
        return PopVlan()
    if isinstance(action, parser.NXActionController2) and hasattr(action, "meter_id"):
        return ToController(getattr(action, "max_len", 0xFFFF), action.meter_id)
    if isinstance(action, parser.NXActionOutputTrunc):
        return OutputTrunc(action.port, action.max_len)
    if isinstance(action, parser.NXActionResubmitTable) and action.in_port == NX_IN_PORT:
        return Resubmit(action.table_id)
    if (isinstance(action, parser.NXActionMultipath) and action.fields == NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP
            and action.algorithm in _MP_NAMES and action.arg == 0):
        return Multipath(_MP_NAMES[action.algorithm], action.basis, action.max_link + 1, action.dst,
                         action.ofs_nbits >> 6, (action.ofs_nbits & 0x3F) + 1)
    raise TranslationError(f"unsupported action {type(action).__name__}")


def _norm_value(value):
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, tuple):
        v, m = value
        if isinstance(m, str) and m.lower() in ("ff:ff:ff:ff:ff:ff", "255.255.255.255"):
            return _norm_value(v)
        return (_norm_value(v), _norm_value(m))
    return value


def match_to_of(match: Match) -> RawMatch:
    return RawMatch(match)


def match_from_of(of_match: parser.OFPMatch) -> Match:
    return tuple(sorted((name, _norm_value(value)) for name, value in of_match.items()))


def _instructions(rule: FlowRule) -> list:
    inst = []
    if rule.meter is not None:
        inst.append(parser.OFPInstructionMeter(rule.meter))
    if rule.actions:
        inst.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [_action_to_of(a) for a in rule.actions]))
    if rule.write:
        inst.append(parser.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [_action_to_of(a) for a in rule.write]))
    if rule.goto is not None:
        inst.append(parser.OFPInstructionGotoTable(rule.goto))
    return inst


OFP_HEADER = struct.Struct("!BBHI")  # ofp_header: version, type, length, xid
# An ONF bundle's add (OpenFlow 1.3's bundle extension) up to its message: the header,
# experimenter and its type, the bundle's id, 2 bytes of padding, its flags.
BUNDLE_ADD_HEAD = struct.Struct("!BBHIIIIxxH")


def bundle_add(xid: int, bundle_id: int, flags: int, message: bytes) -> bytes:
    """`message` (its xid `xid`) in the bundle's add of the same xid, as os-ken's
    ONFBundleAddMsg writes it with no properties."""
    return BUNDLE_ADD_HEAD.pack(ofp.OFP_VERSION, ofp.OFPT_EXPERIMENTER, BUNDLE_ADD_HEAD.size + len(message), xid,
                                ofproto_common.ONF_EXPERIMENTER_ID, ofp.ONF_ET_BUNDLE_ADD_MESSAGE, bundle_id, flags) + message


_FLOW_MOD = struct.Struct("!" + ofp._OFP_FLOW_MOD_PACK_STR0)
_INSTRUCTION_ACTIONS = struct.Struct(ofp.OFP_INSTRUCTION_ACTIONS_PACK_STR)
_INSTRUCTION_GOTO = struct.Struct(ofp.OFP_INSTRUCTION_GOTO_TABLE_PACK_STR)
_INSTRUCTION_METER = struct.Struct(ofp.OFP_INSTRUCTION_METER_PACK_STR)


@lru_cache(maxsize=4096)
def _actions_bytes(actions: tuple[Action, ...]) -> bytes:
    """These actions as os-ken writes them: a handful of tuples recur in every tap rule
    (its group, an output), each encoded once."""
    buf = bytearray()
    for action in actions:
        _action_to_of(action).serialize(buf, len(buf))
    return bytes(buf)


class FlowMod(parser.OFPFlowMod):
    """os-ken's OFPFlowMod of a rule, its body written by vtap.

    A bulk change is mostly flow mods (12,000 at 10,000 policies), each made, packed and
    bundled on the loop: with os-ken's constructor and its instruction and action
    objects (and its bundle add), 14.1 us each; 6.3 us so. The body here is the bytes
    os-ken writes (a hypothesis test compares them), its actions encoded by os-ken once
    per distinct tuple. `instructions` (os-ken's objects) are made only if read.
    """

    def __init__(self, rule: FlowRule, command: int, *, cookie: int, out_port: int = 0,  # noqa: os-ken's constructor skipped
                 out_group: int = 0, instructions: bool = True):
        parser.MsgBase.__init__(self, PROTOCOL)
        self.rule, self.command, self.cookie, self.out_port, self.out_group = rule, command, cookie, out_port, out_group
        self.table_id, self.priority, self.match = rule.table, rule.priority, RawMatch(rule.match)
        self._with_instructions = instructions

    cookie_mask = idle_timeout = hard_timeout = flags = 0
    buffer_id = ofp.OFP_NO_BUFFER

    @property
    def instructions(self) -> list:
        return _instructions(self.rule) if self._with_instructions else []

    def _serialize_body(self) -> None:
        rule = self.rule
        parts = [_FLOW_MOD.pack(self.cookie, 0, rule.table, self.command, 0, 0, rule.priority, ofp.OFP_NO_BUFFER,
                                self.out_port, self.out_group, 0), self.match.data]
        if self._with_instructions:
            if rule.meter is not None:
                parts.append(_INSTRUCTION_METER.pack(ofp.OFPIT_METER, ofp.OFP_INSTRUCTION_METER_SIZE, rule.meter))
            for kind, actions in ((ofp.OFPIT_APPLY_ACTIONS, rule.actions), (ofp.OFPIT_WRITE_ACTIONS, rule.write)):
                if actions:
                    encoded = _actions_bytes(actions)
                    parts.append(_INSTRUCTION_ACTIONS.pack(kind, ofp.OFP_INSTRUCTION_ACTIONS_SIZE + len(encoded)))
                    parts.append(encoded)
            if rule.goto is not None:
                parts.append(_INSTRUCTION_GOTO.pack(ofp.OFPIT_GOTO_TABLE, ofp.OFP_INSTRUCTION_GOTO_TABLE_SIZE, rule.goto))
        self.buf += b"".join(parts)


def flow_add(rule: FlowRule) -> parser.OFPFlowMod:
    return FlowMod(rule, ofp.OFPFC_ADD, cookie=rule.cookie)


def flow_modify(rule: FlowRule) -> parser.OFPFlowMod:
    """Replace the instructions of the entry with the same key, its counters kept."""
    return FlowMod(rule, ofp.OFPFC_MODIFY_STRICT, cookie=rule.cookie)


def flow_delete(rule: FlowRule) -> parser.OFPFlowMod:
    return FlowMod(rule, ofp.OFPFC_DELETE_STRICT, cookie=0, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                   instructions=False)


def flow_from_stats(stats) -> FlowRule:
    actions, write, goto, meter = _instructions_from_of(stats.instructions)
    return FlowRule(
        table=stats.table_id,
        priority=stats.priority,
        match=match_from_of(stats.match),
        actions=actions,
        goto=goto,
        cookie=stats.cookie,
        meter=meter,
        write=write,
    )


def _instructions_from_of(instructions) -> tuple[tuple[Action, ...], tuple[Action, ...], int | None, int | None]:
    actions: list[Action] = []
    write: list[Action] = []
    goto = meter = None
    for inst in instructions:
        if isinstance(inst, parser.OFPInstructionActions) and inst.type == ofp.OFPIT_APPLY_ACTIONS:
            actions.extend(_action_from_of(a) for a in inst.actions)
        elif isinstance(inst, parser.OFPInstructionActions) and inst.type == ofp.OFPIT_WRITE_ACTIONS:
            write.extend(_action_from_of(a) for a in inst.actions)
        elif isinstance(inst, parser.OFPInstructionGotoTable):
            goto = inst.table_id
        elif isinstance(inst, parser.OFPInstructionMeter):
            meter = inst.meter_id
        else:
            raise TranslationError(f"unsupported instruction {type(inst).__name__}")
    return tuple(actions), tuple(write), goto, meter


# An ofp_flow_stats entry up to its match: length, table_id, pad, duration (s, ns),
# priority, idle and hard timeouts, flags, pad, cookie, packet and byte counts.
_FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")
_OXM_FIELDS = {(cls, field): (name, size, kind) for name, (cls, field, size, kind) in FIELDS.items()}


def _oxm_value(kind: str, data: bytes):
    """A match value as os-ken's OFPMatch.items() gives it."""
    if kind == "int":
        return int.from_bytes(data, "big")
    if kind == "mac":
        return data.hex(":")
    if kind == "ipv4":
        return socket.inet_ntoa(data)
    return socket.inet_ntop(socket.AF_INET6, data)


def match_from_bytes(data: bytes | memoryview) -> Match:
    """An ofp_match's OXM TLVs (after its type and length) as `match_from_of` reads them
    from os-ken's OFPMatch, without building one (the unit tests compare the two)."""
    out, pos, end = [], 0, len(data)
    while pos + 4 <= end:
        length = data[pos + 3]
        out.append(_oxm_entry(bytes(data[pos:pos + 4 + length])))
        pos += 4 + length
    return tuple(sorted(out))


@lru_cache(maxsize=1 << 16)
def _oxm_entry(tlv: bytes) -> tuple[str, object]:
    """One OXM TLV (its header and value) as (field, value), once per distinct TLV: a
    switch's rules share most of theirs (the EtherType, the protocol, the hosts'
    addresses), and reading 12,000 rules back is on a restart's path."""
    cls, fh, _ = struct.unpack_from("!HBB", tlv)
    known = _OXM_FIELDS.get((cls, fh >> 1))
    if known is None:
        raise TranslationError(f"unsupported match field class {cls:#x} field {fh >> 1}")
    name, size, kind = known
    value = tlv[4:]
    if fh & 1:
        return name, _norm_value((_oxm_value(kind, value[:size]), _oxm_value(kind, value[size:])))
    return name, _oxm_value(kind, value)


@lru_cache(maxsize=1 << 14)
def _instructions_from_bytes(data: bytes) -> tuple[tuple[Action, ...], tuple[Action, ...], int | None, int | None]:
    """(apply actions, write actions, goto, meter) of an entry's instructions: parsed by
    os-ken, once per distinct byte string (many rules share theirs: a tap group and a
    goto, an output to a port)."""
    instructions, pos = [], 0
    while pos < len(data):
        inst = parser.OFPInstruction.parser(data, pos)
        if inst.len < 4:
            raise TranslationError(f"an instruction of length {inst.len}")
        instructions.append(inst)
        pos += inst.len
    return _instructions_from_of(instructions)


def flows_from_stats_body(body: bytes) -> list[tuple[FlowRule | None, int]]:
    """Each ofp_flow_stats entry of a raw multipart body as (its rule, its offset), the
    rule None where vtap cannot read it (the caller parses that one with os-ken)."""
    out, pos, view = [], 0, memoryview(body)
    while pos < len(body):
        length, table, _, _, priority, _, _, _, cookie, _, _ = _FLOW_STATS.unpack_from(body, pos)
        if length < _FLOW_STATS.size + 4 or pos + length > len(body):
            raise TranslationError(f"a flow stats entry of length {length} at byte {pos} of {len(body)}")
        at = pos + _FLOW_STATS.size
        match_type, match_len = struct.unpack_from("!HH", body, at)
        inst_at = at + (match_len + 7) // 8 * 8
        try:
            if match_type != ofp.OFPMT_OXM or match_len < 4 or inst_at > pos + length:
                raise TranslationError("not an OXM match")
            actions, write, goto, meter = _instructions_from_bytes(bytes(view[inst_at:pos + length]))
            rule = FlowRule(table=table, priority=priority, match=match_from_bytes(view[at + 4:at + match_len]),
                            actions=actions, goto=goto, cookie=cookie, meter=meter, write=write)
        except (TranslationError, struct.error, ValueError, KeyError):
            rule = None
        out.append((rule, pos))
        pos += length
    return out


def parse_flow_stats(body: bytes, pos: int):
    """os-ken's reading of the ofp_flow_stats entry at `pos` (for `flow_from_stats`)."""
    return parser.OFPFlowStats.parser(body, pos)


def _buckets_to_of(group: GroupRule) -> list:
    return [
        parser.OFPBucket(actions=[_action_to_of(a) for a in b.actions],
                         watch_port=ofp.OFPP_ANY if b.watch_port is None else b.watch_port, watch_group=ofp.OFPG_ANY)
        for b in group.buckets
    ]


def _group_mod(group: GroupRule, command: int) -> parser.OFPGroupMod:
    return parser.OFPGroupMod(PROTOCOL, command, _GROUP_TYPES[group.type], group.group_id, _buckets_to_of(group))


def group_add(group: GroupRule) -> parser.OFPGroupMod:
    return _group_mod(group, ofp.OFPGC_ADD)


def group_modify(group: GroupRule) -> parser.OFPGroupMod:
    return _group_mod(group, ofp.OFPGC_MODIFY)


def group_delete(group_id: int) -> parser.OFPGroupMod:
    return parser.OFPGroupMod(PROTOCOL, ofp.OFPGC_DELETE, ofp.OFPGT_ALL, group_id, [])


def group_from_desc(desc) -> GroupRule:
    if desc.type not in _GROUP_NAMES:
        raise TranslationError(f"unsupported group type {desc.type}")
    buckets = tuple(Bucket(tuple(_action_from_of(a) for a in b.actions),
                           None if desc.type != ofp.OFPGT_FF or b.watch_port == ofp.OFPP_ANY else b.watch_port)
                    for b in desc.buckets)
    return GroupRule(group_id=desc.group_id, type=_GROUP_NAMES[desc.type], buckets=buckets)


def _meter_mod(meter: Meter, command: int) -> parser.OFPMeterMod:
    band = parser.OFPMeterBandDrop(rate=meter.rate_pps, burst_size=meter.burst)
    return parser.OFPMeterMod(PROTOCOL, command=command, flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST,
                              meter_id=meter.meter_id, bands=[band])


def meter_add(meter: Meter) -> parser.OFPMeterMod:
    return _meter_mod(meter, ofp.OFPMC_ADD)


def meter_modify(meter: Meter) -> parser.OFPMeterMod:
    return _meter_mod(meter, ofp.OFPMC_MODIFY)


def meter_delete(meter_id: int) -> parser.OFPMeterMod:
    return parser.OFPMeterMod(PROTOCOL, command=ofp.OFPMC_DELETE, flags=0, meter_id=meter_id, bands=[])


def meter_from_config(config) -> Meter:
    bands = [b for b in config.bands if isinstance(b, parser.OFPMeterBandDrop)]
    if len(bands) != 1 or not config.flags & ofp.OFPMF_PKTPS:
        raise TranslationError(f"meter {config.meter_id}: not a single packets-per-second drop band")
    return Meter(config.meter_id, bands[0].rate, bands[0].burst_size)
