"""Remote collectors: a policy's copies in a GRE, ERSPAN, VXLAN or Geneve tunnel (pure).

The tunnel starts at the tap point's switch, in one of its flow-based tunnel ports (one
per encapsulation, `<bridge>-<kind>`, see control/tunnels.py): the tap group's bucket
sets the outer destination (the collector) and the key (the policy's `tunnel_key`, by
default its id: GRE key, ERSPAN session id, VNI), and outputs the copy to the port. The
copy is the original frame, byte for byte (no copy VLAN tag).

Open vSwitch's userspace datapath encapsulates it itself ("native tunneling") and then
hands the outer packet to the bridge that owns the route to the collector, as if it had
come in on that bridge's LOCAL port. vtap routes every switch's tunnels out of its own
bridge (a route per collector, chosen by a packet mark that each switch's buckets set:
switches sharing one ovs-vswitchd share one routing table), so the outer packet leaves
the tap switch and crosses the fabric as ordinary traffic to the collector (or to the
gateway `monitor_mac` names), forwarded — and failed over — like any other: table 0 takes
it from LOCAL straight to forwarding (a copy is never copied again).
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass

from vtap.compile.pipeline import COOKIE_COPY, PRIO_TUNNEL_OUT, TABLE_CLASSIFY, TABLE_FORWARD
from vtap.model.network import OFPP_LOCAL, Device
from vtap.model.policy import TUNNEL_KEY_MAX, Tap, TapSpec
from vtap.model.rules import Bucket, FlowRule, Output, SetField, match
from vtap.model.view import NetworkView


def tunnel_kind(spec: TapSpec) -> str:
    """Which of a switch's tunnel ports carries the policy's copies."""
    return f"erspan{spec.erspan_version or 1}" if spec.transport == "erspan" else spec.transport


def tunnel_key(tap: Tap) -> int:
    return tap.spec.tunnel_key if tap.spec.tunnel_key is not None else tap.id


def key_problem(tap: Tap) -> str | None:
    """Why the policy's default key (its id) does not fit its header, if it does not."""
    top = TUNNEL_KEY_MAX[tap.spec.transport]
    if tunnel_key(tap) > top:
        return f"the policy's id {tap.id} is beyond {tap.spec.transport}'s keys (0-{top}): set tunnel_key"
    return None


def route_mark(dpid: int) -> int:
    """The packet mark a switch's tunnel copies carry, which selects its routes."""
    return 0x80000000 | (dpid & 0x7FFFFFFF)


def tunnel_bucket(spec: TapSpec, key: int, port: int, dpid: int) -> Bucket:
    """The tap group's bucket that sends the copy into tunnel port `port`."""
    field = "tun_ipv4_dst" if ipaddress.ip_address(spec.monitor_ip).version == 4 else "tun_ipv6_dst"
    return Bucket((SetField(field, spec.monitor_ip), SetField("tunnel_id", key), SetField("pkt_mark", route_mark(dpid)),
                   Output(port)))


def endpoint_rule(device: Device) -> FlowRule | None:
    """Table 0 of a switch that starts tunnels: the encapsulated copies, which come back in
    on its LOCAL port from the bridge's own address, go straight to forwarding."""
    local = device.bridge
    if local is None:
        return None
    return FlowRule(TABLE_CLASSIFY, PRIO_TUNNEL_OUT, match(in_port=OFPP_LOCAL, eth_src=local.hw_addr), (), TABLE_FORWARD,
                    COOKIE_COPY)


@dataclass(frozen=True)
class SwitchTunnels:
    """What one switch's userspace datapath needs to start vtap's tunnels: its tunnel
    ports (named after its bridge), a source address on its bridge (LOCAL) device, and
    per collector a route out of its own bridge (chosen by its packet mark) and the MAC
    of the next hop (the collector, or the gateway the policy names)."""

    bridge: str
    source: str  # address/prefix
    mark: int
    neighbours: frozenset[tuple[str, str]]  # (collector IP, next-hop MAC)


def source_address(dpid: int, source_net: ipaddress.IPv4Network) -> str:
    """A switch's tunnel source address, with `source_net`'s prefix (the collectors, or
    their gateways, are on it): from its upper half, by a hash of the dpid (one address
    per switch, whatever else joins), away from the hosts numbered from the bottom."""
    offset = 1 + zlib.crc32(dpid.to_bytes(8, "big")) % max(1, source_net.num_addresses // 2 - 2)
    return f"{source_net.broadcast_address - offset}/{source_net.prefixlen}"


def tunnel_plan(view: NetworkView, taps: list[Tap], source_net: ipaddress.IPv4Network) -> dict[int, SwitchTunnels]:
    """Every connected switch's tunnel set-up while some enabled tunnel policy exists:
    ports on every switch (a tap point may be anywhere), a neighbour entry per collector
    whose next hop is known. None exists: no switch needs tunnel ports (they go)."""
    if not any(t.spec.enabled and t.spec.tunnel for t in taps):
        return {}
    neighbours = set()
    for tap in taps:
        s = tap.spec
        if not (s.enabled and s.tunnel):
            continue
        hop = view.hosts.get(s.monitor_mac) if s.monitor_mac else view.host_by_ip(s.monitor_ip)
        if hop is not None:
            neighbours.add((s.monitor_ip, hop.mac))
    plan = {}
    for dpid, device in view.devices.items():
        local = device.bridge
        if local is not None:
            plan[dpid] = SwitchTunnels(local.name, source_address(dpid, source_net), route_mark(dpid), frozenset(neighbours))
    return plan
