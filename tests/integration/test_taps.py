"""TAP policies end to end on real OVS (`fattree,4`): crafted packets, tcpdump at receiver and monitor."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.integration.harness import Lab, create_tap, delete_tap, ip, mac, post, traffic, vtap_rules, wait_tap
from tests.waiting import wait_until
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Capture, Flow, marked, send_from


def flow(src: int, dst: int, proto: str = "tcp", sport: int = 40000, dport: int = 80, vlan=None) -> Flow:
    return Flow(mac(src), mac(dst), ip(src), ip(dst), proto, sport, dport, vlan)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(parse_topo("fattree,4"), tmp_path_factory.mktemp("taps"))
    lab.net.pingAll(timeout="1")  # every host known to the controller
    yield lab
    lab.close()


def test_matching_packets_copied_exactly_once_byte_identical(lab):
    # The seed's TAP 1, with a monitor in another pod.
    tap = create_tap(lab, name="tap1", src_ip=ip(1), dst_ip=ip(16), ip_proto="tcp", dst_port=80, monitor_ip=ip(9))
    wait_tap(lab, tap["id"])
    got = traffic(lab, "h1", flow(1, 16), "m1", 25, ["h16", "h9"])
    assert len(got["h16"]) == 25
    assert got["h9"] == got["h16"]  # the copies are exactly what the receiver got
    stats = lab.ctl.get(f"/api/v1/taps/{tap['id']}/stats")
    assert stats["packets"] >= 25 and stats["copies"] == stats["packets"] and stats["bytes"] > 0

    # Not copied: other port, other protocol, other direction, other source.
    for tag, sender, f in [("n1", "h1", flow(1, 16, dport=81)), ("n2", "h1", flow(1, 16, proto="udp")),
                           ("n3", "h16", flow(16, 1, sport=80, dport=40000)), ("n4", "h2", flow(2, 16))]:
        got = traffic(lab, sender, f, tag, 5, ["h9", f"h{int(f.dst_mac[-2:], 16)}"])
        assert got["h9"] == [], tag
        assert len(got[f"h{int(f.dst_mac[-2:], 16)}"]) == 5, tag
    delete_tap(lab, tap["id"])


def test_both_directions_one_copy_of_each_packet(lab):
    tap = create_tap(lab, name="both", src_ip=ip(2), dst_ip=ip(15), ip_proto="udp", direction="both", monitor_ip=ip(5))
    wait_tap(lab, tap["id"])
    a = traffic(lab, "h2", flow(2, 15, proto="udp"), "b1", 10, ["h15", "h5"])
    b = traffic(lab, "h15", flow(15, 2, proto="udp"), "b2", 10, ["h2", "h5"])
    assert a["h5"] == a["h15"] and len(a["h5"]) == 10
    assert b["h5"] == b["h2"] and len(b["h5"]) == 10
    delete_tap(lab, tap["id"])


def test_overlapping_policies_each_get_their_copies(lab):
    t1 = create_tap(lab, name="ov-a", src_ip=ip(3), dst_ip=ip(14), monitor_ip=ip(7))
    t2 = create_tap(lab, name="ov-b", src_ip=ip(3), dst_ip=ip(14), ip_proto="udp", monitor_ip=ip(11))
    t3 = create_tap(lab, name="ov-wide", dst_ip="10.0.0.0/28", monitor_ip=ip(7))  # same monitor as ov-a
    for t in (t1, t2, t3):
        wait_tap(lab, t["id"])
    got = traffic(lab, "h3", flow(3, 14, proto="udp"), "o1", 10, ["h14", "h7", "h11"])
    assert got["h7"] == got["h14"] and got["h11"] == got["h14"] and len(got["h14"]) == 10
    got = traffic(lab, "h3", flow(3, 14, proto="tcp"), "o2", 10, ["h14", "h7", "h11"])
    assert got["h7"] == got["h14"] and got["h11"] == [] and len(got["h14"]) == 10
    got = traffic(lab, "h6", flow(6, 12, proto="udp"), "o3", 10, ["h12", "h7", "h11"])
    assert got["h7"] == got["h12"] and got["h11"] == []
    for t in (t1, t2, t3):
        delete_tap(lab, t["id"])


def test_seed_tap2_udp_on_vlan_100(lab):
    tap = create_tap(lab, name="tap2", src_mac=mac(1), src_ip=ip(1), ip_proto="udp", vlan_id=100, monitor_mac=mac(4), monitor_ip=ip(4))
    wait_tap(lab, tap["id"])
    got = traffic(lab, "h1", flow(1, 13, proto="udp", vlan=100), "v1", 10, ["h13", "h4"])
    assert got["h4"] == got["h13"] and len(got["h4"]) == 10
    got = traffic(lab, "h1", flow(1, 13, proto="udp", vlan=200), "v2", 5, ["h13", "h4"])
    assert got["h4"] == [] and len(got["h13"]) == 5
    delete_tap(lab, tap["id"])


def test_rewrite_transport_restores_the_copy_and_is_ambiguous(lab):
    tap = create_tap(lab, name="rw", src_mac=mac(4), src_ip=ip(4), dst_mac=mac(13), dst_ip=ip(13), ip_proto="tcp", dst_port=22,
                     monitor_ip=ip(6), transport="rewrite")
    wait_tap(lab, tap["id"])
    got = traffic(lab, "h4", flow(4, 13, dport=22), "r1", 10, ["h13", "h6"])
    assert got["h6"] == got["h13"] and len(got["h6"]) == 10
    # The ambiguity: real TCP/22 traffic from h4 to the monitor h6 itself matches the
    # recovery rule and arrives at h6 "restored" to h13's addresses: corrupted.
    real = traffic(lab, "h4", flow(4, 6, dport=22), "r2", 3, ["h6"])["h6"]
    assert len(real) == 3 and all(f[0:6] == bytes.fromhex(mac(13).replace(":", "")) for f in real)
    delete_tap(lab, tap["id"])
    real = traffic(lab, "h4", flow(4, 6, dport=22), "r3", 3, ["h6"])["h6"]
    assert all(f[0:6] == bytes.fromhex(mac(6).replace(":", "")) for f in real)


def test_policy_added_during_a_running_stream_copies_the_next_packet(lab):
    caps = {n: Capture(lab.net[n], lab.workdir / f"s-{n}.pcap").start() for n in ("h16", "h10")}
    import threading

    sender = threading.Thread(target=send_from, args=(lab.net["h8"], flow(8, 16, proto="udp", dport=9000), "s", 150), kwargs={"interval": 0.02})
    sender.start()
    time.sleep(1.0)
    tap = create_tap(lab, name="live", src_ip=ip(8), dst_ip=ip(16), ip_proto="udp", dst_port=9000, monitor_ip=ip(10))
    wait_tap(lab, tap["id"], timeout=5)
    active_at = time.time()
    sender.join()
    h8 = bytes.fromhex(mac(8).replace(":", ""))
    rx = [(t, f) for t, f in caps["h16"].stop() if f[6:12] == h8 and (marked(f) or "").startswith("s:")]
    mon = [(t, f) for t, f in caps["h10"].stop() if f[6:12] == h8 and (marked(f) or "").startswith("s:")]
    assert len(rx) == 150
    copied = {f for _, f in mon}
    after = [f for t, f in rx if t > active_at]
    assert after and all(f in copied for f in after)  # every packet after "active" was copied
    first = next(i for i, (_, f) in enumerate(rx) if f in copied)
    assert [f for _, f in rx[first:]] == [f for _, f in mon]  # from the first copy on, every one, in order
    delete_tap(lab, tap["id"])


def test_delete_leaves_no_rule_and_no_copy(lab):
    tap = create_tap(lab, name="gone", src_ip=ip(5), dst_ip=ip(12), monitor_ip=ip(1))
    wait_tap(lab, tap["id"])
    assert vtap_rules(lab)
    delete_tap(lab, tap["id"])
    wait_until(lambda: not vtap_rules(lab), 10, interval=0.2, message=lambda: f"vTAP rules left: {vtap_rules(lab)}")
    assert vtap_rules(lab) == []
    got = traffic(lab, "h5", flow(5, 12), "d1", 5, ["h12", "h1"])
    assert got["h1"] == [] and len(got["h12"]) == 5
    assert lab.ctl.http.get(f"/api/v1/taps/{tap['id']}").status_code == 404


def test_disable_and_update(lab):
    tap = create_tap(lab, name="upd", src_ip=ip(7), dst_ip=ip(2), ip_proto="udp", dst_port=1000, monitor_ip=ip(11))
    wait_tap(lab, tap["id"])
    body = {k: tap[k] for k in ("name", "src_ip", "dst_ip", "ip_proto", "monitor_ip")} | {"dst_port": 2000}
    resp = lab.ctl.http.put(f"/api/v1/taps/{tap['id']}", json=body)
    assert resp.status_code == 200 and resp.json()["dst_port"] == 2000
    wait_tap(lab, tap["id"])
    got = traffic(lab, "h7", flow(7, 2, proto="udp", dport=1000), "u1", 5, ["h11"])
    assert got["h11"] == []
    got = traffic(lab, "h7", flow(7, 2, proto="udp", dport=2000), "u2", 5, ["h11", "h2"])
    assert got["h11"] == got["h2"] and len(got["h11"]) == 5
    resp = lab.ctl.http.put(f"/api/v1/taps/{tap['id']}", json=body | {"enabled": False})
    wait_tap(lab, tap["id"], "disabled")
    wait_until(lambda: not vtap_rules(lab), 10, interval=0.2, message=lambda: f"vTAP rules left: {vtap_rules(lab)}")
    assert vtap_rules(lab) == []
    delete_tap(lab, tap["id"])


@pytest.mark.parametrize("body, field", [
    ({"src_mac": "00:00:00:00:01"}, "src_mac"),
    ({"dst_port": 70000, "ip_proto": "udp"}, "dst_port"),
    ({"vlan_id": 5000}, "vlan_id"),
    ({"dst_port": 80}, "dst_port"),
    ({"bogus": 1}, "bogus"),
    ({"src_ip": "10.0.0.300"}, "src_ip"),
    ({"ip_proto": "gre2"}, "ip_proto"),
    ({"direction": "sideways"}, "direction"),
])
def test_bad_input_is_a_422_naming_the_field_and_nothing_is_stored(lab, body, field):
    before = lab.ctl.get("/api/v1/taps")
    resp = post(lab, "/api/v1/taps", {"name": "bad", "dst_ip": ip(2), "monitor_ip": ip(3)} | body)
    assert resp.status_code == 422
    assert any(d["loc"][-1] == field for d in resp.json()["detail"]), resp.json()
    assert lab.ctl.get("/api/v1/taps") == before


def test_dry_run_installs_nothing(lab):
    resp = post(lab, "/api/v1/taps", {"name": "dry", "src_ip": ip(1), "monitor_ip": ip(9)}, dry_run="true")
    assert resp.status_code == 200
    body = resp.json()
    assert body["dry_run"] and body["switches"] and any("group:" in f for s in body["switches"] for f in s["flows"])
    assert lab.ctl.get("/api/v1/taps") == [] and vtap_rules(lab) == []


def test_rules_endpoint_matches_the_switches(lab):
    tap = create_tap(lab, name="rules", src_ip=ip(1), dst_ip=ip(16), monitor_ip=ip(9))
    wait_tap(lab, tap["id"])
    rules = lab.ctl.get(f"/api/v1/taps/{tap['id']}/rules")
    edge = next(s for s in rules["switches"] if s["dpid"] == "0000000000030001")
    assert any("table=1" in f and "group:" in f for f in edge["flows"]) and edge["groups"]
    dumped = lab.ovs.ofctl("dump-groups", "e1")
    assert str(int(edge["groups"][0].split(",")[0].split("=")[1])) in dumped
    delete_tap(lab, tap["id"])


def _stored_hosts(lab) -> set[str]:
    with sqlite3.connect(f"file:{Path(lab.ctl.state_dir) / 'vtap.db'}?mode=ro", uri=True) as db:
        return {mac for (mac,) in db.execute("SELECT mac FROM hosts")}


def test_controller_restart_keeps_policies_tables_and_copies(lab):
    tap = create_tap(lab, name="persist", src_ip=ip(1), dst_ip=ip(16), ip_proto="udp", monitor_ip=ip(9))
    wait_tap(lab, tap["id"])
    # Hosts are written down once their rules count packets (read every 10 s): with all
    # of them stored, the restart's view is the one the stop's compile was made from.
    assert lab.net.pingAll(timeout="1") == 0
    macs = {h["mac"] for h in lab.ctl.get("/api/v1/hosts")}
    wait_until(lambda: macs <= _stored_hosts(lab), 15)
    before = lab.tables()
    assert lab.ctl.stop() == 0
    lab.ctl.start()
    lab.wait_health(switches=20, links=64, timeout=30)
    wait_tap(lab, tap["id"])
    assert lab.wait_tables_equal(before, timeout=10) == before
    # A clean stop wrote its compile down; the view came back the same, so the restart's
    # first compile reused it (control/snapshot.py), and the fresh compile that follows
    # in the background found the same rules.
    assert lab.ctl.get("/api/v1/health")["startup_compile"] == "reused"
    checked = wait_until(lambda: "the compile reused from the snapshot is the one a fresh compile makes"
                         in lab.ctl.log_path.read_text().rsplit("first compile: the snapshot", 1)[-1], 10)
    assert checked and "differs from a fresh compile" not in lab.ctl.log_path.read_text()
    steps = lab.ctl.get("/api/v1/health")["startup"]
    assert steps["rules_confirmed"] < steps["compile_checked"], steps
    got = traffic(lab, "h1", flow(1, 16, proto="udp"), "p1", 10, ["h16", "h9"])
    assert got["h9"] == got["h16"] and len(got["h9"]) == 10
    assert [t["name"] for t in lab.ctl.get("/api/v1/taps")] == ["persist"]
    delete_tap(lab, tap["id"])


def test_update_during_a_stream_misses_and_duplicates_nothing(lab):
    """PUT swaps the policy's rules in one bundle per switch: every packet copied exactly once."""
    body = {"name": "swap", "src_ip": ip(3), "dst_ip": ip(11), "ip_proto": "udp", "dst_port": 4444, "monitor_ip": ip(7)}
    tap = create_tap(lab, **body)
    wait_tap(lab, tap["id"])
    import threading

    h3 = bytes.fromhex(mac(3).replace(":", ""))
    caps = {n: Capture(lab.net[n], lab.workdir / f"swap-{n}.pcap").start() for n in ("h11", "h7")}
    sender = threading.Thread(target=send_from, args=(lab.net["h3"], flow(3, 11, proto="udp", dport=4444), "w", 400),
                              kwargs={"interval": 0.005})
    sender.start()
    for i in range(4):  # four swaps while the stream runs: port filter off, on, off, on
        time.sleep(0.3)
        new = dict(body) if i % 2 else {k: v for k, v in body.items() if k != "dst_port"}
        assert lab.ctl.http.put(f"/api/v1/taps/{tap['id']}", json=new).status_code == 200
        wait_tap(lab, tap["id"])
    sender.join()
    rx = [f for _, f in caps["h11"].stop() if f[6:12] == h3 and (marked(f) or "").startswith("w:")]
    mon = [f for _, f in caps["h7"].stop() if f[6:12] == h3 and (marked(f) or "").startswith("w:")]
    assert len(rx) == 400
    assert mon == rx  # each packet copied once: none missed, none twice, in order
    delete_tap(lab, tap["id"])


