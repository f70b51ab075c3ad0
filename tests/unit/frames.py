"""Frames hosts send, built with os-ken, for the unit tests of the controller's decisions."""

from __future__ import annotations

from os_ken.lib.packet import arp, ethernet, ipv4, packet, udp


def arp_request(src_mac: str, src_ip: str, dst_ip: str) -> bytes:
    """A broadcast ARP request; with `dst_ip == src_ip`, a gratuitous ARP (a claim)."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=src_mac, ethertype=0x0806))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=src_mac, src_ip=src_ip, dst_mac="00:00:00:00:00:00", dst_ip=dst_ip))
    pkt.serialize()
    return bytes(pkt.data)


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str) -> bytes:
    """A unicast UDP datagram."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=dst_mac, src=src_mac, ethertype=0x0800))
    pkt.add_protocol(ipv4.ipv4(src=src_ip, dst=dst_ip, proto=17))
    pkt.add_protocol(udp.udp(src_port=4000, dst_port=5000))
    pkt.serialize()
    return bytes(pkt.data)
