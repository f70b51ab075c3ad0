"""A capture's live view: frames in one line, and pcapng read back as written (pure)."""

from __future__ import annotations

import io

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from vtap.model.frames import summary
from vtap.store.pcapng import PcapngWriter, read_packets


def test_summaries_name_addresses_protocol_and_ports():
    udp = bytes(Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:03") / IP(src="10.0.0.1", dst="10.0.0.3")
                / UDP(sport=5, dport=7373))
    assert summary(udp) == {"src": "10.0.0.1", "dst": "10.0.0.3", "protocol": "UDP 5 → 7373"}
    tagged = bytes(Ether() / Dot1Q(vlan=42) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP())
    assert summary(tagged)["protocol"] == "ICMP (VLAN 42)"
    assert summary(bytes(Ether() / IPv6(src="fe80::1", dst="ff02::1") / UDP(sport=1, dport=2)))["src"] == "fe80::1"
    arp = summary(bytes(Ether(src="00:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP()))
    assert arp == {"src": "00:00:00:00:00:01", "dst": "ff:ff:ff:ff:ff:ff", "protocol": "ARP"}
    assert summary(b"\x00" * 5)["protocol"] == "runt"


def test_what_the_writer_wrote_is_read_back_and_a_half_written_block_is_left_out():
    out = io.BytesIO()
    w = PcapngWriter(out, comment="test", snaplen=64)
    w.packet(0xB0, 1.5, b"\x01" * 60, 60)
    w.packet(0xB1, 2.25, b"\x02" * 64, 1514, comment="port 3")
    data = out.getvalue()
    assert read_packets(data) == [(1.5, b"\x01" * 60, 60), (2.25, b"\x02" * 64, 1514)]
    assert read_packets(data[:-5]) == [(1.5, b"\x01" * 60, 60)]