@pytest.mark.parametrize("transport, monitor", [("vlan", 2), ("rewrite", 9)])  # on the tap switch itself; another pod
def test_delivery_is_counted_for_every_transport_and_monitor_placement(lab, transport, monitor):
    """Every copy passes one tap-group bucket (sent) and the monitor's delivery group
    (delivered), whether the monitor hangs off the tap switch (group chaining) or copies
    travel as rewritten traffic to another pod (recovery rule)."""
    tap = create_tap(lab, name=f"acct-{transport}", src_mac=mac(1), dst_mac=mac(16), src_ip=ip(1), dst_ip=ip(16),
                     ip_proto="udp", dst_port=8123, monitor_ip=ip(monitor), transport=transport)
    wait_tap(lab, tap["id"])
    before = wait_until(lambda: (s := lab.ctl.get(f"/api/v1/taps/{tap['id']}/stats"))["delivery"] and s, 5)
    got = traffic(lab, "h1", flow(1, 16, proto="udp", dport=8123), f"acct-{transport}", 30, ["h16", f"h{monitor}"])
    assert len(got["h16"]) == 30 and got[f"h{monitor}"] == got["h16"]

    def counted() -> dict | None:
        d = lab.ctl.get(f"/api/v1/taps/{tap['id']}/stats")["delivery"]
        sent, delivered = d["sent_packets"] - before["delivery"]["sent_packets"], d["delivered_packets"] - before["delivery"]["delivered_packets"]
        return d if (sent, delivered) == (30, 30) else None

    d = wait_until(counted, 5, interval=0.5, message=lambda: str(lab.ctl.get(f"/api/v1/taps/{tap['id']}/stats")))
    assert not d["failing"] and lab.ctl.get(f"/api/v1/taps/{tap['id']}")["status"] == "active"
    delete_tap(lab, tap["id"])
