"""What the controller does with a frame sent to it from an edge port.

ARP requests and IPv6 Neighbour Solicitations are answered from the host table when
the target is known (proxy ARP/ND) and otherwise relayed to every edge port of the
fabric; replies and advertisements go straight to the asker.  Broadcast is thereby
confined to edge ports and never loops, on any topology.  Every one of these frames
also says which addresses its sender uses (ARP sender, ND source and target), which
is how the controller knows a host by every address, whatever the host sent first.
Other frames from not-yet-known sources are delivered once to their destination, so
the first packet of a new host is not lost while its rules go in.

The controller also asks for addresses itself (`probe_frames`): an ARP probe or a
duplicate-address-style solicitation, which a host answers without learning anything
about the asker.

Pure: takes the view and the frame, returns the packet-outs to make.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipaddress

from os_ken.lib.packet import arp, ethernet, icmpv6, ipv4, ipv6, packet

from vtap.compile.pipeline import ETH_TYPE_ARP, ETH_TYPE_IPV6
from vtap.model.network import is_multicast_mac
from vtap.model.view import NetworkView

# The source MAC of the controller's own probes: locally administered, "vt" inside.
PROBE_MAC = "02:76:74:00:00:01"
ND_ROUTER, ND_SOLICITED, ND_OVERRIDE = 4, 2, 1  # Neighbour Advertisement flags


@dataclass(frozen=True)
class PacketOut:
    dpid: int
    port: int
    data: bytes


@dataclass(frozen=True)
class Decision:
    """The sender to learn (its MAC and the addresses the frame shows it uses) and the
    packet-outs to make."""

    sender_mac: str | None
    sender_ips: tuple[str, ...]
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
        return Decision(None, (), ())
    eth = pkt.get_protocol(ethernet.ethernet)
    if eth is None:
        return Decision(None, (), ())
    here = (dpid, in_port)
    if in_port in view.link_ports.get(dpid, ()) or in_port not in view.edge_ports(dpid):
        # From another switch, or from the switch itself (its LOCAL port: the tunnel
        # endpoint's own frames, e.g. OVS asking for a tunnel's next hop): never a host.
        return Decision(None, (), () if is_multicast_mac(eth.dst) else _deliver(view, here, eth.dst, data))
    a = pkt.get_protocol(arp.arp)
    if a is not None:
        return _decide_arp(view, here, eth, a, data)
    ip6 = pkt.get_protocol(ipv6.ipv6)
    nd = pkt.get_protocol(icmpv6.icmpv6)
    if ip6 is not None and nd is not None and nd.type_ in (icmpv6.ND_NEIGHBOR_SOLICIT, icmpv6.ND_NEIGHBOR_ADVERT):
        return _decide_nd(view, here, eth, ip6, nd, data)
    return Decision(*_sender(pkt, eth), _deliver(view, here, eth.dst, data))


def sender(data: bytes) -> tuple[str, tuple[str, ...]] | None:
    """Who sent a frame (its MAC) and the addresses the frame shows it uses, as `decide`
    learns them; None for a frame that names no sender."""
    try:
        pkt = packet.Packet(data)
    except Exception:
        return None
    eth = pkt.get_protocol(ethernet.ethernet)
    if eth is None:
        return None
    who = _sender(pkt, eth)
    return None if is_multicast_mac(who[0]) else who


def _sender(pkt: packet.Packet, eth: ethernet.ethernet) -> tuple[str, tuple[str, ...]]:
    """ARP: its sender fields; a Neighbour Advertisement: its source and target; any other
    IP packet: its source address."""
    a = pkt.get_protocol(arp.arp)
    if a is not None:
        return a.src_mac, _addresses(a.src_ip)
    ip6 = pkt.get_protocol(ipv6.ipv6)
    nd = pkt.get_protocol(icmpv6.icmpv6)
    if ip6 is not None and nd is not None and nd.type_ == icmpv6.ND_NEIGHBOR_ADVERT and isinstance(nd.data, icmpv6.nd_neighbor):
        return eth.src, _addresses(ip6.src, nd.data.dst)
    ip = pkt.get_protocol(ipv4.ipv4) or ip6
    return eth.src, _addresses(ip.src if ip is not None else None)


def _addresses(*ips: str | None) -> tuple[str, ...]:
    """The addresses worth recording for a host (not unspecified, multicast or broadcast)."""
    out = []
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip) if ip else None
        except ValueError:
            continue
        if addr is None or addr.is_unspecified or addr.is_multicast or str(addr) == "255.255.255.255":
            continue
        if str(addr) not in out:
            out.append(str(addr))
    return tuple(out)


def _deliver(view: NetworkView, here: tuple[int, int], dst_mac: str, data: bytes) -> tuple[PacketOut, ...]:
    if is_multicast_mac(dst_mac):
        return _relay(view, here, data)
    host = view.hosts.get(dst_mac)
    if host is not None and (host.dpid, host.port) == here:
        return ()
    if attached(view, host):
        return (PacketOut(host.dpid, host.port, data),)
    if host is not None and host.dpid in view.devices:
        # Known but not where we last saw it (its port down, or facing a switch): it may
        # have moved in silence; look for it at every edge port.
        return _relay(view, here, data)
    # Unknown, or its switch is away (a cut connection, a restart: the host has not
    # moved, and its switch keeps its rules). Looking for it everywhere would hand its
    # traffic to every host for as long as the switch is away — the chaos soak saw 286
    # packets of one flow at every host while its receiver's switch was cut off. Its ARP
    # and ND are still relayed, so a host that did move is found where it is.
    return ()


def _relay(view: NetworkView, here: tuple[int, int], data: bytes) -> tuple[PacketOut, ...]:
    return tuple(PacketOut(d, p, data) for d, p in all_edge_ports(view, except_at=here))


def _decide_arp(view: NetworkView, here, eth: ethernet.ethernet, a: arp.arp, data: bytes) -> Decision:
    sender_ips = _addresses(a.src_ip)
    if a.opcode == arp.ARP_REQUEST:
        target = view.host_by_ip(a.dst_ip)
        if a.src_ip == a.dst_ip or (target is not None and target.mac == a.src_mac):
            return Decision(a.src_mac, sender_ips, ())  # gratuitous ARP: learning only
        if attached(view, target):
            return Decision(a.src_mac, sender_ips, (PacketOut(here[0], here[1], arp_reply(a, target.mac)),))
        return Decision(a.src_mac, sender_ips, _relay(view, here, data))
    return Decision(a.src_mac, sender_ips, _deliver(view, here, eth.dst, data))


def _decide_nd(view: NetworkView, here, eth: ethernet.ethernet, ip6: ipv6.ipv6, nd: icmpv6.icmpv6, data: bytes) -> Decision:
    """Neighbour Solicitation: proxy answer when the target is known, else relay.
    Neighbour Advertisement: its target is an address of the sender; deliver it."""
    target = nd.data.dst if isinstance(nd.data, icmpv6.nd_neighbor) else None
    if nd.type_ == icmpv6.ND_NEIGHBOR_ADVERT:
        return Decision(eth.src, _addresses(ip6.src, target), _deliver(view, here, eth.dst, data))
    sender_ips = _addresses(ip6.src)
    owner = view.host_by_ip(target) if target else None
    if owner is not None and owner.mac == eth.src:
        return Decision(eth.src, sender_ips, ())  # asking for its own address
    if sender_ips and attached(view, owner):
        return Decision(eth.src, sender_ips, (PacketOut(here[0], here[1], neighbour_advert(eth.src, ip6.src, target, owner.mac)),))
    # Duplicate address detection (source ::) or an unknown target: let the hosts answer.
    return Decision(eth.src, sender_ips, _relay(view, here, data))


def neighbour_advert(to_mac: str, to_ip: str, target: str, target_mac: str) -> bytes:
    """The solicited advertisement the target itself would send."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=to_mac, src=target_mac, ethertype=0x86DD))
    pkt.add_protocol(ipv6.ipv6(src=target, dst=to_ip, nxt=58, hop_limit=255))
    pkt.add_protocol(icmpv6.icmpv6(type_=icmpv6.ND_NEIGHBOR_ADVERT, data=icmpv6.nd_neighbor(
        res=ND_SOLICITED | ND_OVERRIDE, dst=target, option=icmpv6.nd_option_tla(hw_src=target_mac))))
    pkt.serialize()
    return bytes(pkt.data)


