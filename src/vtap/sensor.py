"""`vtap sensor`: beside a tool on a monitor host, counts the copies that actually reached
the tool's interface, per policy, and reports them to vtap, so that delivery is proven
at the tool and not only at the switch port.

It reads the interface as the tool does (an AF_PACKET socket, frames coming in) and tells
each frame's policy:
- a tunnelled copy (GRE, ERSPAN, VXLAN, Geneve to this collector) by its key;
- a copy on the monitor's port (`vlan` transport: the copy VLAN is gone by then) by the
  policy's match, in its directions.
It knows the policies whose monitor it is from vtap (`GET /api/v1/taps`, every few
seconds), and reports its totals every `interval` (`POST /api/v1/sensors/reports`) with a
token of the `sensor` role, whose scope names its monitor: that token may read, and write
only this monitor's reports. With `--eve`, it also counts the tool's alerts per policy
from Suricata's eve.json (an alert names the flow; the flow names the policy).

`rewrite` copies (addresses rewritten toward the monitor) are not told apart: the sensor
counts only what it can attribute.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from vtap.model.frames import Fields, fields, matches
from vtap.model.policy import TapSpec
from vtap.model.tunnel_frames import decap

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
CLONE_NEWNET = 0x40000000
PACKET_OUTGOING = 4
POLICIES_EVERY_S = 3.0
TUNNEL_KINDS = {"gre": ("gre",), "vxlan": ("vxlan",), "geneve": ("geneve",), "erspan": ("erspan1", "erspan2")}


@dataclass
class Mine:
    """A policy whose copies come here."""

    id: int
    spec: TapSpec

    @property
    def key(self) -> int:
        return self.spec.tunnel_key if self.spec.tunnel_key is not None else self.id


@dataclass
class Counts:
    packets: int = 0
    bytes: int = 0
    policies: dict[int, dict[str, int]] = field(default_factory=dict)

    def add(self, tap_id: int, length: int) -> None:
        c = self.policies.setdefault(tap_id, {"packets": 0, "bytes": 0, "alerts": 0})
        c["packets"] += 1
        c["bytes"] += length

    def alert(self, tap_id: int) -> None:
        self.policies.setdefault(tap_id, {"packets": 0, "bytes": 0, "alerts": 0})["alerts"] += 1


def mine(taps: list[dict], mac: str, ips: set[str]) -> list[Mine]:
    """The enabled policies whose monitor is this host (by MAC or address; a pool's member)."""
    out = []
    for t in taps:
        spec = TapSpec.model_validate({k: t[k] for k in TapSpec.model_fields if k in t})
        monitors = set(spec.monitor_pool or ()) | {spec.monitor_mac, spec.monitor_ip} - {None}
        if spec.enabled and spec.transport != "rewrite" and (mac in monitors or monitors & ips):
            out.append(Mine(t["id"], spec))
    return out


def attribute(policies: list[Mine], frame: bytes) -> list[int]:
    """The policies a frame that reached the tool is a copy of (pure)."""
    tunnelled = decap(frame)
    if tunnelled is not None:
        kind, key, _ = tunnelled
        return [p.id for p in policies if p.spec.tunnel and kind in TUNNEL_KINDS[p.spec.transport] and p.key == key]
    f = fields(frame)
    if f is None:
        return []
    return [p.id for p in policies if not p.spec.tunnel and matches(p.spec, f)]


def alert_policies(policies: list[Mine], alert: dict) -> list[int]:
    """The policies whose traffic an eve.json alert is about (by its flow: addresses,
    protocol, ports; an alert names no MACs)."""
    proto = {"TCP": 6, "UDP": 17, "ICMP": 1, "IPV6-ICMP": 58, "SCTP": 132}.get(str(alert.get("proto", "")).upper())
    f = Fields("", "", None, 6 if ":" in str(alert.get("src_ip", "")) else 4, alert.get("src_ip"), alert.get("dest_ip"),
               proto, alert.get("src_port"), alert.get("dest_port"))
    out = []
    for p in policies:
        if matches(p.spec.model_copy(update={"src_mac": None, "dst_mac": None}), f):
            out.append(p.id)
    return out


class Eve:
    """Suricata's eve.json, read as it grows."""

    def __init__(self, path: Path):
        self.path = path
        self.at = 0
        self.rest = b""

    def alerts(self) -> list[dict]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.at)
                data = f.read()
        except FileNotFoundError:
            return []
        self.at += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        out = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event_type") == "alert":
                out.append(event)
        return out


def interface_addresses(interface: str, netns: str | None = None) -> tuple[str, set[str]]:
    """The interface's MAC and addresses (in network namespace `netns`, if given)."""
    enter = ["nsenter", f"--net={netns}"] if netns else []
    res = subprocess.run([*enter, "ip", "-j", "addr", "show", "dev", interface], capture_output=True, text=True)
    if res.returncode:
        raise OSError(f"no such interface here: {res.stderr.strip()}")
    out = res.stdout
    links = json.loads(out)  # `ip`, not /sys: /sys shows the namespace it was mounted in
    return links[0]["address"], {a["local"] for link in links for a in link.get("addr_info", ())}


def capture_socket(interface: str, netns: str | None = None) -> socket.socket:
    """An AF_PACKET socket on `interface`; with `netns` (a namespace file such as a lab
    host's /proc/PID/ns/net), opened in that namespace by a thread that enters it, while
    this process stays where it reaches the controller (a socket keeps the namespace it
    was made in)."""
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind((interface, 0))
        return sock

    if netns is None:
        return make()
    made: list = []

    def enter_and_make() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(netns, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                made.append(OSError(ctypes.get_errno(), f"setns {netns}: {os.strerror(ctypes.get_errno())}"))
                return
            made.append(make())
        except OSError as exc:
            made.append(exc)
        finally:
            os.close(fd)

    worker = threading.Thread(target=enter_and_make)
    worker.start()
    worker.join()
    if isinstance(made[0], Exception):
        raise made[0]
    return made[0]


def run(client, interface: str, interval: float, eve: Path | None, duration: float | None = None,
        netns: str | None = None) -> None:
    """Count and report until `duration` (None: until stopped). `client`: an object with
    `get(path)` and `post(path, json)` (the API, signed in with the sensor's token)."""
    mac, ips = interface_addresses(interface, netns)
    sock = capture_socket(interface, netns)
    sock.settimeout(0.1)
    counts, policies = Counts(), []
    tail = Eve(eve) if eve else None
    started = time.monotonic()
    next_policies = next_report = started
    log.info("sensor on %s (%s): reporting every %.1f s", interface, mac, interval)
    while duration is None or time.monotonic() - started < duration:
        now = time.monotonic()
        if now >= next_policies:
            policies = mine(client.get("/api/v1/taps"), mac, ips)
            next_policies = now + POLICIES_EVERY_S
        try:
            frame, addr = sock.recvfrom(65535)
            ids = attribute(policies, frame) if addr[2] != PACKET_OUTGOING else []
            for tap_id in ids:
                counts.add(tap_id, len(frame))
            if ids:  # one copy at this monitor, whatever the policies that share it
                counts.packets += 1
                counts.bytes += len(frame)
        except socket.timeout:
            pass
        if now >= next_report:
            for alert in tail.alerts() if tail else ():
                for tap_id in alert_policies(policies, alert):
                    counts.alert(tap_id)
            client.post("/api/v1/sensors/reports", {
                "monitor": mac, "received_packets": counts.packets, "received_bytes": counts.bytes,
                "policies": {str(k): v for k, v in counts.policies.items()}})
            next_report = now + interval
