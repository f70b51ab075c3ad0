"""What the controller does with a frame sent to it from an edge port.

ARP requests are answered from the host table when the target is known (proxy ARP)
and otherwise relayed to every edge port of the fabric; replies go straight to the
asker.  Broadcast is thereby confined to edge ports and never loops, on any
topology.  Other frames from not-yet-known sources are delivered once to their
destination, so the first packet of a new host is not lost while its rules go in.

Pure: takes the view and the frame, returns the packet-outs to make.
"""

from __future__ import annotations

from dataclasses import dataclass

from os_ken.lib.packet import arp, ethernet, ipv4, ipv6, packet

from vtap.model.view import NetworkView

BROADCAST = "ff:ff:ff:ff:ff:ff"


@dataclass(frozen=True)
class PacketOut:
    dpid: int
    port: int
    data: bytes


@dataclass(frozen=True)
class Decision:
    """The sender to learn (mac, ip or None) and the packet-outs to make."""

    sender_mac: str | None
    sender_ip: str | None
    outs: tuple[PacketOut, ...]


def attached(view: NetworkView, host) -> bool:
    """The host's recorded attachment is a live edge port (not a switch that is gone, a
    port that is down, or a port that turned out to face a switch): a record persisted
    before a restart, or a host that moved in silence, may not be."""
    return host is not None and host.port in view.edge_ports(host.dpid)


def all_edge_ports(view: NetworkView, *, except_at: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    return [
        (dpid, port)
        for dpid in sorted(view.devices)
        for port in view.edge_ports(dpid)
        if (dpid, port) != except_at
    ]


def arp_reply(request: arp.arp, answer_mac: str) -> bytes:
    """The ARP reply the target itself would send."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=request.src_mac, src=answer_mac, ethertype=0x0806))
    pkt.add_protocol(
        arp.arp(
            opcode=arp.ARP_REPLY,
            src_mac=answer_mac,
            src_ip=request.dst_ip,
            dst_mac=request.src_mac,
            dst_ip=request.src_ip,
        )
    )
    pkt.serialize()
    return bytes(pkt.data)


def decide(view: NetworkView, dpid: int, in_port: int, data: bytes) -> Decision:
    """What to do with a frame the switch `dpid` sent up from `in_port`.

    From a port facing another switch (a frame in transit that met a switch whose
    rules are not in yet), nothing is learned and only unicast to a known host is
    delivered: a broadcast there was already relayed where it entered.
    """
    try:
        pkt = packet.Packet(data)
    except Exception:
        return Decision(None, None, ())
    eth = pkt.get_protocol(ethernet.ethernet)
    if eth is None:
        return Decision(None, None, ())
    here = (dpid, in_port)
    if in_port in view.link_ports.get(dpid, ()):
        unicast = not int(eth.dst.split(":")[0], 16) & 1
        return Decision(None, None, _deliver(view, here, eth.dst, data) if unicast else ())
    a = pkt.get_protocol(arp.arp)
    if a is not None:
        return _decide_arp(view, here, eth, a, data)
    ip = pkt.get_protocol(ipv4.ipv4) or pkt.get_protocol(ipv6.ipv6)
    sender_ip = ip.src if ip is not None else None
    return Decision(eth.src, sender_ip, _deliver(view, here, eth.dst, data))


def _deliver(view: NetworkView, here: tuple[int, int], dst_mac: str, data: bytes) -> tuple[PacketOut, ...]:
    if int(dst_mac.split(":")[0], 16) & 1:  # broadcast or multicast
        return tuple(PacketOut(d, p, data) for d, p in all_edge_ports(view, except_at=here))
    host = view.hosts.get(dst_mac)
    if host is not None and (host.dpid, host.port) == here:
        return ()
    if attached(view, host):
        return (PacketOut(host.dpid, host.port, data),)
    if host is not None:
        # Known but not where we last saw it: look for it at every edge port.
        return tuple(PacketOut(d, p, data) for d, p in all_edge_ports(view, except_at=here))
    return ()


def _decide_arp(view: NetworkView, here, eth: ethernet.ethernet, a: arp.arp, data: bytes) -> Decision:
    sender_ip = a.src_ip if a.src_ip != "0.0.0.0" else None
    if a.opcode == arp.ARP_REQUEST:
        target = view.host_by_ip(a.dst_ip)
        if a.src_ip == a.dst_ip or (target is not None and target.mac == a.src_mac):
            return Decision(a.src_mac, sender_ip, ())  # gratuitous ARP: learning only
        if attached(view, target):
            return Decision(a.src_mac, sender_ip, (PacketOut(here[0], here[1], arp_reply(a, target.mac)),))
        return Decision(a.src_mac, sender_ip, tuple(PacketOut(d, p, data) for d, p in all_edge_ports(view, except_at=here)))
    return Decision(a.src_mac, sender_ip, _deliver(view, here, eth.dst, data))
