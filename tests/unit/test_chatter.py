"""The hosts' background chatter: each frame kind, its schedule, and the program on a veth pair."""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest
from os_ken.lib.packet import arp, ethernet, icmpv6, ipv4, ipv6, lldp, packet, udp

from vtap.lab import chatter
from vtap.lab.topos import host_params
from vtap.lab.traffic import read_pcap

MAC = "00:00:00:00:00:01"
IP = "10.0.0.1"
LINK_LOCAL = "fe80::200:ff:fe00:1"


def ones_complement_ok(data: bytes) -> bool:
    """An Internet checksum over data that includes it sums to all ones."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def l4_checksum_ok(frame: bytes) -> bool:
    """The UDP or ICMPv6 checksum of an IPv4 or IPv6 frame, over its pseudo header."""
    if frame[12:14] == b"\x08\x00":
        ihl = (frame[14] & 0x0F) * 4
        segment = frame[14 + ihl:]
        pseudo = frame[26:34] + struct.pack("!BBH", 0, frame[23], len(segment))
    else:
        segment = frame[54:]
        pseudo = frame[22:54] + struct.pack("!I3xB", len(segment), frame[20])
    return ones_complement_ok(pseudo + segment)


def parse(frame: bytes) -> packet.Packet:
    return packet.Packet(frame)


def test_link_local_is_modified_eui64_and_lab_macs_follow_host_params():
    assert chatter.link_local(MAC) == LINK_LOCAL
    assert chatter.link_local("52:54:00:12:34:56") == "fe80::5054:ff:fe12:3456"
    for i in (1, 2, 16, 254, 255, 256, 1000):
        params = host_params(i)
        assert chatter.lab_mac(params["ip"].split("/")[0]) == params["mac"]


def test_arp_request_and_gratuitous_arp():
    for frame, target in ((chatter.arp_request(MAC, IP, "10.0.0.7"), "10.0.0.7"), (chatter.gratuitous_arp(MAC, IP), IP)):
        pkt = parse(frame)
        eth, a = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(arp.arp)
        assert (eth.ethertype, eth.dst, eth.src) == (0x0806, "ff:ff:ff:ff:ff:ff", MAC)
        assert (a.opcode, a.src_mac, a.src_ip, a.dst_ip) == (arp.ARP_REQUEST, MAC, IP, target)


def test_neighbour_solicitation_for_a_peers_link_local():
    target = chatter.link_local(chatter.lab_mac("10.0.0.2"))
    frame = chatter.neighbour_solicitation(MAC, target)
    pkt = parse(frame)
    eth, ip6, nd = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv6.ipv6), pkt.get_protocol(icmpv6.icmpv6)
    assert (eth.ethertype, eth.dst, eth.src) == (0x86DD, "33:33:ff:00:00:02", MAC)
    assert (ip6.src, ip6.dst, ip6.nxt, ip6.hop_limit) == (LINK_LOCAL, "ff02::1:ff00:2", 58, 255)
    assert nd.type_ == icmpv6.ND_NEIGHBOR_SOLICIT and nd.data.dst == "fe80::200:ff:fe00:2"
    assert nd.data.option.hw_src == MAC
    assert l4_checksum_ok(frame)


def test_router_solicitation():
    frame = chatter.router_solicitation(MAC)
    pkt = parse(frame)
    eth, ip6, nd = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv6.ipv6), pkt.get_protocol(icmpv6.icmpv6)
    assert (eth.ethertype, eth.dst, eth.src) == (0x86DD, "33:33:00:00:00:02", MAC)
    assert (ip6.src, ip6.dst, ip6.hop_limit) == (LINK_LOCAL, "ff02::2", 255)
    assert nd.type_ == icmpv6.ND_ROUTER_SOLICIT and nd.data.option.hw_src == MAC
    assert l4_checksum_ok(frame)


@pytest.mark.parametrize("src, group, group_mac, ethertype", [
    (IP, "224.0.0.251", "01:00:5e:00:00:fb", 0x0800),
    (LINK_LOCAL, "ff02::fb", "33:33:00:00:00:fb", 0x86DD),
])
def test_mdns_query(src, group, group_mac, ethertype):
    frame = chatter.mdns_query(MAC, src, group, group_mac)
    pkt = parse(frame)
    eth, u = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(udp.udp)
    assert (eth.ethertype, eth.dst, eth.src) == (ethertype, group_mac, MAC)
    l3 = pkt.get_protocol(ipv4.ipv4) or pkt.get_protocol(ipv6.ipv6)
    assert (l3.src, l3.dst) == (src, group)
    if ethertype == 0x0800:
        assert l3.ttl == 255 and ones_complement_ok(frame[14:34])
    assert (u.src_port, u.dst_port, u.total_length) == (5353, 5353, len(frame) - (34 if ethertype == 0x0800 else 54))
    assert u.csum != 0 and l4_checksum_ok(frame)
    assert b"\x09_services\x07_dns-sd\x04_udp\x05local\x00\x00\x0c\x00\x01" in frame


def test_mdns_checksum_is_right_for_many_macs():
    """Whatever the MAC (and so the link-local source), the UDP checksum holds, and is never 0."""
    for i in range(1, 3000):
        mac = f"02:00:00:00:{i // 256:02x}:{i % 256:02x}"
        frame = chatter.mdns_query(mac, chatter.link_local(mac), *chatter.MDNS_V6)
        assert frame[60:62] != b"\0\0" and l4_checksum_ok(frame)


def test_lldp_in_an_ordinary_devices_format():
    pkt = parse(chatter.lldp_frame(MAC, "h1-eth0"))
    eth, frame = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(lldp.lldp)
    assert (eth.ethertype, eth.dst, eth.src) == (0x88CC, "01:80:c2:00:00:0e", MAC)
    chassis, port, ttl = frame.tlvs[:3]
    assert (chassis.subtype, chassis.chassis_id) == (lldp.ChassisID.SUB_MAC_ADDRESS, bytes.fromhex("000000000001"))
    assert (port.subtype, port.port_id) == (lldp.PortID.SUB_INTERFACE_NAME, b"h1-eth0")
    assert ttl.ttl == 120 and not chassis.chassis_id.startswith(b"dpid:")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeSocket:
    """Records what is sent, and when; the first send fails as on a link that is down."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.sent: list[tuple[float, bytes]] = []
        self.refused = 0

    def send(self, frame: bytes) -> int:
        if not self.refused:
            self.refused += 1
            raise OSError(100, "Network is down")
        self.sent.append((self.clock.now, frame))
        return len(frame)