def probe_frame(ip: str) -> bytes:
    """A frame asking who holds `ip`, that teaches the hosts nothing about the asker: an
    ARP probe (sender address 0.0.0.0, RFC 5227) or a solicitation from the unspecified
    address (as in duplicate address detection, RFC 4862), which the owner answers to
    all nodes.  Either answer comes back to the controller through the neighbour rules."""
    addr = ipaddress.ip_address(ip)
    pkt = packet.Packet()
    if addr.version == 4:
        pkt.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=PROBE_MAC, ethertype=0x0806))
        pkt.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=PROBE_MAC, src_ip="0.0.0.0",
                                 dst_mac="00:00:00:00:00:00", dst_ip=str(addr)))
    else:
        low = addr.packed[-3:]
        group = ipaddress.IPv6Address(b"\xff\x02" + b"\x00" * 9 + b"\x01\xff" + low)
        pkt.add_protocol(ethernet.ethernet(dst="33:33:" + ":".join(f"{b:02x}" for b in group.packed[-4:]), src=PROBE_MAC,
                                           ethertype=0x86DD))
        pkt.add_protocol(ipv6.ipv6(src="::", dst=str(group), nxt=58, hop_limit=255))
        pkt.add_protocol(icmpv6.icmpv6(type_=icmpv6.ND_NEIGHBOR_SOLICIT, data=icmpv6.nd_neighbor(dst=str(addr))))
    pkt.serialize()
    return bytes(pkt.data)


ARP_TYPE, IPV6_TYPE = ETH_TYPE_ARP.to_bytes(2, "big"), ETH_TYPE_IPV6.to_bytes(2, "big")  # as a frame carries them


def packet_in_reason(data: bytes) -> str:
    """Why a frame other than LLDP came up, for the metrics: ARP, IPv6 neighbour
    discovery, anything else (a new source to learn, an unknown destination), or
    `unparsable` (shorter than an Ethernet header). Read from the bytes: the frame is
    parsed once, where it is decided on (`decide`, above)."""
    if len(data) < 14:
        return "unparsable"
    if data[12:14] == ARP_TYPE:
        return "arp"
    # IPv6, next header ICMPv6 (byte 20), type 135/136 (byte 54), untagged
    if data[12:14] == IPV6_TYPE and len(data) > 54 and data[20] == 58 and data[54] in (135, 136):
        return "nd"
    return "other"
