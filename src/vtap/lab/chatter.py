"""The background chatter of ordinary hosts, from the first second: ARP requests and
gratuitous ARP, IPv6 neighbour and router solicitations, mDNS queries, LLDP.

Real hosts are never quiet: they resolve neighbours, look for routers and services and
announce themselves whether or not the network is ready, so a controller meets all of
it while switches are still joining. With `chatter=True` the lab runs this program in
every host (`start_chatter`), beside whatever a test sends.

    python -m vtap.lab.chatter IFACE --ip 10.0.0.1 --seed 1 [--duration 3600] PEER_IPV4...

Neighbour solicitations ask for a peer's link-local address, which a host derives from
its MAC (EUI-64); a peer's MAC follows from its IPv4 address by the lab's addressing plan.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import random
import signal
import socket
import struct
import subprocess
import sys
import time

from os_ken.lib.packet import arp, ethernet, icmpv6, ipv4, ipv6, lldp, packet, udp

BROADCAST = "ff:ff:ff:ff:ff:ff"
ALL_ROUTERS = ("ff02::2", "33:33:00:00:00:02")
MDNS_V4 = ("224.0.0.251", "01:00:5e:00:00:fb")
MDNS_V6 = ("ff02::fb", "33:33:00:00:00:fb")
MDNS_PORT = 5353
# DNS-SD service enumeration (RFC 6763, 9): what a host browsing for services asks first.
MDNS_QUESTION = "_services._dns-sd._udp.local"


def link_local(mac: str) -> str:
    """The fe80:: address Linux gives an interface by default: modified EUI-64 of its MAC."""
    b = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid))


def lab_mac(ipv4_addr: str) -> str:
    """A lab host's MAC from its IPv4 address (topos.host_params): the MAC ends in the
    address's last two octets."""
    c, d = ipaddress.IPv4Address(ipv4_addr).packed[2:]
    return f"00:00:00:00:{c:02x}:{d:02x}"


def _frame(*protocols) -> bytes:
    pkt = packet.Packet()
    for p in protocols:
        pkt.add_protocol(p)
    pkt.serialize()
    return bytes(pkt.data)


def arp_request(mac: str, ip: str, target_ip: str) -> bytes:
    """A broadcast request for `target_ip`, from the host's own MAC and address."""
    return _frame(ethernet.ethernet(dst=BROADCAST, src=mac, ethertype=0x0806),
                  arp.arp(opcode=arp.ARP_REQUEST, src_mac=mac, src_ip=ip, dst_mac="00:00:00:00:00:00", dst_ip=target_ip))


def gratuitous_arp(mac: str, ip: str) -> bytes:
    """A request for the host's own address: how a host announces (or re-claims) it."""
    return arp_request(mac, ip, ip)


def neighbour_solicitation(mac: str, target: str) -> bytes:
    """Who has `target`? From the host's link-local address to the target's
    solicited-node group, with the host's MAC as source link-layer address."""
    low = ipaddress.IPv6Address(target).packed[-3:]
    group = ipaddress.IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + low)
    return _frame(ethernet.ethernet(dst="33:33:ff:" + low.hex(":"), src=mac, ethertype=0x86DD),
                  ipv6.ipv6(src=link_local(mac), dst=str(group), nxt=58, hop_limit=255),
                  icmpv6.icmpv6(type_=icmpv6.ND_NEIGHBOR_SOLICIT,
                                data=icmpv6.nd_neighbor(dst=target, option=icmpv6.nd_option_sla(hw_src=mac))))


def router_solicitation(mac: str) -> bytes:
    """Any router here? To all routers, as a host does when its link comes up."""
    group, group_mac = ALL_ROUTERS
    return _frame(ethernet.ethernet(dst=group_mac, src=mac, ethertype=0x86DD),
                  ipv6.ipv6(src=link_local(mac), dst=group, nxt=58, hop_limit=255),
                  icmpv6.icmpv6(type_=icmpv6.ND_ROUTER_SOLICIT,
                                data=icmpv6.nd_router_solicit(option=icmpv6.nd_option_sla(hw_src=mac))))


def _dns_query(name: str) -> bytes:
    header = struct.pack("!6H", 0, 0, 1, 0, 0, 0)  # id 0, a query, one question (RFC 6762, 18)
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return header + qname + struct.pack("!2H", 12, 1)  # PTR, IN