def run_chatter(monkeypatch, seed: int, duration: float) -> list[tuple[float, bytes]]:
    clock = FakeClock()
    monkeypatch.setattr(chatter.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(chatter.time, "sleep", clock.sleep)
    sock = FakeSocket(clock)
    kinds = chatter.frame_kinds("h1-eth0", MAC, IP, ["10.0.0.2", "10.0.0.3"])
    chatter.chatter(sock, kinds, random.Random(seed), duration)
    return sock.sent


def test_schedule_burst_then_one_frame_every_half_to_one_second(monkeypatch):
    sent = run_chatter(monkeypatch, seed=5, duration=60)
    kinds = chatter.frame_kinds("h1-eth0", MAC, IP, ["10.0.0.2", "10.0.0.3"])
    assert [t for t, _ in sent[:6]] == [0.0] * 6  # the burst, less the frame the down link refused
    gaps = [b - a for (a, _), (b, _) in zip(sent[5:], sent[6:])]
    assert all(0.5 <= g <= 1.0 for g in gaps) and sent[-1][0] < 60
    assert len(sent) > 60
    assert {f for _, f in sent} == {f for kind in kinds for f in kind}  # every kind, every peer
    assert sent == run_chatter(monkeypatch, seed=5, duration=60)
    assert sent != run_chatter(monkeypatch, seed=6, duration=60)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("tcpdump"), reason="needs root and tcpdump")
def test_the_program_on_a_veth_pair(tmp_path):
    """Run for ~2 s in one namespace; the peer namespace sees every kind of frame."""
    ns_a, ns_b = f"vtap-chatter-{os.getpid()}-a", f"vtap-chatter-{os.getpid()}-b"
    procs: list[subprocess.Popen] = []
    pcap = tmp_path / "peer.pcap"
    try:
        for ns in (ns_a, ns_b):
            _ip("netns", "add", ns)
            # No IPv6 of the kernel's own on the pair: only the program's ND frames are seen.
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        _ip("link", "add", "va", "netns", ns_a, "type", "veth", "peer", "name", "vb", "netns", ns_b)
        _ip("-n", ns_a, "link", "set", "va", "address", MAC, "up")
        _ip("-n", ns_b, "link", "set", "vb", "up")
        dump = subprocess.Popen(["ip", "netns", "exec", ns_b, "tcpdump", "-i", "vb", "-w", str(pcap), "-U", "-n",
                                 "--immediate-mode", "ether", "src", MAC], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(dump)
        os.set_blocking(dump.stderr.fileno(), False)
        deadline, buf = time.monotonic() + 5, b""
        while b"listening on" not in buf and time.monotonic() < deadline:
            time.sleep(0.05)
            buf += dump.stderr.read() or b""
        prog = subprocess.Popen(["ip", "netns", "exec", ns_a, sys.executable, "-m", "vtap.lab.chatter", "va", "--ip", IP,
                                 "--seed", "1", "--duration", "30", "10.0.0.2", "10.0.0.3"])
        procs.append(prog)
        time.sleep(2)
        assert prog.poll() is None
        chatter.stop_chatter([prog])
        assert prog.returncode == 0  # SIGTERM ends it cleanly
        time.sleep(0.3)
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=5)
        frames = [f for _, f in read_pcap(pcap)]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for ns in (ns_a, ns_b):
            _ip("netns", "del", ns, check=False)
    seen = set()
    for frame in frames:
        pkt = parse(frame)
        if pkt.get_protocol(arp.arp):
            seen.add("arp")
        if (nd := pkt.get_protocol(icmpv6.icmpv6)) is not None:
            assert l4_checksum_ok(frame)
            seen.add(f"icmpv6 {nd.type_}")
        if (u := pkt.get_protocol(udp.udp)) is not None and u.dst_port == 5353:
            assert l4_checksum_ok(frame)
            seen.add(f"mdns ipv{4 if pkt.get_protocol(ipv4.ipv4) else 6}")
        if pkt.get_protocol(lldp.lldp):
            seen.add("lldp")
    assert seen == {"arp", "icmpv6 135", "icmpv6 133", "mdns ipv4", "mdns ipv6", "lldp"}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_duration_ends_the_program_by_itself():
    """Left alone, it stops after --duration (here on a fresh namespace's loopback)."""
    ns = f"vtap-chatter-{os.getpid()}-d"
    try:
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        start = time.monotonic()
        res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "vtap.lab.chatter", "lo", "--ip", IP,
                              "--duration", "1"], timeout=10, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert 1 <= time.monotonic() - start < 5
    finally:
        _ip("netns", "del", ns, check=False)
