"""`make demo`: the product on a fat-tree, on a private Open vSwitch.

Starts a private OVS and `vtap serve`, builds `fattree,4` (20 switches, 16 hosts) with
Mininet, waits until the controller has discovered every link, pings every host from
every other, then creates the seed's two example TAPs through the REST API, sends
matching and non-matching traffic, and prints per TAP what was sent, received and
copied, and what the monitors captured; then TAP 1 once more to a remote collector, in a
VXLAN tunnel to h9 (another pod), decapsulated by a Linux VXLAN device there. Cleans
everything up.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from mininet.log import setLogLevel


from vtap.cli import main as vtap_main
from vtap.console import table
from vtap.lab.net import expected_links
from vtap.lab.collector import add_collector
from vtap.lab.process import ControllerProcess
from vtap.lab.session import LabSession
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Capture, Flow, marked, send_from

# The seed's policy table (TAP 1 and TAP 2), as REST bodies.
SEED_TAPS = [
    {"name": "tap1", "description": "seed TAP 1: TCP to port 80 from h1 to h2, copied to h3",
     "src_mac": "00:00:00:00:00:01", "src_ip": "10.0.0.1", "dst_mac": "00:00:00:00:00:02", "dst_ip": "10.0.0.2",
     "monitor_mac": "00:00:00:00:00:03", "monitor_ip": "10.0.0.3", "ip_proto": "tcp", "dst_port": 80},
    {"name": "tap2", "description": "seed TAP 2: UDP on VLAN 100 from h1, copied to h4",
     "src_mac": "00:00:00:00:00:01", "src_ip": "10.0.0.1",
     "monitor_mac": "00:00:00:00:00:04", "monitor_ip": "10.0.0.4", "ip_proto": "udp", "vlan_id": 100},
]
REMOTE_TAP = {"name": "tap1-remote", "description": "seed TAP 1, copied in a VXLAN tunnel (VNI 1001) to collector h9",
              "src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "ip_proto": "tcp", "dst_port": 80, "monitor_ip": "10.0.0.9",
              "transport": "vxlan", "tunnel_key": 1001}

# (tap name, receiver, monitor, matching flow, non-matching flow)
H1, H2, H16 = ("00:00:00:00:00:01", "10.0.0.1"), ("00:00:00:00:00:02", "10.0.0.2"), ("00:00:00:00:00:10", "10.0.0.16")
TRAFFIC = [
    ("tap1", "h2", "h3", Flow(H1[0], H2[0], H1[1], H2[1], "tcp", 40000, 80), Flow(H1[0], H2[0], H1[1], H2[1], "tcp", 40000, 22)),
    ("tap2", "h16", "h4", Flow(H1[0], H16[0], H1[1], H16[1], "udp", 5000, 9999, vlan=100),
     Flow(H1[0], H16[0], H1[1], H16[1], "udp", 5000, 9999, vlan=200)),
]
MATCHING, OTHER = 50, 20


def show_taps(ctl: ControllerProcess, net, work: Path) -> bool:
    api, http = ctl.api, ctl.http
    ids = {}
    for body in SEED_TAPS:
        resp = http.post("/api/v1/taps", json=body)
        resp.raise_for_status()
        ids[body["name"]] = resp.json()["id"]
        print(f"== POST /api/v1/taps {body['name']}: id {ids[body['name']]} ({body['description']})")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        taps = http.get("/api/v1/taps").json()
        if all(t["status"] == "active" for t in taps):
            break
        time.sleep(0.2)
    print()
    vtap_main(["tap", "list", "--api", api, "--token", ctl.token])
    print()
    ok = True
    rows = []
    for name, receiver, monitor, match_flow, other_flow in TRAFFIC:
        caps = {h: Capture(net[h], work / f"{name}-{h}.pcap").start() for h in (receiver, monitor)}
        send_from(net["h1"], match_flow, name, MATCHING, interval=0.002)
        send_from(net["h1"], other_flow, name + "-other", OTHER, interval=0.002)
        got = {h: [f for _, f in c.stop() if (marked(f) or "").startswith(name)] for h, c in caps.items()}
        rx = [f for f in got[receiver] if marked(f).startswith(name + ":")]
        rx_other = [f for f in got[receiver] if marked(f).startswith(name + "-other:")]
        copies = [f for f in got[monitor] if marked(f).startswith(name + ":")]
        wrong = [f for f in got[monitor] if marked(f).startswith(name + "-other:")]
        stats = http.get(f"/api/v1/taps/{ids[name]}/stats").json()
        identical = copies == rx
        ok &= len(rx) == MATCHING and identical and not wrong and len(rx_other) == OTHER
        rows.append([name, MATCHING, len(rx), len(copies), "yes" if identical else "NO", f"{OTHER} / {len(rx_other)} / {len(wrong)}",
                     stats["packets"]])
        summary = _summary(copies)
        print(f"== monitor {monitor} captured {len(copies)} copies of {name}; first and last:")
        for line in summary:
            print(f"   {line}")
    print()

    print(table(rows, ["TAP", "SENT", "RECEIVED", "COPIED", "COPIES = RECEIVED", "NON-MATCHING SENT/RECEIVED/COPIED", "TAP COUNTER"]))
    for tap_id in ids.values():
        http.delete(f"/api/v1/taps/{tap_id}")
    return ok and show_remote(ctl, net, work)


def show_remote(ctl: ControllerProcess, net, work: Path) -> bool:
    """TAP 1 to a remote collector: a VXLAN tunnel from h1's switch to h9, whose kernel
    decapsulates; the inner frames are compared with what h2 received."""
    http = ctl.http
    tap = http.post("/api/v1/taps", json=REMOTE_TAP)
    tap.raise_for_status()
    tap_id = tap.json()["id"]
    print(f"\n== POST /api/v1/taps tap1-remote: id {tap_id} ({REMOTE_TAP['description']})")
    deadline = time.monotonic() + 60  # the first tunnel policy: every switch gets its tunnel ports first
    while http.get(f"/api/v1/taps/{tap_id}").json()["status"] != "active" and time.monotonic() < deadline:
        time.sleep(0.2)
    dev = add_collector(net["h9"], "vxlan", REMOTE_TAP["tunnel_key"])
    caps = {"h2": Capture(net["h2"], work / "remote-h2.pcap").start(),
            "h9": Capture(net["h9"], work / "remote-h9.pcap", intf=dev).start()}
    send_from(net["h1"], TRAFFIC[0][3], "remote", MATCHING, interval=0.002)
    got = {h: [f for _, f in c.stop() if (marked(f) or "").startswith("remote:")] for h, c in caps.items()}
    rx = [f for f in got["h2"] if f[6:12] == bytes.fromhex("000000000001")]
    ok = len(rx) == MATCHING and got["h9"] == rx
    print(f"== collector h9 ({dev}, VXLAN VNI {REMOTE_TAP['tunnel_key']}) decapsulated {len(got['h9'])} copies of "
          f"{len(rx)} packets h2 received: {'identical' if got['h9'] == rx else 'DIFFERENT'}")
    http.delete(f"/api/v1/taps/{tap_id}")
    return ok


def _explore(ctl: ControllerProcess) -> None:
    """Interactive runs keep the lab up, with the seed's TAPs, until Enter is pressed."""
    for body in SEED_TAPS:
        ctl.http.post("/api/v1/taps", json=body)
    try:
        input(f"== the fat-tree and the seed's TAPs stay up: open {ctl.api}/ in a browser, sign in with the token above; "
              "press Enter to stop ")
    except EOFError:
        pass


