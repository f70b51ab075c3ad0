"""Match translation, for phases 3 and 5: a policy's (or capture job's) match as
directed matches, one per direction, each with the host its packets come from; a
region as the OXM fields of a flow rule; the MAC and address helpers both need.

Separate because it is the one part that speaks OpenFlow's field language and knows
nothing of switches, monitors or the memo: a pure function of a match.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from vtap.compile.pipeline import OFPVID_PRESENT
from vtap.compile.regions import WIDTHS, Region
from vtap.model.policy import MatchSpec, is_single_address

def mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def int_mac(value: int) -> str:
    h = f"{value:012x}"
    return ":".join(h[i : i + 2] for i in range(0, 12, 2))


@functools.lru_cache(maxsize=65536)  # policies name the same few addresses over and over
def _ip_constraint(text: str) -> tuple[str, tuple[int, int]]:
    net = ipaddress.ip_network(text, strict=False)
    fam = "ipv4" if net.version == 4 else "ipv6"
    return fam, (int(net.network_address), net.prefixlen)


@dataclass(frozen=True)
class Directed:
    """One direction of a policy: its match (without in_port) and the host it comes from."""

    tap_id: int
    constraints: tuple[tuple[str, tuple[int, int]], ...]
    source_mac: str | None
    source_ip: str | None


def directed(ident: int, s: MatchSpec) -> list[Directed]:
    out = []
    for e in s.directions():
        c: dict[str, tuple[int, int]] = {}
        if e.src_mac:
            c["eth_src"] = (mac_int(e.src_mac), 48)
        if e.dst_mac:
            c["eth_dst"] = (mac_int(e.dst_mac), 48)
        if s.ip_version:
            c["eth_type"] = (0x0800 if s.ip_version == 4 else 0x86DD, 16)
        for end, ip in (("src", e.src_ip), ("dst", e.dst_ip)):
            if ip:
                fam, value = _ip_constraint(ip)
                c[f"{fam}_{end}"] = value
        if s.ip_proto is not None:
            c["ip_proto"] = (s.ip_proto, 8)
        if s.vlan_id is not None:
            c["vlan_vid"] = (OFPVID_PRESENT | s.vlan_id, 13)
        if e.src_port is not None:
            c["l4_src"] = (e.src_port, 16)
        if e.dst_port is not None:
            c["l4_dst"] = (e.dst_port, 16)
        single_ip = e.src_ip if e.src_ip and is_single_address(e.src_ip) else None
        out.append(Directed(ident, tuple(sorted(_constraint(*item) for item in c.items())), e.src_mac, single_ip))
    return out


@functools.lru_cache(maxsize=65536)
def _constraint(name: str, value: tuple[int, int]) -> tuple[str, tuple[int, int]]:
    """One field's constraint, one object for every policy that has it (the protocol,
    a port, an address): 0.5 KiB of each policy's matches were copies of them."""
    return name, value


def region_to_match(r: Region) -> tuple:
    """OXM fields for a region (l4 ports named after the protocol)."""
    proto = next((v for f, v, _ in r if f == "ip_proto"), None)
    l4 = {6: "tcp", 17: "udp", 132: "sctp"}.get(proto, "tcp")
    return tuple(sorted(_oxm_field(f, v, p, l4) for f, v, p in r))


@functools.lru_cache(maxsize=65536)  # policies name the same few addresses, ports and protocols
def _oxm_field(f: str, v: int, p: int, l4: str) -> tuple[str, object]:
    width = WIDTHS[f]
    if f in ("eth_src", "eth_dst"):
        val = int_mac(v) if p == width else (int_mac(v), int_mac(((1 << p) - 1) << (width - p)))
    elif f.startswith("ipv4") or f.startswith("ipv6"):
        version = 4 if f.startswith("ipv4") else 6
        val = _ip_text(version, v) if p == width else (_ip_text(version, v), _ip_text(version, ((1 << p) - 1) << (width - p)))
    else:
        val = v
    return f.replace("l4", l4), val


@functools.lru_cache(maxsize=65536)
def _ip_text(version: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))
