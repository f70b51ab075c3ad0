"""Frames from hosts are data, never control: attacks from ordinary host ports of `fattree,4`.

Each test is one attack from `../shared/design/SERVICE.md`, made with real frames from
Mininet hosts, and checks what a wiretap must keep: no link appears, no host is
forgotten or moved, the monitor gets every copy and nobody else does, the policy's
status tells the truth.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time

import pytest
from os_ken.lib.packet import arp, ethernet, lldp, packet
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from tests.integration.harness import Lab, create_tap, delete_tap, ip, mac, traffic, wait_tap
from tests.waiting import wait_until
from vtap.control.discovery import lldp_frame
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Flow, marked, send_frames


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(parse_topo("fattree,4"), tmp_path_factory.mktemp("trust"))
    lab.net.pingAll(timeout="1")
    yield lab
    lab.close()


def snapshot(lab: Lab) -> tuple[set, dict]:
    """Links, and where every host is."""
    hosts = {h["mac"]: (h["dpid"], h["port"], tuple(h["ips"])) for h in lab.ctl.get("/api/v1/hosts")}
    return lab.discovered_links(), hosts


def forged_lldp(dpid: int, port: int, src: str, *, proof: bool = True) -> bytes:
    """The controller's LLDP format naming (dpid, port): with a proof under a key the
    attacker guessed, or without the proof TLV (the format before authentication)."""
    if proof:
        return lldp_frame(dpid, port, src, os.urandom(32), os.urandom(8))
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=lldp.LLDP_MAC_NEAREST_BRIDGE, src=src, ethertype=0x88CC))
    pkt.add_protocol(lldp.lldp((lldp.ChassisID(subtype=7, chassis_id=b"dpid:%016x" % dpid), lldp.PortID(subtype=2, port_id=b"%d" % port),
                                lldp.TTL(ttl=120), lldp.End())))
    pkt.serialize()
    return bytes(pkt.data)


def arp_frame(src_mac: str, src_ip: str, dst_mac: str, dst_ip: str, op: int) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=dst_mac if op == arp.ARP_REPLY else "ff:ff:ff:ff:ff:ff", src=src_mac, ethertype=0x0806))
    pkt.add_protocol(arp.arp(opcode=op, src_mac=src_mac, src_ip=src_ip, dst_mac=dst_mac, dst_ip=dst_ip))
    pkt.serialize()
    return bytes(pkt.data)


def active_tap(lab: Lab, tap_name: str, src: int, dst: int, monitor: int) -> dict:
    tap = create_tap(lab, name=tap_name, src_ip=ip(src), dst_ip=ip(dst), ip_proto="udp", monitor_ip=ip(monitor))
    wait_tap(lab, tap["id"])
    return tap


def test_forged_lldp_makes_no_link_and_forgets_no_host(lab):
    tap = active_tap(lab, "lldp", 1, 16, 9)
    links, hosts = snapshot(lab)
    refused = lab.ctl.get("/api/v1/health")["lldp_refused"]
    h1, h9, h2 = (lab.attachment(h) for h in ("h1", "h9", "h2"))
    core = (0x0101, 1)
    frames = {
        "h1": [forged_lldp(*h1, mac(1)), forged_lldp(*h1, mac(1), proof=False)],  # its own port: to escape its TAP
        "h2": [forged_lldp(*core, mac(2)), forged_lldp(*core, mac(2), proof=False)],  # another switch's port
        "h3": [forged_lldp(*h9, mac(3)), forged_lldp(*h9, mac(3), proof=False)],  # the monitor's port: to detach it
    }
    for name, fs in frames.items():
        send_frames(lab.net[name], fs * 5, lab.workdir / f"lldp-{name}.bin", interval=0.05)
    time.sleep(2.5)  # more than two discovery rounds
    assert snapshot(lab) == (links, hosts)
    after = lab.ctl.get("/api/v1/health")["lldp_refused"]
    assert after["forged"] - refused["forged"] == 30
    assert lab.ctl.get(f"/api/v1/taps/{tap['id']}")["status"] == "active"
    got = traffic(lab, "h1", Flow(mac(1), mac(16), ip(1), ip(16), "udp"), "l1", 20, ["h16", "h9"])
    assert len(got["h16"]) == 20 and got["h9"] == got["h16"]
    delete_tap(lab, tap["id"])


def test_replayed_lldp_from_a_link_is_refused(lab):
    """Authenticated frames captured on an inter-switch link, sent later from a host port."""
    links, hosts = snapshot(lab)
    sw = lab.net["e1"]
    link_intf = next(i for i in sw.intfList() if i.link and i.name != "lo" and not i.link.intf1.node.name.startswith("h")
                     and not i.link.intf2.node.name.startswith("h"))
    cap = lab.workdir / "captured-lldp.pcap"
    subprocess.run(["timeout", "3", "tcpdump", "-i", link_intf.name, "-w", str(cap), "-c", "2", "ether", "proto", "0x88cc"],
                   capture_output=True)
    from vtap.lab.traffic import read_pcap

    captured = [f for _, f in read_pcap(cap)]
    assert len(captured) == 2
    time.sleep(2.5)  # two rounds later
    before = lab.ctl.get("/api/v1/health")["lldp_refused"]["replayed"]
    send_frames(lab.net["h5"], captured * 3, lab.workdir / "replay.bin", interval=0.05)
    wait_until(lambda: lab.ctl.get("/api/v1/health")["lldp_refused"]["replayed"] >= before + 6, 3)
    assert snapshot(lab) == (links, hosts)


def test_two_hosts_announcing_each_others_ports_make_no_wormhole(lab):
    links, hosts = snapshot(lab)
    h4, h13 = lab.attachment("h4"), lab.attachment("h13")
    # For 10 s each names the other's switch port, in the controller's own format.
    procs = [send_frames(lab.net["h4"], [forged_lldp(*h13, mac(4)), forged_lldp(*h13, mac(4), proof=False)] * 50,
                         lab.workdir / "wh4.bin", interval=0.1, wait=False),
             send_frames(lab.net["h13"], [forged_lldp(*h4, mac(13)), forged_lldp(*h4, mac(13), proof=False)] * 50,
                         lab.workdir / "wh13.bin", interval=0.1, wait=False)]
    try:
        time.sleep(5)
        got = traffic(lab, "h14", Flow(mac(14), mac(13), ip(14), ip(13), "udp"), "w1", 20, ["h13", "h4"])
        assert len(got["h13"]) == 20 and got["h4"] == []
        got = traffic(lab, "h3", Flow(mac(3), mac(4), ip(3), ip(4), "udp"), "w2", 20, ["h4", "h13"])
        assert len(got["h4"]) == 20 and got["h13"] == []
    finally:
        for p in procs:
            p.wait(timeout=20)
    assert snapshot(lab) == (links, hosts)


def test_frames_tagged_with_reserved_copy_vlans_never_reach_a_monitor(lab):
    tap = active_tap(lab, "vid", 5, 12, 9)
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Dot1Q, Ether

    frames = []
    for vid in range(3968, 4095):
        for dst in (mac(9), "ff:ff:ff:ff:ff:ff", mac(12)):
            frames.append(bytes(Ether(src=mac(6), dst=dst) / Dot1Q(vlan=vid) / IP(src=ip(6), dst=ip(9)) / UDP(dport=9) / f"vtap:rv:{vid}:".encode()))
    from vtap.lab.traffic import Capture

    caps = {n: Capture(lab.net[n], lab.workdir / f"rv-{n}.pcap").start() for n in ("h9", "h12", "h5", "h1")}
    send_frames(lab.net["h6"], frames, lab.workdir / "rv.bin", interval=0.001)
    got = {n: [f for _, f in c.stop() if (marked(f) or "").startswith("rv:")] for n, c in caps.items()}
    assert got == {"h9": [], "h12": [], "h5": [], "h1": []}
    # Meanwhile real copies still arrive.
    real = traffic(lab, "h5", Flow(mac(5), mac(12), ip(5), ip(12), "udp"), "v1", 10, ["h12", "h9"])
    assert len(real["h12"]) == 10 and real["h9"] == real["h12"]
    delete_tap(lab, tap["id"])


def _fake_switch(port: int, dpid: int, stop: threading.Event, attempts: list) -> None:
    """A TCP client that completes the OpenFlow handshake claiming `dpid`, answers echo,
    and reconnects whenever it is closed, until `stop`."""
    hdr = struct.Struct("!BBHI")
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            time.sleep(0.2)
            continue
        attempts.append(time.monotonic())
        try:
            s.sendall(hdr.pack(4, 0, 8, 1))  # HELLO
            buf = b""
            while not stop.is_set():
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 8:
                    _, typ, length, xid = hdr.unpack_from(buf)
                    if len(buf) < length:
                        break
                    body, buf = buf[8:length], buf[length:]
                    if typ == 5:  # FEATURES_REQUEST
                        s.sendall(hdr.pack(4, 6, 32, xid) + struct.pack("!QIBB2xII", dpid, 0, 254, 0, 0x4F, 0))
                    elif typ == 18:  # MULTIPART_REQUEST (port description): no ports
                        s.sendall(hdr.pack(4, 19, 16, xid) + struct.pack("!HH4x", 13, 0))
                    elif typ == 2:  # ECHO_REQUEST
                        s.sendall(hdr.pack(4, 3, 8 + len(body), xid) + body)
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.1)


def test_a_client_claiming_a_connected_switchs_dpid_is_refused(lab):
    e1 = 0x030001
    before = {d["dpid"]: d["connected_since"] for d in lab.ctl.get("/api/v1/devices")}
    refused = lab.ctl.get("/api/v1/health")["refused_connections"]
    stop, attempts = threading.Event(), []
    thief = threading.Thread(target=_fake_switch, args=(lab.ctl.of_port, e1, stop, attempts))
    thief.start()
    pinger = lab.net["h1"].popen(["ping", "-i", "0.05", "-c", "200", ip(2)], stdout=subprocess.PIPE, text=True)
    far = lab.net["h2"].popen(["ping", "-i", "0.05", "-c", "200", ip(16)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(10)
    finally:
        stop.set()
        thief.join(timeout=10)
    near_out, far_out = pinger.communicate(timeout=30)[0], far.communicate(timeout=30)[0]
    assert " 0% packet loss" in near_out and " 0% packet loss" in far_out, (near_out[-200:], far_out[-200:])
    assert len(attempts) >= 3
    assert lab.ctl.get("/api/v1/health")["refused_connections"] - refused >= len(attempts) - 1
    after = {d["dpid"]: d["connected_since"] for d in lab.ctl.get("/api/v1/devices")}
    assert after == before  # the real switch was never disconnected or replaced


def test_a_mac_flood_is_capped_and_costs_the_others_nothing(lab):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    pid = lab.ctl.proc.pid

    def rss_mib() -> float:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    hosts_before = len(lab.ctl.get("/api/v1/hosts"))
    rss_before = rss_mib()
    frames = [bytes(Ether(src=f"02:aa:{i >> 16 & 0xff:02x}:{i >> 8 & 0xff:02x}:{i & 0xff:02x}:01", dst=mac(12))
                    / IP(src=ip(11), dst=ip(12)) / UDP(dport=9)) for i in range(6000)]
    flood = send_frames(lab.net["h11"], frames, lab.workdir / "flood.bin", interval=0.001, wait=False)
    near = lab.net["h9"].popen(["ping", "-i", "0.05", "-c", "120", ip(10)], stdout=subprocess.PIPE, text=True)
    far = lab.net["h1"].popen(["ping", "-i", "0.05", "-c", "120", ip(16)], stdout=subprocess.PIPE, text=True)
    flood.wait(timeout=60)
    near_out, far_out = near.communicate(timeout=30)[0], far.communicate(timeout=30)[0]
    assert " 0% packet loss" in near_out and " 0% packet loss" in far_out, (near_out[-200:], far_out[-200:])
    hosts_after = lab.ctl.get("/api/v1/hosts")
    assert len(hosts_after) - hosts_before <= 32
    port = lab.attachment("h11")
    refused = next(p["refused_macs"] for d in lab.ctl.get("/api/v1/devices") if int(d["dpid"], 16) == port[0]
                   for p in d["ports"] if p["port_no"] == port[1])
    assert refused >= 4000
    assert rss_mib() - rss_before < 30
    lab.wait_health(switches=20, links=64, timeout=10)


def test_claims_on_a_monitors_and_a_sources_address_are_held(lab):
    """Runs last: the held claims stay reported for a while."""
    tap = active_tap(lab, "claims", 3, 14, 10)
    attacker = "h7"
    claims = [
        arp_frame(mac(7), ip(10), "ff:ff:ff:ff:ff:ff", ip(10), arp.ARP_REQUEST),  # gratuitous ARP for the monitor
        arp_frame(mac(7), ip(10), mac(3), ip(3), arp.ARP_REPLY),  # an unasked reply to the source
        arp_frame(mac(7), ip(3), "ff:ff:ff:ff:ff:ff", ip(3), arp.ARP_REQUEST),  # the tapped source's address
    ]
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    claims.append(bytes(Ether(src=mac(7), dst=mac(14)) / IP(src=ip(10), dst=ip(14)) / UDP(dport=9)))  # IP source
    send_frames(lab.net[attacker], claims * 3, lab.workdir / "claims.bin", interval=0.05)
    status = wait_tap(lab, tap["id"], "degraded", timeout=5)
    assert "identity conflict" in status["status_reason"] and ip(10) in status["status_reason"]
    conflicts = {c["address"]: c for c in lab.ctl.get("/api/v1/conflicts")}
    assert conflicts[ip(10)]["claimant"] == mac(7) and conflicts[ip(10)]["owner"] == mac(10)
    assert conflicts[ip(3)]["owner"] == mac(3)
    # The copies do not move: the real monitor gets every one, the attacker none.
    got = traffic(lab, "h3", Flow(mac(3), mac(14), ip(3), ip(14), "udp"), "c1", 20, ["h14", "h10", attacker])
    assert len(got["h14"]) == 20 and got["h10"] == got["h14"] and got[attacker] == []
    # Proxy ARP still answers with the real monitor's MAC, and the source's victim kept its cache.
    out = lab.net["h15"].cmd(f"ip neigh flush all; ping -c1 -W1 {ip(10)} >/dev/null; ip neigh show {ip(10)}")
    assert mac(10) in out, out
    hosts = {h["mac"]: h for h in lab.ctl.get("/api/v1/hosts")}
    assert ip(10) in hosts[mac(10)]["ips"] and ip(10) not in hosts[mac(7)]["ips"]
    # Bound by place: seconds later the claim is still held, whatever the owner sends.
    time.sleep(4)
    assert lab.ctl.get(f"/api/v1/taps/{tap['id']}")["status"] == "degraded"
    assert ip(10) in {h["mac"]: h for h in lab.ctl.get("/api/v1/hosts")}[mac(10)]["ips"]
    assert lab.ctl.http.post(f"/api/v1/hosts/{mac(8)}/confirm-move").status_code == 404
    delete_tap(lab, tap["id"])


def test_a_silent_monitor_keeps_its_copies_against_claims_until_an_operator_confirms(lab):
    """Real monitors (IDS sensors) never send a frame and do not answer ARP. h11 (by IP)
    and h12 (by MAC) are known, then silenced: ARP off and IPv6 off (a sensor's capture
    interface has no addresses; with IPv6 on, the kernel itself would send MLD reports).
    For 30 s h7 claims h11's address (gratuitous ARP) and sends frames with h12's MAC, 20
    a second. The real monitors keep every copy, h7 gets none, both policies stay
    `degraded` with the conflict; after confirm-move (admin) the copies go where the
    operator said, and each policy's history has the move."""
    for name in ("h11", "h12"):
        host = lab.net[name]
        assert "rc=0" in host.cmd(f"ping -c1 -W1 {ip(1)} >/dev/null; echo rc=$?")
        host.cmd(f"ip link set dev {host.defaultIntf()} arp off; sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
    by_ip = active_tap(lab, "silent-ip", 5, 16, 11)
    by_mac = create_tap(lab, name="silent-mac", src_ip=ip(6), dst_ip=ip(16), ip_proto="udp", monitor_mac=mac(12))
    wait_tap(lab, by_mac["id"])
    claims = [arp_frame(mac(7), ip(11), "ff:ff:ff:ff:ff:ff", ip(11), arp.ARP_REQUEST),
              bytes(Ether(src=mac(12), dst="ff:ff:ff:ff:ff:ff") / IP(src=ip(12), dst="255.255.255.255") / UDP(dport=9))]
    proc = send_frames(lab.net["h7"], claims * 300, lab.workdir / "silent.bin", interval=0.05, wait=False)
    try:
        time.sleep(1)
        for round_ in range(5):  # 30 s of claims, checked every ~6 s
            for tap, src, monitor in ((by_ip, 5, "h11"), (by_mac, 6, "h12")):
                st = lab.ctl.get(f"/api/v1/taps/{tap['id']}")
                assert st["status"] == "degraded" and "identity conflict" in st["status_reason"], st
                got = traffic(lab, f"h{src}", Flow(mac(src), mac(16), ip(src), ip(16), "udp"), f"s{round_}{src}", 20,
                              ["h16", monitor, "h7"])
                assert len(got["h16"]) == 20 and got[monitor] == got["h16"] and got["h7"] == [], (round_, monitor)
            time.sleep(4)
    finally:
        proc.wait(timeout=30)
    # The claims keep coming: the operator confirms both moves.
    proc = send_frames(lab.net["h7"], claims * 100, lab.workdir / "silent2.bin", interval=0.05, wait=False)
    try:
        time.sleep(0.5)
        assert lab.ctl.http.post(f"/api/v1/hosts/{mac(7)}/confirm-move").json()["applied"] == 1  # h11's address
        assert lab.ctl.http.post(f"/api/v1/hosts/{mac(12)}/confirm-move").json()["applied"] == 1  # h12's MAC
        for tap, src, monitor in ((by_ip, 5, "h11"), (by_mac, 6, "h12")):
            wait_until(lambda: lab.ctl.get(f"/api/v1/taps/{tap['id']}")["status"] == "active", 10)
            got = traffic(lab, f"h{src}", Flow(mac(src), mac(16), ip(src), ip(16), "udp"), f"moved{src}", 20,
                          ["h16", monitor, "h7"])
            assert len(got["h16"]) == 20 and got["h7"] == got["h16"] and got[monitor] == []
    finally:
        proc.wait(timeout=30)
    for tap in (by_ip, by_mac):
        history = lab.ctl.http.get("/api/v1/audit", params={"target": f"tap:{tap['id']}"}).json()
        moves = [r for r in history if r["action"] == "tap.identity-move"]
        assert len(moves) == 1 and moves[0]["actor"] == "admin" and moves[0]["after"]["port"] == lab.attachment("h7")[1]
    for name in ("h11", "h12"):
        host = lab.net[name]
        host.cmd(f"ip link set dev {host.defaultIntf()} arp on; sysctl -qw net.ipv6.conf.all.disable_ipv6=0")
    delete_tap(lab, by_ip["id"])
    delete_tap(lab, by_mac["id"])