def mdns_query(mac: str, src_ip: str, group: str, group_mac: str) -> bytes:
    """An mDNS service query from port 5353 to the mDNS group of `group`'s family."""
    if ":" in group:
        l2 = ethernet.ethernet(dst=group_mac, src=mac, ethertype=0x86DD)
        l3 = ipv6.ipv6(src=src_ip, dst=group, nxt=17, hop_limit=255)
    else:
        l2 = ethernet.ethernet(dst=group_mac, src=mac, ethertype=0x0800)
        l3 = ipv4.ipv4(src=src_ip, dst=group, proto=17, ttl=255)
    l4 = udp.udp(src_port=MDNS_PORT, dst_port=MDNS_PORT)
    query = _dns_query(MDNS_QUESTION)
    data = _frame(l2, l3, l4, query)
    if l4.csum == 0:
        # A sum that comes out 0 is sent as all ones: 0 means "no checksum" (RFC 768),
        # which IPv6 does not allow.
        at = len(data) - len(query) - 2
        data = data[:at] + b"\xff\xff" + data[at + 2:]
    return data


def lldp_frame(mac: str, iface: str) -> bytes:
    """LLDP as a server's agent (lldpd) sends it: chassis id its MAC, port id its
    interface name. Not vtap's own format, whose chassis id names a dpid."""
    return _frame(ethernet.ethernet(dst=lldp.LLDP_MAC_NEAREST_BRIDGE, src=mac, ethertype=0x88CC),
                  lldp.lldp((lldp.ChassisID(subtype=lldp.ChassisID.SUB_MAC_ADDRESS, chassis_id=bytes.fromhex(mac.replace(":", ""))),
                             lldp.PortID(subtype=lldp.PortID.SUB_INTERFACE_NAME, port_id=iface.encode()),
                             lldp.TTL(ttl=120),
                             lldp.End())))


def frame_kinds(iface: str, mac: str, ip: str, peers: list[str]) -> list[list[bytes]]:
    """Every frame the host sends, by kind; requests and solicitations once per peer."""
    kinds = [
        [arp_request(mac, ip, peer) for peer in peers],
        [gratuitous_arp(mac, ip)],
        [neighbour_solicitation(mac, link_local(lab_mac(peer))) for peer in peers],
        [router_solicitation(mac)],
        [mdns_query(mac, ip, *MDNS_V4)],
        [mdns_query(mac, link_local(mac), *MDNS_V6)],
        [lldp_frame(mac, iface)],
    ]
    return [kind for kind in kinds if kind]


def _send(sock: socket.socket, frame: bytes) -> None:
    try:
        sock.send(frame)
    except OSError:
        # The link is down (not wired to a switch yet, or a test took it down): a real
        # host keeps trying, and so does this one.
        pass


def chatter(sock: socket.socket, kinds: list[list[bytes]], rng: random.Random, duration: float) -> None:
    """One frame of every kind at once (a host whose link just came up), then one every
    0.5-1 s, kind after kind, from a place in the turn the seed picks: hosts started
    together do not all send the same thing at the same time."""
    deadline = time.monotonic() + duration
    cycles = [itertools.cycle(kind) for kind in kinds]
    for frames in cycles:
        _send(sock, next(frames))
    for turn in itertools.count(rng.randrange(len(cycles))):
        time.sleep(rng.uniform(0.5, 1.0))
        if time.monotonic() >= deadline:
            return
        _send(sock, next(cycles[turn % len(cycles)]))


def start_chatter(host, peers_ipv4: list[str], seed: int, duration: float = 3600.0) -> subprocess.Popen:
    """Run the chatter in a Mininet host's namespace, on its default interface. Its errors
    go to this process's stderr. It ends by itself after `duration` seconds, so that it
    cannot outlive a test that forgot it."""
    cmd = [sys.executable, "-m", "vtap.lab.chatter", str(host.defaultIntf()), "--ip", host.IP(),
           "--seed", str(seed), "--duration", str(duration), *peers_ipv4]
    return host.popen(cmd, stdout=subprocess.DEVNULL, stderr=None)


def stop_chatter(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vtap.lab.chatter")
    ap.add_argument("iface")
    ap.add_argument("peers", nargs="*", metavar="PEER_IPV4")
    ap.add_argument("--ip", required=True, help="the host's own IPv4 address")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=3600.0, help="seconds, then stop")
    args = ap.parse_intermixed_args(argv)  # peers may follow the options
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((args.iface, 0))
        mac = sock.getsockname()[4].hex(":")  # the interface's own address
        chatter(sock, frame_kinds(args.iface, mac, args.ip, args.peers), random.Random(args.seed), args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
