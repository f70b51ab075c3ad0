"""The DPDK guests' frames, pcap files and port pairs (pure; the guest itself runs in
tests/integration/test_bench.py's DPDK runs)."""

from __future__ import annotations

import struct
from pathlib import Path

from os_ken.lib.packet import arp, ethernet, ipv4, packet, udp

from vtap.bench.guests import Guest, VNic, gratuitous_arp, udp_frames, write_pcap

SND = VNic("snd1", "00:00:00:00:01:01", "10.1.0.1", Path("/tmp/snd1.sock"))
RCV = VNic("rcv1", "00:00:00:00:01:02", "10.1.0.2", Path("/tmp/rcv1.sock"))


def read_pcap(path: Path) -> list[bytes]:
    data = path.read_bytes()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack("<IHHiIII", data[:24])
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, 1)
    frames, at = [], 24
    while at < len(data):
        _, _, caplen, length = struct.unpack("<IIII", data[at:at + 16])
        assert caplen == length <= snaplen
        frames.append(data[at + 16:at + 16 + caplen])
        at += 16 + caplen
    return frames


def test_udp_frames_have_the_wire_size_less_the_fcs_and_one_flow_each():
    for size in (64, 1518):
        frames = udp_frames(SND, RCV.mac, "10.1.1.2", 5001, range(1000, 1010), size)
        assert [len(f) for f in frames] == [size - 4] * 10
        pkts = [packet.Packet(f) for f in frames]
        assert [p.get_protocol(udp.udp).src_port for p in pkts] == list(range(1000, 1010))
        first = pkts[0]
        assert first.get_protocol(ethernet.ethernet).dst == RCV.mac
        assert (first.get_protocol(ipv4.ipv4).src, first.get_protocol(ipv4.ipv4).dst) == ("10.1.0.1", "10.1.1.2")


def test_gratuitous_arp_claims_the_nics_own_address():
    a = packet.Packet(gratuitous_arp(RCV)).get_protocol(arp.arp)
    assert (a.src_mac, a.src_ip, a.dst_ip, a.opcode) == (RCV.mac, RCV.ip, RCV.ip, arp.ARP_REQUEST)


def test_pcap_round_trip(tmp_path):
    frames = [gratuitous_arp(SND), *udp_frames(SND, RCV.mac, "10.1.1.2", 5001, range(1000, 1003), 128)]
    assert read_pcap(write_pcap(tmp_path / "x.pcap", frames)) == frames


def test_ports_follow_the_vdev_order_and_senders_pair_with_their_stream(tmp_path):
    streams = {(SND.name, s): udp_frames(SND, RCV.mac, "10.1.1.2", 5001, range(1000, 1002), s) for s in (64, 1518)}
    g = Guest(tmp_path, [SND, RCV], streams)
    assert g.vdevs[0].startswith(f"net_virtio_user0,path={SND.socket},server=1,mac={SND.mac}")
    assert g.vdevs[2].startswith("net_pcap0,rx_pcap=") and "infinite_rx" not in g.vdevs[2]
    assert g.stream_port == {(SND.name, 64): 4, (SND.name, 1518): 5}
    assert all("infinite_rx=1" in g.vdevs[p] for p in g.stream_port.values())
    sent: list[str] = []
    g._command = lambda *lines: sent.extend(lines)
    g.announce()
    assert sent == ["stop", "set portlist 2,0,3,1", "start"]
    sent.clear()
    g.send(1518)
    assert sent == ["stop", "set portlist 5,0,3,1", "start"]  # the receiver stays with its (spent) ARP port
    assert read_pcap(tmp_path / "stream-snd1-1518.pcap") == streams[(SND.name, 1518)]
