"""A fake OpenFlow fabric for unit tests: runs compiled rules on packets, hop by hop.

Packets are dicts of OXM field values. Semantics follow OpenFlow 1.3 as vtap uses it:
highest-priority match per table, apply-actions in order, goto-table, table-miss drops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vtap.lab.topos import VtapTopo, host_params
from vtap.model.network import OFPP_CONTROLLER, Device, Host, Link, Port
from vtap.model.rules import FlowRule, Output
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


def _matches(rule_value, value) -> bool:
    if isinstance(rule_value, tuple):
        v, m = rule_value
        if isinstance(v, str):  # MAC with mask
            vi, mi, xi = (int(x.replace(":", ""), 16) for x in (v, m, value))
            return xi & mi == vi & mi
        return value & m == v & m
    return rule_value == value


@dataclass
class Trace:
    delivered: list[tuple[int, int]] = field(default_factory=list)  # (dpid, edge port)
    to_controller: list[tuple[int, int]] = field(default_factory=list)  # (dpid, in_port)
    hops: int = 0


class Fabric:
    def __init__(self, view: NetworkView, rules: dict[int, frozenset[FlowRule]]):
        self.view = view
        self.rules = rules
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
        queue = [(dpid, in_port)]
        while queue:
            trace.hops += 1
            if trace.hops > max_hops:
                raise AssertionError("packet loops")
            d, p = queue.pop(0)
            table = 0
            fields = dict(pkt, in_port=p)
            while table is not None:
                rule = self.lookup(d, table, fields)
                if rule is None:
                    break
                for action in rule.actions:
                    if isinstance(action, Output):
                        if action.port == OFPP_CONTROLLER:
                            trace.to_controller.append((d, p))
                        elif (d, action.port) in self.peer:
                            queue.append(self.peer[(d, action.port)])
                        else:
                            trace.delivered.append((d, action.port))
                table = rule.goto
        return trace
