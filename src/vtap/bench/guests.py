"""DPDK guests on vhost-user ports: the seed's VMs, stood in for by `dpdk-testpmd`.

The seed's sender, receivers and monitor were VMs whose virtio NICs sat on OVS-DPDK
`dpdkvhostuser` ports. Here each of them is a `net_virtio_user` port of one
`dpdk-testpmd` process (package dpdk-dev) in vhost-user server mode, and OVS connects to
it as a `dpdkvhostuserclient` port, as OVS's own tests stand in for a VM.

One process, one forwarding core, for all of them: on this 2-core machine core 1 is the
PMD thread's, and two busy-polling guests on core 0 take turns in scheduler slices. The
receiver then drains its ring only while the sender is descheduled and sending nothing:
measured, ~90 kpps reached a receiver guest while the sender offered 4 Mpps. One
forwarding loop that sends and receives in turn has no such gaps.

testpmd forwards in `io` mode between port pairs, chosen with `set portlist`:
- each guest NIC is paired with a pcap port holding one gratuitous ARP (how a booted VM
  announces itself, so the controller learns its MAC and IP);
- a sender's NIC, while measuring, is paired instead with a pcap port that replays its
  frames without end (`infinite_rx`), one pcap port per frame size;
- what a NIC receives goes to its pcap partner, which drops it (no `tx_pcap`).
`--no-flush-rx`: testpmd otherwise drains every receive queue when forwarding starts, and
the one ARP of an announcement with it.

Counters come from DPDK's telemetry socket (`/ethdev/stats`), not testpmd's console.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from os_ken.lib.packet import arp, ethernet, ipv4, packet, udp

TESTPMD = Path("/usr/bin/dpdk-testpmd")
RUN_DIR = Path("/var/run/dpdk")
MEMORY_MB = 512  # --no-huge: memfd-backed memory that vhost-user can map (no hugetlbfs mount needed)
MBUFS = 65536
START_S = 60.0
# The guest runs on core 0 beside OVS's main thread: core 1 is the PMD thread's.
LCORES = "0@0,1@0"


class GuestUnavailable(RuntimeError):
    """The guest cannot run here; the message says why."""


@dataclass(frozen=True)
class VNic:
    """A guest's virtio NIC: its host's name, addresses, and the vhost-user socket."""

    name: str
    mac: str
    ip: str
    socket: Path


def udp_frames(src: VNic, dst_mac: str, dst_ip: str, dport: int, sports: range, size: int) -> list[bytes]:
    """One UDP frame per source port, `size` bytes on the wire with the 4-byte FCS."""
    frames = []
    for sport in sports:
        pkt = packet.Packet()
        pkt.add_protocol(ethernet.ethernet(dst=dst_mac, src=src.mac, ethertype=0x0800))
        pkt.add_protocol(ipv4.ipv4(src=src.ip, dst=dst_ip, proto=17, ttl=64))
        pkt.add_protocol(udp.udp(src_port=sport, dst_port=dport))
        pkt.add_protocol(b"A" * max(0, size - 4 - 42))
        pkt.serialize()
        frames.append(bytes(pkt.data))
    return frames


def gratuitous_arp(nic: VNic) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=nic.mac, ethertype=0x0806))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=nic.mac, src_ip=nic.ip, dst_mac="00:00:00:00:00:00",
                             dst_ip=nic.ip))
    pkt.serialize()
    return bytes(pkt.data)


def write_pcap(path: Path, frames: list[bytes]) -> Path:
    """A classic pcap file (microsecond stamps, Ethernet), what DPDK's pcap driver reads."""
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for frame in frames:
            f.write(struct.pack("<IIII", 0, 0, len(frame), len(frame)))
            f.write(frame)
    return path


def check_installed() -> None:
    if not TESTPMD.exists():
        raise GuestUnavailable(f"{TESTPMD} is missing: install dpdk-dev (`make test` does)")
    for driver in ("librte-net-virtio23", "librte-net-pcap23"):
        status = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", driver], capture_output=True, text=True).stdout
        if "install ok installed" not in status:
            raise GuestUnavailable(f"DPDK's {driver} is missing (its driver plugin): install it (`make test` does)")


