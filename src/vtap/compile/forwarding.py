"""Base forwarding: how originals travel, compiled from the network view.

Proactive and loop-free on any topology:
- unicast by destination MAC along a per-destination shortest-path tree (see
  `NetworkView.tree_toward`), installed on every switch once the host is known;
- ARP and IPv6 neighbour discovery (solicitations and advertisements) go to the
  controller whatever their destination, so that it learns every address a host
  uses whatever the host sent first; it answers them from its host table or relays
  them to edge ports itself, so they never cross inter-switch links as a broadcast;
- other broadcast and multicast is flooded on one spanning tree;
- a frame from an unknown source on an edge port goes to the controller, which learns
  the host (or its move) from it;
- unicast that no rule knows yet goes to the controller, which delivers it, so the
  first packets after a host appears are not lost while its rules go in.
"""

from __future__ import annotations

from vtap.compile.pipeline import (
    COOKIE_FORWARDING,
    COPY_VID_MASK,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV6,
    ETH_TYPE_LLDP,
    ICMPV6_NEIGHBOR_ADVERT,
    ICMPV6_NEIGHBOR_SOLICIT,
    IPPROTO_ICMPV6,
    METER_PACKET_IN,
    MULTICAST_BIT,
    PRIO_NEIGHBOUR,
    PRIO_RESERVED_VID,
    PRIO_DEFAULT,
    PRIO_FLOOD,
    PRIO_HOST_DST,
    PRIO_KNOWN_HOST,
    PRIO_LLDP,
    PRIO_TRANSIT,
    PRIO_UNKNOWN_SOURCE,
    TABLE_CLASSIFY,
    TABLE_FORWARD,
    TABLE_TAP,
)
from vtap.model.network import OFPP_CONTROLLER
from vtap.model.rules import FlowRule, Meter, Output, match
from vtap.model.view import NetworkView


def _flow(table: int, priority: int, m, actions=(), goto=None, meter=None) -> FlowRule:
    return FlowRule(table, priority, m, tuple(actions), goto, COOKIE_FORWARDING, meter)


TO_CONTROLLER = (Output(OFPP_CONTROLLER),)


def packet_in_meter(rate_pps: int) -> Meter | None:
    """The meter that caps frames sent to the controller by host traffic (not LLDP), so a
    host spraying unknown destinations or ARP cannot flood the controller's channel."""
    return Meter(METER_PACKET_IN, rate_pps, max(1, rate_pps // 10)) if rate_pps > 0 else None


def compile_switch(view: NetworkView, dpid: int, packet_in_rate: int = 0) -> frozenset[FlowRule]:
    """Every base-forwarding flow one switch should hold."""
    meter = METER_PACKET_IN if packet_in_rate > 0 else None
    flows: list[FlowRule] = [
        _flow(TABLE_CLASSIFY, PRIO_LLDP, match(eth_type=ETH_TYPE_LLDP), TO_CONTROLLER),
        # Copies travel with a reserved VLAN id, accepted only from inter-switch ports
        # (TAP compilation adds those rules above this one): from anywhere else such a
        # frame is a forgery and goes nowhere, whatever the controller believes about the port.
        _flow(TABLE_CLASSIFY, PRIO_RESERVED_VID, match(vlan_vid=COPY_VID_MASK)),
        _flow(TABLE_TAP, PRIO_DEFAULT, match(), goto=TABLE_FORWARD),
        _flow(TABLE_FORWARD, PRIO_NEIGHBOUR, match(eth_type=ETH_TYPE_ARP), TO_CONTROLLER, meter=meter),
        *(
            _flow(TABLE_FORWARD, PRIO_NEIGHBOUR, match(eth_type=ETH_TYPE_IPV6, ip_proto=IPPROTO_ICMPV6, icmpv6_type=t),
                  TO_CONTROLLER, meter=meter)
            for t in (ICMPV6_NEIGHBOR_SOLICIT, ICMPV6_NEIGHBOR_ADVERT)
        ),
        # Unicast to a host whose rules are not in yet: the controller delivers it.
        _flow(TABLE_FORWARD, PRIO_DEFAULT, match(), TO_CONTROLLER, meter=meter),
    ]
    link_ports = view.link_ports.get(dpid, frozenset())
    edge_ports = view.edge_ports(dpid)

    for port in sorted(link_ports):
        # Traffic in transit was tapped where it entered the fabric: never again.
        flows.append(_flow(TABLE_CLASSIFY, PRIO_TRANSIT, match(in_port=port), goto=TABLE_FORWARD))
    for port in edge_ports:
        flows.append(_flow(TABLE_CLASSIFY, PRIO_UNKNOWN_SOURCE, match(in_port=port), TO_CONTROLLER, meter=meter))

    for host in view.hosts.values():
        if host.dpid == dpid and host.port in edge_ports:
            flows.append(
                _flow(TABLE_CLASSIFY, PRIO_KNOWN_HOST, match(in_port=host.port, eth_src=host.mac), goto=TABLE_TAP)
            )
        out = _port_toward_host(view, dpid, host)
        if out is not None:
            flows.append(_flow(TABLE_FORWARD, PRIO_HOST_DST, match(eth_dst=host.mac), [Output(out)]))

    tree_ports = {p for (d, p) in view.broadcast_tree if d == dpid}
    flood_ports = sorted(tree_ports | set(edge_ports))
    for in_port in flood_ports:
        outs = [Output(p) for p in flood_ports if p != in_port]
        flows.append(_flow(TABLE_FORWARD, PRIO_FLOOD, match(in_port=in_port, eth_dst=MULTICAST_BIT), outs))
    return frozenset(flows)


def _port_toward_host(view: NetworkView, dpid: int, host) -> int | None:
    """Output port on `dpid` for frames to `host`: its own port at its edge switch,
    else the next hop toward that switch; None when the host is unreachable from here."""
    edge = view.devices.get(host.dpid)
    if edge is None or host.port not in view.edge_ports(host.dpid):
        return None
    if dpid == host.dpid:
        return host.port
    hop = view.tree_toward(host.dpid).get(dpid)
    return hop[0] if hop else None


def compile_forwarding(view: NetworkView, packet_in_rate: int = 0) -> dict[int, frozenset[FlowRule]]:
    """Base-forwarding flows for every connected switch."""
    return {dpid: compile_switch(view, dpid, packet_in_rate) for dpid in sorted(view.devices)}
