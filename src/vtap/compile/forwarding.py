"""Base forwarding: how originals travel, compiled from the network view.

Proactive and loop-free on any topology:
- unicast by destination MAC along a per-destination shortest-path tree (see
  `NetworkView.tree_toward`), installed on every switch once the host is known,
  through a fast-failover group per destination switch: the tree's next hop, and a
  loop-free alternate (`NetworkView.backup_toward`) the switch takes by itself the
  moment the next hop's port goes down — no packet waits for the controller to hear
  of the failure and recompute (copies in transit use the same groups);
- ARP and IPv6 neighbour discovery (solicitations and advertisements) go to the
  controller whatever their destination, so that it learns every address a host
  uses whatever the host sent first; it answers them from its host table or relays
  them to edge ports itself, so they never cross inter-switch links as a broadcast;
- other broadcast and multicast leaves only where it cannot loop: out of edge ports, and
  along one spanning tree of proven links; never out of a port whose role is not known
  yet (see control/roles.py);
- frames to the bridge group addresses of 802.1D (01:80:c2:00:00:00-0f: STP, LACP,
  pause; LLDP apart) are dropped where they enter: a bridge never forwards them;
- a frame from an unknown source on an edge port goes to the controller, which learns
  the host (or its move) from it; every frame from a port whose role is not known yet
  goes to the controller too, and only there (it notes the sender, forwards nothing);
- unicast that no rule knows yet goes to the controller, which delivers it, so the
  first packets after a host appears are not lost while its rules go in.
"""

from __future__ import annotations


from vtap.compile.pipeline import (
    BRIDGE_GROUP,
    COOKIE_FORWARDING,
    COPY_VID_MASK,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV6,
    ETH_TYPE_LLDP,
    FORWARD_GROUP_BASE,
    GROUP_ID_MASK,
    ICMPV6_NEIGHBOR_ADVERT,
    ICMPV6_NEIGHBOR_SOLICIT,
    IPPROTO_ICMPV6,
    METER_LLDP,
    METER_LLDP_UNKNOWN,
    METER_PACKET_IN,
    MULTICAST_BIT,
    PRIO_BRIDGE_GROUP,
    PRIO_DEFAULT,
    PRIO_FLOOD,
    PRIO_HOST_DST,
    PRIO_KNOWN_HOST,
    PRIO_LLDP,
    PRIO_LLDP_LINK,
    PRIO_NEIGHBOUR,
    PRIO_RESERVED_VID,
    PRIO_TRANSIT,
    PRIO_UNKNOWN_SOURCE,
    TABLE_CLASSIFY,
    TABLE_FORWARD,
    TABLE_TAP,
    allocate_id,
    stable_hash,
)
from vtap.model.network import OFPP_CONTROLLER
from vtap.model.rules import Bucket, FlowRule, GroupAction, GroupRule, Meter, Output, SwitchRules, match
from vtap.model.view import NetworkView


def _flow(table: int, priority: int, m, actions=(), goto=None, meter=None) -> FlowRule:
    return FlowRule(table, priority, m, tuple(actions), goto, COOKIE_FORWARDING, meter)


TO_CONTROLLER = (Output(OFPP_CONTROLLER),)


