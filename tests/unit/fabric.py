"""A fake OpenFlow fabric for unit tests: runs compiled rules on packets, hop by hop.

Packets are dicts of OXM field values. Semantics follow OpenFlow 1.3 as vtap uses it:
highest-priority match per table, apply-actions in order, goto-table, table-miss drops.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from vtap.lab.topos import VtapTopo, host_params
from vtap.model.network import OFPP_CONTROLLER, Device, Host, Link, Port
from vtap.model.rules import FlowRule, GroupAction, GroupRule, Output, PopVlan, PushVlan, SetField, SwitchRules
from vtap.model.view import NetworkView


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
    hops: int = 0


def push_vlan(pkt: dict) -> dict:
    out = dict(pkt)
    out["vlans"] = [None] + list(pkt.get("vlans", []))
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
    return out


def _fields(pkt: dict, in_port: int) -> dict:
    """The packet as a switch matches it: the outer VLAN becomes vlan_vid."""
    out = {k: v for k, v in pkt.items() if k != "vlans"}
    out["in_port"] = in_port
    if pkt.get("vlans"):
        out["vlan_vid"] = 0x1000 | pkt["vlans"][0]
    return out


class Fabric:
    """Switches hold flows (and groups); frames hop over the view's links."""

    def __init__(self, view: NetworkView, rules: dict):
        self.view = view
        self.rules = {d: (r.flows if isinstance(r, SwitchRules) else r) for d, r in rules.items()}
        self.groups: dict[int, dict[int, GroupRule]] = {
            d: {g.group_id: g for g in r.groups} for d, r in rules.items() if isinstance(r, SwitchRules)
        }
        self.peer = {(l.src_dpid, l.src_port): (l.dst_dpid, l.dst_port) for l in view.links}

    def lookup(self, dpid: int, table: int, pkt: dict) -> FlowRule | None:
        best = None
        for rule in self.rules[dpid]:
            if rule.table != table:
                continue
            if all(name in pkt and _matches(value, pkt[name]) for name, value in rule.match):
                if best is None or rule.priority > best.priority:
                    best = rule
        return best

    def inject(self, dpid: int, in_port: int, pkt: dict, max_hops: int = 64) -> Trace:
        trace = Trace()
        queue = [(dpid, in_port, dict(pkt))]
        while queue:
            trace.hops += 1
            if trace.hops > max_hops:
                raise AssertionError("packet loops")
            d, p, frame = queue.pop(0)
            table = 0
            while table is not None:
                rule = self.lookup(d, table, _fields(frame, p))
                if rule is None:
                    break
                frame = self._apply(d, p, frame, rule.actions, trace, queue)
                table = rule.goto
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
                    trace.frames.append((d, action.port, dict(frame)))
            elif isinstance(action, GroupAction):
                for bucket in self.groups[d][action.group_id].buckets:
                    self._apply(d, in_port, dict(frame), bucket.actions, trace, queue)  # a clone per bucket
            elif isinstance(action, PushVlan):
                frame = push_vlan(frame)
            elif isinstance(action, PopVlan):
                frame = pop_vlan(frame)
            elif isinstance(action, SetField):
                frame = set_field(frame, action.field, action.value)
        return frame
