"""Real parts for integration tests: a private OVS, the controller as its own process, a lab."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import httpx

from tests.waiting import wait_until
from vtap.compile.pipeline import is_forward_group
from vtap.lab.net import attachment, expected_links
from vtap.lab.session import LabSession
from vtap.lab.traffic import Capture, Flow, marked, send_from


def mac(i: int) -> str:
    """Lab host i's MAC (topologies number hosts h1..hN)."""
    return f"00:00:00:00:00:{i:02x}"


def link_local(mac_: str) -> str:
    """The IPv6 link-local address Linux gives an interface with this MAC (EUI-64)."""
    b = bytes.fromhex(mac_.replace(":", ""))
    eui = bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + eui))


def ip(i: int) -> str:
    """Lab host i's IPv4 address."""
    return f"10.0.0.{i}"


class Lab(LabSession):
    """A lab shared by a test module, with the checks the tests make."""

    def __init__(self, topo, workdir: Path, **kw):
        super().__init__(topo, workdir, **kw)
        self.start()

    def expected_links(self) -> set[tuple[int, int, int, int]]:
        return expected_links(self.net)

    def discovered_links(self) -> set[tuple[int, int, int, int]]:
        return {(int(l["src_dpid"], 16), l["src_port"], int(l["dst_dpid"], 16), l["dst_port"]) for l in self.ctl.get("/api/v1/links")}

    def attachment(self, host_name: str) -> tuple[int, int]:
        """The true (dpid, port) a host is wired to."""
        return attachment(self.net[host_name])

    def tables(self) -> dict[str, tuple[list[str], list[str]]]:
        """Every switch's flows and groups, without counters, sorted: comparable across time."""
        out = {}
        for sw in self.net.switches:
            flows = self.ovs.ofctl("--no-stats", "dump-flows", sw.name).splitlines()
            groups = self.ovs.ofctl("dump-groups", sw.name).splitlines()[1:]
            out[sw.name] = (sorted(l.strip() for l in flows if "OFPST" not in l), sorted(g.strip() for g in groups))
        return out

    def wait_tables_equal(self, want: dict, timeout: float) -> dict:
        """The switches' tables once they equal `want`, or as they are at the timeout
        (no error here: the caller compares, and sees the difference)."""
        got = {}

        def equal() -> bool:
            nonlocal got
            got = self.tables()
            return got == want

        try:
            wait_until(equal, timeout, interval=0.25)
        except AssertionError:
            pass
        return got

    def wait_health(self, *, switches: int, links: int, timeout: float) -> dict:
        health = {}

        def settled() -> dict | None:
            nonlocal health
            try:
                health = self.ctl.get("/api/v1/health")
                if health["switches"] == switches and health["switches_in_sync"] == switches and health["links"] == links:
                    return health
            except httpx.HTTPError:
                pass
            return None

        return wait_until(settled, timeout, interval=0.2, message=lambda: f"controller not settled: {health}")


def post(lab: Lab, path: str, body: dict, **params) -> httpx.Response:
    return lab.ctl.http.post(path, json=body, params=params)


def create_tap(lab: Lab, **spec) -> dict:
    resp = post(lab, "/api/v1/taps", spec)
    assert resp.status_code == 201, resp.text
    return resp.json()


def wait_tap(lab: Lab, tap_id: int, status: str = "active", timeout: float = 15) -> dict:
    tap = {}

    def reached() -> dict | None:
        nonlocal tap
        tap = lab.ctl.get(f"/api/v1/taps/{tap_id}")
        return tap if tap["status"] == status else None

    return wait_until(reached, timeout, interval=0.1, message=lambda: f"TAP {tap_id} not {status}: {tap}")


def delete_tap(lab: Lab, tap_id: int) -> None:
    assert lab.ctl.http.delete(f"/api/v1/taps/{tap_id}").status_code == 204


def traffic(lab: Lab, sender: str, flow: Flow, tag: str, count: int, watch: list[str], **kw) -> dict[str, list[bytes]]:
    """Send `count` marked frames and return, per watched host, the frames of `tag` it got
    (from the sender's MAC: not, say, an ICMP error quoting one back)."""
    # Paced, not one burst: OVS's plain (AF_PACKET) ports drop back-to-back bursts of
    # more than ~16 frames on these machines, tapped or not (see DATAPLANE notes).
    kw.setdefault("interval", 0.002)
    caps = {name: Capture(lab.net[name], lab.workdir / f"{tag}-{name}.pcap").start() for name in watch}
    try:
        send_from(lab.net[sender], flow, tag, count, **kw)
    finally:
        got = {name: cap.stop() for name, cap in caps.items()}
    src = bytes.fromhex(flow.src_mac.replace(":", ""))
    return {name: [f for _, f in frames if f[6:12] == src and (marked(f) or "").startswith(tag + ":")] for name, frames in got.items()}


def vtap_rules(lab: Lab) -> list[str]:
    """Every TAP and copy rule (cookie owner 2 or 3) and every group but base forwarding's
    (tap and delivery groups) in the switches."""
    out = []
    for sw in lab.net.switches:
        out += [f"{sw.name}: {l}" for l in lab.ovs.ofctl("dump-flows", sw.name).splitlines()
                if "cookie=0x767402" in l or "cookie=0x767403" in l]
        out += [f"{sw.name}: {l}" for l in lab.ovs.ofctl("dump-groups", sw.name).splitlines()[1:]
                if not is_forward_group(int(l.split("group_id=")[1].split(",")[0]))]
    return out


def ping(host, ip: str, count: int = 1, timeout: int = 1) -> bool:
    out = host.cmd(f"ping -c{count} -W{timeout} {ip}; echo rc=$?")
    return out.strip().endswith("rc=0")


def longest_run(numbers: list[int]) -> int:
    """The longest run of consecutive numbers in a sorted list."""
    best = run = 0
    for i, n in enumerate(numbers):
        run = run + 1 if i and n == numbers[i - 1] + 1 else 1
        best = max(best, run)
    return best
