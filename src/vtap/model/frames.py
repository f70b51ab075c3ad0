"""Frames read as vtap reads them: one line of a capture's live view (addresses,
protocol with ports), and the fields a policy's match looks at, to tell which policy
a copy at a tool is of (`vtap sensor`). Pure; only the headers vtap's copies carry."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 47: "GRE", 132: "SCTP"}
ETHERTYPES = {0x0806: "ARP", 0x88CC: "LLDP", 0x8100: "802.1Q"}


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _l4(proto: int, l4: bytes) -> str:
    name = PROTOCOLS.get(proto, f"IP proto {proto}")
    if proto in (6, 17, 132) and len(l4) >= 4:
        sport, dport = struct.unpack_from("!HH", l4)
        return f"{name} {sport} → {dport}"
    return name


def summary(frame: bytes) -> dict:
    """{"src", "dst", "protocol"}: IP addresses where there are any, else MACs."""
    if len(frame) < 14:
        return {"src": "", "dst": "", "protocol": "runt"}
    src, dst = _mac(frame[6:12]), _mac(frame[0:6])
    ethertype, at = struct.unpack_from("!H", frame, 12)[0], 14
    vlan = ""
    if ethertype == 0x8100 and len(frame) >= 18:
        vlan = f" (VLAN {struct.unpack_from('!H', frame, 14)[0] & 0xFFF})"
        ethertype, at = struct.unpack_from("!H", frame, 16)[0], 18
    if ethertype == 0x0800 and len(frame) >= at + 20:
        ihl = (frame[at] & 0x0F) * 4
        return {"src": str(ipaddress.IPv4Address(frame[at + 12: at + 16])),
                "dst": str(ipaddress.IPv4Address(frame[at + 16: at + 20])),
                "protocol": _l4(frame[at + 9], frame[at + ihl:]) + vlan}
    if ethertype == 0x86DD and len(frame) >= at + 40:
        return {"src": str(ipaddress.IPv6Address(frame[at + 8: at + 24])),
                "dst": str(ipaddress.IPv6Address(frame[at + 24: at + 40])),
                "protocol": _l4(frame[at + 6], frame[at + 40:]) + vlan}
    return {"src": src, "dst": dst, "protocol": ETHERTYPES.get(ethertype, f"EtherType 0x{ethertype:04x}") + vlan}


@dataclass(frozen=True)
class Fields:
    """What a policy's match looks at in a frame."""

    src_mac: str
    dst_mac: str
    vlan_id: int | None = None
    ip_version: int | None = None
    src_ip: str | None = None
    dst_ip: str | None = None
    ip_proto: int | None = None
    src_port: int | None = None
    dst_port: int | None = None


def fields(frame: bytes) -> Fields | None:
    """A frame's match fields (the first VLAN tag's id; IPv4 or IPv6 with their L4 ports)."""
    if len(frame) < 14:
        return None
    src_mac, dst_mac = _mac(frame[6:12]), _mac(frame[0:6])
    ethertype, at = struct.unpack_from("!H", frame, 12)[0], 14
    vlan = None
    if ethertype == 0x8100 and len(frame) >= 18:
        vlan = struct.unpack_from("!H", frame, 14)[0] & 0xFFF
        ethertype, at = struct.unpack_from("!H", frame, 16)[0], 18
    if ethertype == 0x0800 and len(frame) >= at + 20:
        version, src, dst, proto, l4 = 4, frame[at + 12: at + 16], frame[at + 16: at + 20], frame[at + 9], \
            frame[at + (frame[at] & 0x0F) * 4:]
        src_ip, dst_ip = str(ipaddress.IPv4Address(src)), str(ipaddress.IPv4Address(dst))
    elif ethertype == 0x86DD and len(frame) >= at + 40:
        version, proto, l4 = 6, frame[at + 6], frame[at + 40:]
        src_ip, dst_ip = str(ipaddress.IPv6Address(frame[at + 8: at + 24])), str(ipaddress.IPv6Address(frame[at + 24: at + 40]))
    else:
        return Fields(src_mac, dst_mac, vlan)
    sport = dport = None
    if proto in (6, 17, 132) and len(l4) >= 4:
        sport, dport = struct.unpack_from("!HH", l4)
    return Fields(src_mac, dst_mac, vlan, version, src_ip, dst_ip, proto, sport, dport)


def _ip_in(value: str | None, want: str | None) -> bool:
    if want is None:
        return True
    if value is None:
        return False
    addr = ipaddress.ip_address(value)
    net = ipaddress.ip_network(want, strict=False)
    return addr.version == net.version and addr in net


def matches(spec, f: Fields) -> bool:
    """Whether a frame with fields `f` is one the policy `spec` (a MatchSpec) taps, in
    either of its directions."""
    if spec.vlan_id is not None and f.vlan_id != spec.vlan_id:
        return False
    if spec.ip_proto is not None and f.ip_proto != spec.ip_proto:
        return False
    if spec.ip_version is not None and (spec.src_ip or spec.dst_ip) and f.ip_version != spec.ip_version:
        return False
    for end in spec.directions():
        if ((end.src_mac is None or end.src_mac == f.src_mac) and (end.dst_mac is None or end.dst_mac == f.dst_mac)
                and _ip_in(f.src_ip, end.src_ip) and _ip_in(f.dst_ip, end.dst_ip)
                and (end.src_port is None or end.src_port == f.src_port)
                and (end.dst_port is None or end.dst_port == f.dst_port)):
            return True
    return False