def packet_in_meter(rate_pps: int) -> Meter | None:
    """The meter that caps frames sent to the controller by host traffic (not LLDP), so a
    host spraying unknown destinations or ARP cannot flood the controller's channel."""
    return Meter(METER_PACKET_IN, rate_pps, max(1, rate_pps // 10)) if rate_pps > 0 else None


def forward_group_ids(view: NetworkView) -> dict[int, int]:
    """The forwarding group id of each destination switch, the same on every switch."""
    ids: dict[int, int] = {}
    taken: set[int] = set()
    for dst in sorted(view.devices):
        ids[dst] = allocate_id(FORWARD_GROUP_BASE, GROUP_ID_MASK, stable_hash(f"forward {dst:016x}"), taken)
        taken.add(ids[dst])
    return ids


def forward_groups(view: NetworkView, dpid: int, ids: dict[int, int]) -> dict[int, GroupRule]:
    """{destination switch: its fast-failover group on `dpid`}: the next hop, then the
    loop-free alternate where there is one; each bucket live while its port is up."""
    out: dict[int, GroupRule] = {}
    for dst in sorted(view.devices):
        hop = view.tree_toward(dst).get(dpid)
        if dst == dpid or hop is None:
            continue
        buckets = [Bucket((Output(hop[0]),), hop[0])]
        backup = view.backup_toward(dst).get(dpid)
        if backup is not None:
            buckets.append(Bucket((Output(backup[0]),), backup[0]))
        out[dst] = GroupRule(ids[dst], "ff", tuple(buckets))
    return out


def compile_switch(view: NetworkView, dpid: int, packet_in_rate: int = 0,
                   ids: dict[int, int] | None = None) -> SwitchRules:
    """Every base-forwarding flow and group one switch should hold."""
    ids = ids if ids is not None else forward_group_ids(view)
    groups = forward_groups(view, dpid, ids)
    meter = METER_PACKET_IN if packet_in_rate > 0 else None
    flows: list[FlowRule] = [
        _flow(TABLE_CLASSIFY, PRIO_LLDP, match(eth_type=ETH_TYPE_LLDP), TO_CONTROLLER, meter=METER_LLDP),
        # Copies travel with a reserved VLAN id, accepted only from inter-switch ports
        # (TAP compilation adds those rules above this one): from anywhere else such a
        # frame is a forgery and goes nowhere, whatever the controller believes about the port.
        _flow(TABLE_CLASSIFY, PRIO_RESERVED_VID, match(vlan_vid=COPY_VID_MASK)),
        _flow(TABLE_CLASSIFY, PRIO_BRIDGE_GROUP, match(eth_dst=BRIDGE_GROUP)),
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
        # A proven link's LLDP keeps it alive: never dropped by the meter that holds a
        # host spraying LLDP on an edge port.
        flows.append(_flow(TABLE_CLASSIFY, PRIO_LLDP_LINK, match(in_port=port, eth_type=ETH_TYPE_LLDP), TO_CONTROLLER))
    # Edge ports: a source without its known-host rule is new (or moved). Ports not known
    # yet: everything, for the controller to note; the pipeline never forwards it.
    for port in sorted(set(edge_ports) | set(view.unknown_ports_of(dpid))):
        flows.append(_flow(TABLE_CLASSIFY, PRIO_UNKNOWN_SOURCE, match(in_port=port), TO_CONTROLLER, meter=meter))
    for port in view.unknown_ports_of(dpid):
        flows.append(_flow(TABLE_CLASSIFY, PRIO_LLDP_LINK, match(in_port=port, eth_type=ETH_TYPE_LLDP), TO_CONTROLLER,
                           meter=METER_LLDP_UNKNOWN))

    for host in view.hosts.values():
        if host.dpid == dpid and host.port in edge_ports:
            flows.append(
                _flow(TABLE_CLASSIFY, PRIO_KNOWN_HOST, match(in_port=host.port, eth_src=host.mac), goto=TABLE_TAP)
            )
        action = _toward_host(view, dpid, host, groups)
        if action is not None:
            flows.append(_flow(TABLE_FORWARD, PRIO_HOST_DST, match(eth_dst=host.mac), [action]))

    tree_ports = {p for (d, p) in view.broadcast_tree if d == dpid}
    flood_ports = sorted(tree_ports | set(edge_ports))
    for in_port in flood_ports:
        outs = [Output(p) for p in flood_ports if p != in_port]
        flows.append(_flow(TABLE_FORWARD, PRIO_FLOOD, match(in_port=in_port, eth_dst=MULTICAST_BIT), outs))
    return SwitchRules(frozenset(flows), frozenset(groups.values()))


def _toward_host(view: NetworkView, dpid: int, host, groups: dict[int, GroupRule]) -> Output | GroupAction | None:
    """What sends frames to `host` from `dpid`: its own port at its edge switch, else the
    forwarding group of that switch; None when the host is unreachable from here.

    A host whose port is down, or back up and not yet known again, keeps its rules (its
    edge switch drops what it cannot deliver): a host's link flapping then changes its
    own switch's rules only, not every switch's. Only a port that faces a switch never
    gets a host's frames (unicast out of a port not yet known cannot loop: a switch
    behind it sends what arrives on a port it does not know yet to the controller)."""
    edge = view.devices.get(host.dpid)
    if edge is None or edge.port(host.port) is None or host.port in view.link_ports.get(host.dpid, ()):
        return None
    if dpid == host.dpid:
        return Output(host.port)
    group = groups.get(host.dpid)
    return GroupAction(group.group_id) if group else None


def compile_forwarding(view: NetworkView, packet_in_rate: int = 0) -> dict[int, SwitchRules]:
    """Base-forwarding flows and groups for every connected switch."""
    ids = forward_group_ids(view)
    return {dpid: compile_switch(view, dpid, packet_in_rate, ids) for dpid in sorted(view.devices)}