class Telemetry:
    """DPDK's telemetry socket of one process: JSON answers to `/command,arg`."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(str(path))
        self.max_len = json.loads(self.sock.recv(65536))["max_output_len"]

    def __call__(self, command: str) -> dict:
        self.sock.send(command.encode())
        answer = json.loads(self.sock.recv(self.max_len))
        return answer[command.split(",")[0]]

    def close(self) -> None:
        self.sock.close()


class Guest:
    """One testpmd process holding every guest NIC of a testbed.

    `streams[(nic, size)]` is the frames `nic` sends at `size`."""

    def __init__(self, workdir: Path, nics: list[VNic], streams: dict[tuple[str, int], list[bytes]]):
        self.workdir = workdir
        self.nics = nics
        self.prefix = f"vtap-guest-{os.getpid()}"
        self.proc: subprocess.Popen | None = None
        self.telemetry: Telemetry | None = None
        self.vdevs: list[str] = []
        for i, nic in enumerate(nics):
            self.vdevs.append(f"net_virtio_user{i},path={nic.socket},server=1,mac={nic.mac},queue_size=1024")
        # Port ids follow the --vdev order: NICs, their announcements, then the streams.
        for i, nic in enumerate(nics):
            pcap = write_pcap(workdir / f"garp-{nic.name}.pcap", [gratuitous_arp(nic)])
            self.vdevs.append(f"net_pcap{i},rx_pcap={pcap}")
        self.stream_port: dict[tuple[str, int], int] = {}
        for j, (key, frames) in enumerate(sorted(streams.items())):
            pcap = write_pcap(workdir / f"stream-{key[0]}-{key[1]}.pcap", frames)
            self.vdevs.append(f"net_pcap{len(nics) + j},rx_pcap={pcap},infinite_rx=1")
            self.stream_port[key] = len(self.vdevs) - 1

    def nic_port(self, name: str) -> int:
        return next(i for i, nic in enumerate(self.nics) if nic.name == name)

    def start(self) -> Guest:
        """Start testpmd; return once OVS has connected to every NIC (the caller adds the
        `dpdkvhostuserclient` ports, before or after)."""
        check_installed()
        cmd = [str(TESTPMD), "--lcores", LCORES, "--file-prefix", self.prefix, "--no-pci", "--no-huge",
               "-m", str(MEMORY_MB), *(f"--vdev={v}" for v in self.vdevs), "--", "-i", "--forward-mode=io",
               "--nb-cores=1", "--no-flush-rx", f"--total-num-mbufs={MBUFS}", "--rxd=1024", "--txd=1024"]
        self.log = self.workdir / "testpmd.log"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        return self

    def wait_linked(self) -> None:
        deadline = time.monotonic() + START_S
        path = RUN_DIR / self.prefix / "dpdk_telemetry.v2"
        while time.monotonic() < deadline:
            self._check_alive()
            if self.telemetry is None and path.exists():
                try:
                    self.telemetry = Telemetry(path)
                except OSError:
                    pass
            if self.telemetry is not None:
                links = [self.telemetry(f"/ethdev/link_status,{i}").get("status") for i in range(len(self.nics))]
                if all(link == "UP" for link in links):
                    return
            time.sleep(0.2)
        raise GuestUnavailable(f"the guest's NICs did not come up in {START_S:g} s; {self.log}: {self._tail()}")

    def _check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise GuestUnavailable(f"dpdk-testpmd exited; {self.log}: {self._tail()}")

    def _tail(self) -> str:
        return " | ".join(self.log.read_text(errors="replace").splitlines()[-6:]) if self.log.exists() else ""

    def _command(self, *lines: str) -> None:
        self._check_alive()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{line}\n" for line in lines))
        self.proc.stdin.flush()

    def _forward(self, pairs: list[tuple[int, int]]) -> None:
        ports = ",".join(f"{a},{b}" for a, b in pairs)
        self._command("stop", f"set portlist {ports}", "start")

    def announce(self) -> None:
        """Every NIC sends its gratuitous ARP (once per process: the pcap ends there)."""
        self._forward([(len(self.nics) + i, i) for i in range(len(self.nics))])

    def send(self, size: int) -> None:
        """Senders replay their `size` stream without end; every NIC receives."""
        pairs = []
        for i, nic in enumerate(self.nics):
            pairs.append((self.stream_port.get((nic.name, size), len(self.nics) + i), i))
        self._forward(pairs)

    def quiet(self) -> None:
        self._command("stop")

    def stats(self, name: str) -> dict[str, int]:
        """The NIC's own counters: what the guest sent and received."""
        assert self.telemetry is not None
        s = self.telemetry(f"/ethdev/stats,{self.nic_port(name)}")
        return {"tx_packets": s["opackets"], "rx_packets": s["ipackets"], "rx_bytes": s["ibytes"],
                "rx_missed": s["imissed"], "rx_nombuf": s["rx_nombuf"]}

    def close(self) -> None:
        if self.telemetry is not None:
            self.telemetry.close()
            self.telemetry = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._command("stop", "quit")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired, GuestUnavailable):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