def _summary(frames: list[bytes]) -> list[str]:
    from scapy.layers import inet  # noqa: F401  (so summaries show TCP/UDP)
    from scapy.layers.l2 import Ether

    picks = frames[:2] + (frames[-1:] if len(frames) > 2 else [])
    return [Ether(f).summary() for f in picks]


def run(topo_spec: str = "fattree,4") -> int:
    work = Path(tempfile.mkdtemp(prefix="vtap-demo-"))
    print(f"== vtap demo: {topo_spec} on a private userspace Open vSwitch (work dir {work})")
    with LabSession(parse_topo(topo_spec), work, serve_args=("--tunnels", "local")) as lab:
        ctl, net = lab.ctl, lab.net
        print(f"== controller: OpenFlow 1.3 on 127.0.0.1:{ctl.of_port}, REST API on {ctl.api} (OpenAPI at {ctl.api}/docs)")
        t = lab.timings
        print(f"== {len(net.switches)} switches, {len(net.hosts)} hosts, {len(expected_links(net)) // 2} inter-switch links: "
              f"built in {t['build_s']:.1f}s, discovered and in sync {t['discovered_in_sync_s']:.1f}s later")
        setLogLevel("output")
        loss = net.pingAll(timeout="1")
        setLogLevel("warning")
        print(f"== pingall: {loss:.0f}% loss\n")
        vtap_main(["topo", "--api", ctl.api, "--token", ctl.token])
        print()
        taps_ok = show_taps(ctl, net, work)
        token_file = Path(ctl.state_dir) / "admin.token"
        print(f"\n== web UI: {ctl.api}/   REST API docs: {ctl.api}/docs")
        print(f"== sign in with the admin token in {token_file}: {ctl.token}")
        if sys.stdin.isatty():
            _explore(ctl)
    print("== cleaned up: Mininet hosts, switches, OVS and controller stopped")
    return 0 if loss == 0 and taps_ok else 1


if __name__ == "__main__":
    sys.exit(run(*sys.argv[1:]))
