"""Crafted traffic and captures inside lab hosts: scapy to send, tcpdump to capture.

Every crafted frame carries a marker in its payload ("vtap:<tag>:<seq>"), so that
captures can be counted and compared exactly, whatever else the hosts send.

    python -m vtap.lab.traffic send --iface h1-eth0 --tag t1 --count 10 \\
        --src-mac 00:00:00:00:00:01 --dst-mac 00:00:00:00:00:10 \\
        --src-ip 10.0.0.1 --dst-ip 10.0.0.16 --proto tcp --sport 40000 --dport 80 [--vlan 100] [--interval 0.01]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MARK = b"vtap:"


@dataclass(frozen=True)
class Flow:
    """What to send: one L2-L4 header set (IPv6 when the addresses are)."""

    src_mac: str
    dst_mac: str
    src_ip: str
    dst_ip: str
    proto: str = "udp"  # tcp | udp | icmp
    sport: int = 40000
    dport: int = 80
    vlan: int | None = None

    def args(self) -> list[str]:
        out = ["--src-mac", self.src_mac, "--dst-mac", self.dst_mac, "--src-ip", self.src_ip, "--dst-ip", self.dst_ip,
               "--proto", self.proto, "--sport", str(self.sport), "--dport", str(self.dport)]
        if self.vlan is not None:
            out += ["--vlan", str(self.vlan)]
        return out


def frames(flow: Flow, tag: str, count: int, start: int = 0, size: int = 0) -> list[bytes]:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether

    out = []
    for seq in range(start, start + count):
        l2 = Ether(src=flow.src_mac, dst=flow.dst_mac)
        if flow.vlan is not None:
            l2 = l2 / Dot1Q(vlan=flow.vlan)
        l4 = {"tcp": lambda: TCP(sport=flow.sport, dport=flow.dport, flags="PA", seq=seq),
              "udp": lambda: UDP(sport=flow.sport, dport=flow.dport),
              "icmp": lambda: ICMP(id=flow.sport, seq=seq)}[flow.proto]()
        payload = MARK + f"{tag}:{seq}:".encode()
        payload += b"x" * max(0, size - len(payload))
        l3 = IPv6(src=flow.src_ip, dst=flow.dst_ip) if ":" in flow.src_ip else IP(src=flow.src_ip, dst=flow.dst_ip)
        out.append(bytes(l2 / l3 / l4 / payload))
    return out


def marked(frame: bytes) -> str | None:
    """'tag:seq' of a crafted frame, or None."""
    i = frame.find(MARK)
    if i < 0:
        return None
    end = frame.find(b":", frame.find(b":", i + len(MARK)) + 1)
    return frame[i + len(MARK) : end].decode(errors="replace") if end > 0 else None


def read_pcap(path: str | Path) -> list[tuple[float, bytes]]:
    from scapy.utils import RawPcapReader

    if not Path(path).exists() or Path(path).stat().st_size == 0:
        return []
    return [(meta.sec + meta.usec / 1e6, bytes(data)) for data, meta in RawPcapReader(str(path))]


class Capture:
    """tcpdump on a host's interface, written to a pcap file."""

    def __init__(self, host, path: str | Path, intf: str | None = None):
        self.host = host
        self.path = Path(path)
        self.intf = intf or str(host.defaultIntf())
        self.proc = None

    def start(self) -> Capture:
        self.proc = self.host.popen(
            ["tcpdump", "-i", self.intf, "-w", str(self.path), "-U", "-n", "-s", "0", "-B", "8192", "--immediate-mode",
             "not", "ether", "proto", "0x88cc"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        # tcpdump says "listening on" once it captures.
        os.set_blocking(self.proc.stderr.fileno(), False)
        deadline = time.monotonic() + 5
        buf = b""
        while b"listening on" not in buf and time.monotonic() < deadline:
            time.sleep(0.05)
            buf += self.proc.stderr.read() or b""
        return self

    def stop(self) -> list[tuple[float, bytes]]:
        time.sleep(0.3)  # let frames in flight land
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=5)
        return read_pcap(self.path)

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()


def send_from(host, flow: Flow, tag: str, count: int, *, start: int = 0, interval: float = 0.0, size: int = 0) -> None:
    """Send crafted frames from a lab host (scapy in the host's namespace)."""
    cmd = [sys.executable, "-m", "vtap.lab.traffic", "send", "--iface", str(host.defaultIntf()), "--tag", tag,
           "--count", str(count), "--start", str(start), "--interval", str(interval), "--size", str(size), *flow.args()]
    proc = host.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    if proc.returncode:
        raise RuntimeError(f"sending from {host.name} failed: {err.decode()[-500:]}")


def send_frames(host, frames: list[bytes], path: str | Path, *, interval: float = 0.0, wait: bool = True):
    """Send arbitrary frames (forged LLDP, tagged frames, ARP claims...) from a lab host,
    as they are: written to `path` (each frame behind its 2-byte length) and replayed by
    `python -m vtap.lab.traffic replay` in the host's namespace. With `wait` False, the
    running process is returned."""
    Path(path).write_bytes(b"".join(len(f).to_bytes(2, "big") + f for f in frames))
    cmd = [sys.executable, "-m", "vtap.lab.traffic", "replay", "--iface", str(host.defaultIntf()), "--file", str(path),
           "--interval", str(interval)]
    proc = host.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait:
        return proc
    _, err = proc.communicate(timeout=300)
    if proc.returncode:
        raise RuntimeError(f"replaying frames from {host.name} failed: {err.decode()[-500:]}")
    return None


def _replay(iface: str, path: str, interval: float) -> None:
    import socket

    data = Path(path).read_bytes()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    i = 0
    next_at = time.monotonic()
    while i < len(data):
        size = int.from_bytes(data[i : i + 2], "big")
        sock.send(data[i + 2 : i + 2 + size])
        i += 2 + size
        if interval:
            # Paced against the clock, not by sleeping a fixed time: the rate holds.
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vtap.lab.traffic")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send", help="send crafted, marked frames")
    s.add_argument("--iface", required=True)
    s.add_argument("--tag", required=True)
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--start", type=int, default=0)
    s.add_argument("--interval", type=float, default=0.0)
    s.add_argument("--size", type=int, default=0, help="pad the payload to this many bytes")
    s.add_argument("--src-mac", required=True)
    s.add_argument("--dst-mac", required=True)
    s.add_argument("--src-ip", required=True)
    s.add_argument("--dst-ip", required=True)
    s.add_argument("--proto", choices=["tcp", "udp", "icmp"], default="udp")
    s.add_argument("--sport", type=int, default=40000)
    s.add_argument("--dport", type=int, default=80)
    s.add_argument("--vlan", type=int, default=None)
    r = sub.add_parser("replay", help="send the frames of a file (2-byte length, frame, ...)")
    r.add_argument("--iface", required=True)
    r.add_argument("--file", required=True)
    r.add_argument("--interval", type=float, default=0.0)
    args = ap.parse_args(argv)
    if args.cmd == "replay":
        _replay(args.iface, args.file, args.interval)
        return 0
    flow = Flow(args.src_mac, args.dst_mac, args.src_ip, args.dst_ip, args.proto, args.sport, args.dport, args.vlan)
    import socket

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.iface, 0))
    for frame in frames(flow, args.tag, args.count, args.start, args.size):
        sock.send(frame)
        if args.interval:
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
