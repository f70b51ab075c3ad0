"""A fake OpenFlow fabric for unit tests: runs compiled rules on packets, hop by hop.

Packets are dicts of OXM field values (and `size`, the frame's length in bytes).
Semantics follow OpenFlow 1.3 as vtap uses it: highest-priority match per table,
apply-actions in order, write-actions run when the pipeline ends, goto-table,
table-miss drops; and Open vSwitch's extensions vtap uses: registers (zero at each
switch), resubmit, multipath (a symmetric hash of its own: which flows it picks is not
OVS's, that it is symmetric and per flow is), truncating output. Meters pass everything.
Like Faucet's fakeoftable it is strict: what a real switch would reject, or what would
make a lookup ambiguous, fails the test instead of passing silently — including
actions in a group bucket that OVS would silently leave out (a bucket is an action set
there: no hashing, no truncation, no controller action; resubmit only last).
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from vtap.lab.topos import VtapTopo, host_params
from vtap.model.network import OFPP_CONTROLLER, Device, Host, Link, Port
from vtap.model.rules import (
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
    SwitchRules,
    ToController,
)
from vtap.model.view import NetworkView
from vtap.openflow import translate
from vtap.openflow.translate import PROTOCOL


def view_from_topo(topo: VtapTopo, *, hosts_known: bool = True, down: set[tuple[int, int]] = frozenset()) -> NetworkView:
    """The view a controller would build for a Mininet Topo (no Mininet run needed)."""
    dpid = {n: int(topo.nodeInfo(n)["dpid"], 16) for n in topo.switches()}
    ports: dict[int, list[Port]] = {d: [] for d in dpid.values()}
    links = set()
    hosts = {}
    for a, b in topo.links():
        pa, pb = topo.port(a, b)
        for node, port in ((a, pa), (b, pb)):
            if node in dpid:
                d = dpid[node]
                ports[d].append(Port(port, f"{node}-eth{port}", f"02:00:00:00:{d % 256:02x}:{port:02x}", (d, port) not in down))
        if a in dpid and b in dpid:
            links.add(Link(dpid[a], pa, dpid[b], pb))
            links.add(Link(dpid[b], pb, dpid[a], pa))
        elif hosts_known:
            h, s, ps = (a, b, pb) if b in dpid else (b, a, pa)
            i = int(h[1:])
            params = host_params(i)
            hosts[params["mac"]] = Host(params["mac"], (params["ip"].split("/")[0],), dpid[s], ps)
    links = {l for l in links if (l.src_dpid, l.src_port) not in down and (l.dst_dpid, l.dst_port) not in down}
    devices = {d: Device(d, tuple(sorted(p, key=lambda x: x.port_no)), 0.0) for d, p in ports.items()}
    return NetworkView(devices=devices, links=frozenset(links), hosts=hosts)


def _as_int(x) -> int:
    if isinstance(x, int):
        return x
    if len(x) == 17 and x.count(":") == 5:
        return int(x.replace(":", ""), 16)
    return int(ipaddress.ip_address(x))


def _matches(rule_value, value) -> bool:
    if isinstance(rule_value, tuple):
        v, m = (_as_int(x) for x in rule_value)
        return _as_int(value) & m == v & m
    return rule_value == value


@dataclass
class Trace:
    delivered: list[tuple[int, int]] = field(default_factory=list)  # (dpid, edge port)
    frames: list[tuple[int, int, dict]] = field(default_factory=list)  # (dpid, port, packet as delivered)
    to_controller: list[tuple[int, int]] = field(default_factory=list)  # (dpid, in_port)
    buckets: list[tuple[int, int, int]] = field(default_factory=list)  # (dpid, group id, bucket index) each run
    captured: list[tuple[int, int, int, dict]] = field(default_factory=list)  # (dpid, in_port, max_len, packet) to a capture
    hops: int = 0


def push_vlan(pkt: dict) -> dict:
    out = dict(pkt)
    out["vlans"] = [None] + list(pkt.get("vlans", []))
    if "size" in out:
        out["size"] += 4
        out["pushed"] = out.get("pushed", 0) + 1
    return out


def set_field(pkt: dict, name: str, value) -> dict:
    out = dict(pkt)
    if name == "vlan_vid":
        out["vlans"] = [value & 0xFFF] + list(pkt.get("vlans", [])[1:])
    else:
        out[name] = value
    return out


def pop_vlan(pkt: dict) -> dict:
    out = dict(pkt)
    out["vlans"] = list(pkt.get("vlans", []))[1:]
    if "size" in out:
        out["size"] -= 4
        out["pushed"] = out.get("pushed", 0) - 1
    return out


def flow_hash(pkt: dict, basis: int) -> int:
    """A symmetric hash of a packet's IP addresses, protocol and ports (as OVS's
    `symmetric_l3l4+udp`: both directions of a flow hash alike)."""
    ends = sorted([(str(pkt.get("ipv4_src", pkt.get("ipv6_src"))), _port(pkt, "src")),
                   (str(pkt.get("ipv4_dst", pkt.get("ipv6_dst"))), _port(pkt, "dst"))])
    return zlib.crc32(repr((basis, ends, pkt.get("ip_proto"))).encode())


def _port(pkt: dict, end: str) -> int | None:
    for proto in ("tcp", "udp", "sctp"):
        if f"{proto}_{end}" in pkt:
            return pkt[f"{proto}_{end}"]
    return None


def multipath(pkt: dict, mp: Multipath) -> dict:
    h = flow_hash(pkt, mp.basis)
    if mp.algorithm == "modulo_n":
        link = h % mp.links
    else:  # hrw: the link with the highest weight
        link = max(range(mp.links), key=lambda i: (zlib.crc32(f"{h} {i}".encode()), i))
    out = dict(pkt)
    mask = ((1 << mp.nbits) - 1) << mp.ofs
    out[mp.dst] = (out.get(mp.dst, 0) & ~mask) | (link << mp.ofs)
    return out


BUCKET_ACTIONS = (SetField, PushVlan, PopVlan, GroupAction, Output, Resubmit)


def _fields(pkt: dict, in_port: int) -> dict:
    """The packet as a switch matches it: the outer VLAN becomes vlan_vid."""
    out = {k: v for k, v in pkt.items() if k != "vlans"}
    out["in_port"] = in_port
    if pkt.get("vlans"):
        out["vlan_vid"] = 0x1000 | pkt["vlans"][0]
    return out


class Fabric:
    """Switches hold flows (and groups); frames hop over the view's links.

    Rules a switch would refuse fail when the fabric is built: a goto that does not go
    to a later table (OpenFlow's OFPBIC_BAD_TABLE_ID; here it would loop), a group id
    defined twice (OFPGMFC_GROUP_EXISTS), a group action to a group that does not exist
    (OFPBAC_BAD_OUT_GROUP), and two different flows under one key (table, priority,
    match), where a switch would silently keep only the last one written.
    """

    def __init__(self, view: NetworkView, rules: Mapping[int, SwitchRules | Iterable[FlowRule]]):
        self.view = view
        self.tables: dict[int, dict[int, list[FlowRule]]] = {}
        self.groups: dict[int, dict[int, GroupRule]] = {}
        self.down: set[tuple[int, int]] = set()  # (dpid, port) whose link is down: fast-failover buckets watching it are dead
        for d, r in rules.items():
            self._install(d, *((r.flows, r.groups) if isinstance(r, SwitchRules) else (r, ())))
        self.peer = {(l.src_dpid, l.src_port): (l.dst_dpid, l.dst_port) for l in view.links}

    @classmethod
    def from_messages(cls, view: NetworkView, messages: Mapping[int, Sequence[ofproto_parser.MsgBase]]) -> Fabric:
        """The fabric after each switch took these FlowMod and GroupMod adds (as translate.py
        writes them) into empty tables: each message is serialized and read back from its
        bytes into rule values with translate.py's readers, so the message path is tested
        without OVS."""
        fab = cls(view, {})
        for d, msgs in messages.items():
            flows: list[FlowRule] = []
            groups: list[GroupRule] = []
            for msg in msgs:
                msg.set_xid(0)
                msg.serialize()
                buf = bytes(msg.buf)
                msg_type = ofproto_parser.header(buf)[1]
                if msg_type == ofp.OFPT_FLOW_MOD:
                    flows.append(_flow_from_wire(buf))
                elif msg_type == ofp.OFPT_GROUP_MOD:
                    groups.append(_group_from_wire(buf))
                else:
                    raise ValueError(f"switch {d:016x}: only flow and group adds are modelled, not {type(msg).__name__}")
            fab._install(d, flows, groups)
        return fab

    def _install(self, d: int, flows: Iterable[FlowRule], groups: Iterable[GroupRule]) -> None:
        """Give switch `d` these flows and groups, refusing what the class docstring lists."""
        by_id: dict[int, GroupRule] = {}
        for g in groups:
            if g.group_id in by_id:
                raise AssertionError(f"switch {d:016x}: group id {g.group_id:#x} defined twice: {by_id[g.group_id]} / {g}")
            by_id[g.group_id] = g
        by_key: dict[tuple, FlowRule] = {}
        for f in flows:
            if f.goto is not None and f.goto <= f.table:
                raise AssertionError(f"switch {d:016x} table {f.table}: goto must go to a later table: {f}")
            if by_key.setdefault(f.key, f) != f:
                raise AssertionError(f"switch {d:016x} table {f.table}: two flows under one key: {by_key[f.key]} / {f}")
        for g in by_id.values():
            for b in g.buckets:
                odd = [a for a in b.actions if not isinstance(a, BUCKET_ACTIONS)]
                if odd:
                    raise AssertionError(f"switch {d:016x}: OVS would leave {odd} out of a bucket of {g}")
                if any(isinstance(a, Resubmit) for a in b.actions[:-1]) or (
                        isinstance(b.actions[-1:] and b.actions[-1], Resubmit)
                        and any(isinstance(a, (Output, GroupAction)) for a in b.actions)):
                    raise AssertionError(f"switch {d:016x}: a bucket's resubmit must be its only and last move: {g}")
        users = [(str(f), (*f.actions, *f.write)) for f in by_key.values()] + [
            (str(g), b.actions) for g in by_id.values() for b in g.buckets]
        for user, actions in users:
            for a in actions:
                if isinstance(a, GroupAction) and a.group_id not in by_id:
                    raise AssertionError(f"switch {d:016x}: group {a.group_id:#x} does not exist, used by {user}")
        tables: dict[int, list[FlowRule]] = {}
        for f in by_key.values():
            tables.setdefault(f.table, []).append(f)
        self.tables[d] = tables
        self.groups[d] = by_id

    def lookup(self, dpid: int, table: int, pkt: dict) -> FlowRule | None:
        """The entry `pkt` meets in `table`. Two entries of the highest matching priority
        fail: a switch may apply either, and compile/regions.py promises overlapping
        regions differ in priority (their intersection being a region of its own)."""
        hits = [r for r in self.tables.get(dpid, {}).get(table, ())
                if all(name in pkt and _matches(value, pkt[name]) for name, value in r.match)]
        if not hits:
            return None
        best = max(r.priority for r in hits)
        top = [r for r in hits if r.priority == best]
        if len(top) > 1:
            rules = " / ".join(sorted(map(str, top)))
            raise AssertionError(f"switch {dpid:016x} table {table}: {pkt} matches {len(top)} flows of priority {best}: {rules}")
        return top[0]

    def inject(self, dpid: int, in_port: int, pkt: dict, max_hops: int = 64) -> Trace:
        trace = Trace()
        queue = [(dpid, in_port, dict(pkt))]
        while queue:
            trace.hops += 1
            if trace.hops > max_hops:
                raise AssertionError("packet loops")
            d, p, frame = queue.pop(0)
            frame = {k: v for k, v in frame.items() if not k.startswith("reg")}  # registers start at zero
            table = 0
            action_set: list = []
            while table is not None:
                rule = self.lookup(d, table, _fields(frame, p))
                if rule is None:
                    break
                frame = self._apply(d, p, frame, rule.actions, trace, queue)
                action_set.extend(rule.write)
                table = rule.goto
            self._apply(d, p, frame, action_set, trace, queue)
        return trace

    def _apply(self, d: int, in_port: int, frame: dict, actions, trace: Trace, queue: list) -> dict:
        for action in actions:
            if isinstance(action, Output):
                if action.port == OFPP_CONTROLLER:
                    trace.to_controller.append((d, in_port))
                elif action.port == in_port:
                    pass  # OpenFlow drops output to the ingress port unless IN_PORT is used
                elif (d, action.port) in self.peer:
                    queue.append((*self.peer[(d, action.port)], dict(frame)))
                else:
                    trace.delivered.append((d, action.port))
                    trace.frames.append((d, action.port, {k: v for k, v in frame.items()
                                                          if not k.startswith("reg") and k != "pushed"}))
            elif isinstance(action, GroupAction):
                group = self.groups[d][action.group_id]
                buckets = list(enumerate(group.buckets))
                if group.type == "ff":  # the first live bucket only
                    buckets = [(i, b) for i, b in buckets if (d, b.watch_port) not in self.down][:1]
                for i, bucket in buckets:
                    trace.buckets.append((d, group.group_id, i))
                    self._apply(d, in_port, dict(frame), bucket.actions, trace, queue)  # a clone per bucket
            elif isinstance(action, ToController):
                trace.to_controller.append((d, in_port))
                trace.captured.append((d, in_port, action.max_len, dict(frame)))
            elif isinstance(action, PushVlan):
                frame = push_vlan(frame)
            elif isinstance(action, PopVlan):
                frame = pop_vlan(frame)
            elif isinstance(action, SetField):
                frame = set_field(frame, action.field, action.value)
            elif isinstance(action, Multipath):
                frame = multipath(frame, action)
            elif isinstance(action, Resubmit):
                rule = self.lookup(d, action.table, _fields(frame, in_port))
                if rule is not None:
                    frame = self._apply(d, in_port, frame, rule.actions, trace, queue)
            elif isinstance(action, OutputTrunc):
                cut = dict(frame)
                if "size" in cut:  # OVS cuts the packet as it came in, then pushes tags
                    tags = 4 * max(0, cut.get("pushed", 0))
                    cut["size"] = min(cut["size"] - tags, action.max_len) + tags
                self._apply(d, in_port, cut, (Output(action.port),), trace, queue)
            else:
                raise AssertionError(f"the fake switch does not model {action!r}")
        return frame


def _flow_from_wire(buf: bytes) -> FlowRule:
    """A FlowMod add as os-ken parses it, read as the flow stats the reconciler reads."""
    mod = ofproto_parser.msg(PROTOCOL, *ofproto_parser.header(buf), buf)
    if mod.command != ofp.OFPFC_ADD:
        raise ValueError(f"only flow adds are modelled, not command {mod.command}")
    return translate.flow_from_stats(parser.OFPFlowStats(
        table_id=mod.table_id, priority=mod.priority, cookie=mod.cookie, match=mod.match, instructions=mod.instructions))


def _group_from_wire(buf: bytes) -> GroupRule:
    """A GroupMod add read as the group description the reconciler reads (os-ken has no
    GroupMod parser: the header is unpacked here, the buckets by os-ken)."""
    command, type_, group_id = struct.unpack_from(ofp.OFP_GROUP_MOD_PACK_STR, buf, ofp.OFP_HEADER_SIZE)
    if command != ofp.OFPGC_ADD:
        raise ValueError(f"only group adds are modelled, not command {command}")
    buckets, offset = [], ofp.OFP_GROUP_MOD_SIZE
    while offset < len(buf):
        buckets.append(parser.OFPBucket.parser(buf, offset))
        offset += buckets[-1].len
    return translate.group_from_desc(parser.OFPGroupDescStats(type_=type_, group_id=group_id, buckets=buckets))
