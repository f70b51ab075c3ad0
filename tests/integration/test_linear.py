"""Foundation on real OVS, `linear,3`: discovery, forwarding, REST, resync, robustness."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.integration.harness import Lab, create_tap, delete_tap, link_local, ping, traffic, vtap_rules, wait_tap
from tests.waiting import wait_until
from vtap.lab.traffic import Flow
from vtap.lab.topos import parse_topo


def _ifindex(name: str) -> int:
    return int(open(f"/sys/class/net/{name}/ifindex").read())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    # What a lab killed before it could stop leaves behind (CI machines are reused): the
    # link between s1 and s2, both ends in the root namespace. The lab must build anyway.
    subprocess.run(["ip", "link", "add", "s1-eth2", "type", "veth", "peer", "name", "s2-eth2"], check=True)
    stale = _ifindex("s1-eth2")
    lab = Lab(parse_topo("linear,3"), tmp_path_factory.mktemp("linear3"))
    lab.stale_ifindex = stale
    yield lab
    lab.close()


def test_a_lab_builds_over_the_switch_links_a_killed_lab_left(lab):
    assert _ifindex("s1-eth2") != lab.stale_ifindex
    assert lab.attachment("h1")[0] == 1 and lab.discovered_links() == lab.expected_links()


def test_pingall_has_no_loss(lab):
    assert lab.net.pingAll(timeout="1") == 0


def test_discovered_links_equal_the_topology(lab):
    assert lab.discovered_links() == lab.expected_links()
    assert len(lab.expected_links()) == 4  # two links, one per direction each


def test_every_host_at_its_true_switch_and_port(lab):
    lab.net.pingAll(timeout="1")  # every host has spoken
    hosts = {h["mac"]: h for h in lab.ctl.get("/api/v1/hosts")}
    assert len(hosts) == 3
    for node in lab.net.hosts:
        h = hosts[node.MAC()]
        assert (int(h["dpid"], 16), h["port"]) == lab.attachment(node.name)
        # Its IPv4, and (IPv6 being on, as Linux has it) maybe its link-local address: nothing else.
        assert node.IP() in h["ips"] and set(h["ips"]) <= {node.IP(), link_local(node.MAC())}, h


def test_rest_shapes(lab):
    devices = lab.ctl.get("/api/v1/devices")
    assert isinstance(devices, list) and len(devices) == 3
    d = devices[0]
    assert len(d["dpid"]) == 16 and int(d["dpid"], 16) == 1
    assert {"port_no", "name", "hw_addr", "up"} <= set(d["ports"][0])
    assert "connected_since" in d
    link = lab.ctl.get("/api/v1/links")[0]
    assert set(link) == {"src_dpid", "src_port", "dst_dpid", "dst_port", "transit_ms", "transit_min_ms"}
    assert 0 < link["transit_min_ms"] <= link["transit_ms"] < 10_000  # timed LLDP, packet-out to packet-in
    topo = lab.ctl.get("/api/v1/topology")
    assert set(topo) == {"devices", "links", "hosts"}
    health = lab.ctl.get("/api/v1/health")
    assert health["status"] == "ok" and health["switches_in_sync"] == 3
    assert lab.ctl.get("/openapi.json")["info"]["title"] == "vtap"


def _reconnect(lab, bridge: str) -> None:
    """Drop the switch's controller connection and let it reconnect (flows stay in place:
    unlike del-controller/set-controller, which make OVS flush its tables)."""
    lab.ovs.appctl("bridge/reconnect", bridge)


def test_rules_carry_the_vtap_cookie_and_foreign_rules_are_left_alone(lab):
    lab.ovs.ofctl("add-flow", "s2", "cookie=0x1234,table=5,priority=7,udp,tp_dst=9999,actions=drop")
    _reconnect(lab, "s2")  # a full read-back and resync of s2
    time.sleep(1)
    lab.wait_health(switches=3, links=4, timeout=20)
    flows = lab.ovs.ofctl("dump-flows", "s2")
    assert "cookie=0x1234" in flows and "tp_dst=9999" in flows
    lab.ovs.ofctl("del-flows", "s2", "cookie=0x1234/-1")
    vtap_flows = [l for l in lab.ovs.ofctl("dump-flows", "s2").splitlines() if "cookie=" in l]
    assert vtap_flows and all("cookie=0x7674" in l for l in vtap_flows)


def test_switch_reconnect_ends_with_the_same_tables(lab):
    lab.net.pingAll(timeout="1")
    before = lab.tables()
    # A stale vtap rule and a missing one, behind the controller's back...
    lab.ovs.ofctl("add-flow", "s1", "cookie=0x7674010000000099,table=2,priority=100,dl_dst=00:00:00:00:00:99,actions=output:1")
    lab.ovs.ofctl("--strict", "del-flows", "s1", "table=2,priority=100,dl_dst=00:00:00:00:00:03")
    assert lab.tables() != before
    # ...are corrected when the switch reconnects.
    _reconnect(lab, "s1")
    after = lab.wait_tables_equal(before, timeout=15)
    assert after == before
    assert ping(lab.net["h1"], "10.0.0.3")


def test_controller_restart_ends_with_the_same_tables(lab):
    lab.net.pingAll(timeout="1")
    before = lab.tables()
    assert lab.ctl.stop() == 0
    # Fail-mode secure: the switches forward on their installed rules meanwhile.
    assert ping(lab.net["h1"], "10.0.0.3")
    lab.ctl.start()
    lab.wait_health(switches=3, links=4, timeout=30)
    after = lab.wait_tables_equal(before, timeout=10)
    assert after == before
    assert lab.net.pingAll(timeout="1") == 0


def _connect(lab) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", lab.ctl.of_port), timeout=20)
    return s


def _closed_by_peer(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        while s.recv(4096):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_garbage_clients_are_dropped_and_others_served(lab):
    garbage = _connect(lab)
    garbage.sendall(os.urandom(64))
    liar = _connect(lab)
    liar.sendall(struct.pack("!BBHI", 4, 0, 4, 1))  # length 4 < header size
    staller = _connect(lab)
    staller.sendall(struct.pack("!BBHI", 4, 0, 16, 1) + b"\x00\x01")  # promises 16 bytes, sends 10
    assert _closed_by_peer(garbage, 15)
    assert _closed_by_peer(liar, 15)
    assert _closed_by_peer(staller, 30)
    health = lab.ctl.get("/api/v1/health")
    assert health["switches"] == 3 and health["links"] == 4
    assert lab.net.pingAll(timeout="1") == 0


def test_openflow_10_switch_gets_hello_failed(lab):
    s = _connect(lab)
    s.sendall(struct.pack("!BBHI", 1, 0, 8, 7))  # OpenFlow 1.0 HELLO, no bitmap
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    # Our HELLO, then ERROR type HELLO_FAILED (0) code INCOMPATIBLE (0), then close.
    msgs = []
    while len(data) >= 8:
        version, mtype, length, _xid = struct.unpack("!BBHI", data[:8])
        msgs.append((mtype, data[8:length]))
        data = data[length:]
    assert [m[0] for m in msgs] == [0, 1]
    assert struct.unpack("!HH", msgs[1][1][:4]) == (0, 0)


def test_packet_ins_are_capped_by_a_meter(lab):
    """A host spraying frames to an unknown destination at full speed reaches the
    controller at most at --packet-in-rate (default 1000/s per switch), and the fabric
    keeps working."""
    assert "rate=1000" in lab.ovs.ofctl("dump-meters", "s1")
    conf = lab.workdir / "spray.cfg"
    conf.write_text("{ eth(da=00:00:00:00:00:77, sa=00:00:00:00:00:01), ipv4(saddr=10.0.0.1, daddr=10.0.0.77), "
                    "udp(sp=1, dp=2), fill(0x41, 18) }\n")
    before = lab.ctl.get("/api/v1/health")["packet_ins"]
    t0 = time.monotonic()
    # Bounded by a packet count, so it ends by itself; SIGINT (trafgen's stop) as a backstop.
    spray = lab.net["h1"].popen(["trafgen", "--dev", "h1-eth0", "--conf", str(conf), "--cpus", "1", "--no-sock-mem",
                                 "--num", "1000000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        spray.wait(timeout=15)
    except subprocess.TimeoutExpired:
        subprocess.run(["pkill", "-INT", "-x", "trafgen"])
        spray.wait(timeout=10)
    elapsed = time.monotonic() - t0
    sent = int(open(f"/sys/class/net/s1-eth1/statistics/rx_packets").read())
    got = lab.ctl.get("/api/v1/health")["packet_ins"] - before
    assert sent > 50_000  # the spray was real
    assert 0 < got < 1000 * elapsed * 1.2 + 200, (got, elapsed)
    assert lab.net.pingAll(timeout="1") == 0


def _vtap(lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vtap", *args, "--api", lab.ctl.api], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "VTAP_TOKEN": lab.ctl.token})


def test_tap_through_the_cli_copies_on_linear(lab):
    out = _vtap(lab, "tap", "add", "--name", "cli", "--src-ip", "10.0.0.1", "--dst-ip", "10.0.0.3", "--ip-proto", "udp",
                "--dst-port", "5000", "--monitor-ip", "10.0.0.2", "--json")
    assert out.returncode == 0, out.stderr
    tap_id = json.loads(out.stdout)["id"]
    wait_tap(lab, tap_id)
    listing = _vtap(lab, "tap", "list")
    assert "cli" in listing.stdout and "active" in listing.stdout
    f = Flow("00:00:00:00:00:01", "00:00:00:00:00:03", "10.0.0.1", "10.0.0.3", "udp", 4000, 5000)
    got = traffic(lab, "h1", f, "cli", 12, ["h3", "h2"])
    assert len(got["h3"]) == 12 and got["h2"] == got["h3"]
    stats = json.loads(_vtap(lab, "tap", "stats", str(tap_id), "--json").stdout)
    assert stats["packets"] == 12 and stats["copies"] == 12
    rules = _vtap(lab, "tap", "rules", str(tap_id))
    assert "# switch 0000000000000001" in rules.stdout and "group_id=" in rules.stdout
    bad = _vtap(lab, "tap", "add", "--name", "bad", "--src-ip", "10.0.0.1", "--dst-port", "80", "--monitor-ip", "10.0.0.2")
    assert bad.returncode != 0 and "dst_port" in bad.stderr
    assert _vtap(lab, "tap", "rm", str(tap_id)).returncode == 0
    assert json.loads(_vtap(lab, "tap", "list", "--json").stdout) == []


APPLIED = """\
# three policies, as an operator keeps them in version control
- {name: a-13, src_ip: 10.0.0.1, dst_ip: 10.0.0.3, ip_proto: udp, dst_port: 6001, monitor_ip: 10.0.0.2}
- {name: a-31, src_ip: 10.0.0.3, dst_ip: 10.0.0.1, ip_proto: udp, dst_port: 6002, monitor_ip: 10.0.0.2}
- name: a-21
  src_ip: 10.0.0.2
  dst_ip: 10.0.0.1
  ip_proto: udp
  dst_port: 6003
  monitor_ip: 10.0.0.3
"""


def test_apply_a_file_of_policies(lab, tmp_path):
    path = tmp_path / "taps.yaml"
    path.write_text(APPLIED)
    assert lab.net.pingAll(timeout="1") == 0  # every host known: the dry run shows rules, not `pending`
    dry = _vtap(lab, "apply", "-f", str(path), "--dry-run")
    assert dry.returncode == 0 and "3 added" in dry.stdout and "# switch" in dry.stdout, dry.stderr
    assert lab.ctl.get("/api/v1/taps") == []
    done = json.loads(_vtap(lab, "apply", "-f", str(path), "--json").stdout)
    assert (done["added"], done["changed"], done["removed"]) == (["a-13", "a-31", "a-21"], [], [])
    taps = {t["name"]: t["id"] for t in lab.ctl.get("/api/v1/taps")}
    for tap_id in taps.values():
        wait_tap(lab, tap_id)
    for sender, dst, port, monitor in (("h1", 3, 6001, "h2"), ("h3", 1, 6002, "h2"), ("h2", 1, 6003, "h3")):
        src = int(sender[1:])
        f = Flow(f"00:00:00:00:00:{src:02x}", f"00:00:00:00:00:{dst:02x}", f"10.0.0.{src}", f"10.0.0.{dst}", "udp", 4000, port)
        got = traffic(lab, sender, f, f"ap{port}", 8, [f"h{dst}", monitor])
        assert len(got[f"h{dst}"]) == 8 and got[monitor] == got[f"h{dst}"], port
    # The same file again changes nothing, and nothing is sent to any switch.
    sent = {d["dpid"]: (d["batches"], d["rules_sent"]) for d in lab.ctl.get("/api/v1/devices")}
    again = json.loads(_vtap(lab, "apply", "-f", str(path), "--json").stdout)
    assert (again["added"], again["changed"], again["removed"], again["unchanged"]) == ([], [], [], 3)
    time.sleep(0.5)
    assert {d["dpid"]: (d["batches"], d["rules_sent"]) for d in lab.ctl.get("/api/v1/devices")} == sent
    # One bad policy: exit 1 naming it, nothing changed.
    path.write_text(APPLIED.replace("dst_port: 6003", "dst_port: 70000"))
    bad = _vtap(lab, "apply", "-f", str(path), "--prune")
    assert bad.returncode == 1 and "[2].dst_port" in bad.stderr, bad.stderr
    assert {t["name"]: t["id"] for t in lab.ctl.get("/api/v1/taps")} == taps
    # Pruned to one: the others and their rules go.
    path.write_text(APPLIED.split("- {name: a-31")[0])
    pruned = json.loads(_vtap(lab, "apply", "-f", str(path), "--prune", "--json").stdout)
    assert pruned["removed"] == ["a-31", "a-21"] and pruned["unchanged"] == 1
    assert [t["name"] for t in lab.ctl.get("/api/v1/taps")] == ["a-13"]
    empty = subprocess.run([sys.executable, "-m", "vtap", "apply", "-f", "-", "--prune", "--api", lab.ctl.api], input="[]\n",
                           capture_output=True, text=True, timeout=60, env={**os.environ, "VTAP_TOKEN": lab.ctl.token})
    assert empty.returncode == 0 and "1 removed" in empty.stdout, empty.stderr  # an empty set from stdin: all gone
    assert lab.ctl.get("/api/v1/taps") == []


def test_copies_that_stop_reaching_the_monitor_degrade_the_policy_until_they_arrive_again(lab):
    """The monitor's link goes down under a tapped stream and comes back: the policy turns
    degraded with the delivery reason, then active by itself; copied, sent and delivered
    counters agree with the frames sent and the frames the monitor captured."""
    tap = create_tap(lab, name="delivery", src_ip="10.0.0.1", dst_ip="10.0.0.3", ip_proto="udp", dst_port=7171,
                     monitor_ip="10.0.0.2")
    wait_tap(lab, tap["id"])
    before = wait_until(lambda: (s := lab.ctl.get(f"/api/v1/taps/{tap['id']}/stats"))["delivery"] and s, 5)
    dpid, port = lab.attachment("h2")
    intf = next(i for i in lab.net[f"s{dpid}"].intfList() if lab.net[f"s{dpid}"].ports.get(i) == port).name
    flow = Flow("00:00:00:00:00:01", "00:00:00:00:00:03", "10.0.0.1", "10.0.0.3", "udp", 5, 7171)
    got: dict = {}
    sender = threading.Thread(target=lambda: got.update(traffic(lab, "h1", flow, "deliv", 1500, ["h2", "h3"], interval=0.01)))
    sender.start()
    try:
        time.sleep(2)
        subprocess.run(["ip", "link", "set", intf, "down"], check=True)
        down_at = time.monotonic()
        degraded = wait_tap(lab, tap["id"], "degraded", timeout=6)
        detected = time.monotonic() - down_at
        assert "copies in the last 10 s did not reach 10.0.0.2" in degraded["status_reason"], degraded
        stats = lab.ctl.get(f"/api/v1/taps/{tap['id']}/stats")["delivery"]
        assert stats["failing"] and stats["monitor"] == "10.0.0.2" and stats["policies"] == [tap["id"]]
    finally:
        subprocess.run(["ip", "link", "set", intf, "up"], check=True)
    up_at = time.monotonic()
    wait_tap(lab, tap["id"], "active", timeout=10)
    recovered = time.monotonic() - up_at
    sender.join(timeout=60)
    assert len(got["h3"]) == 1500  # the tapped traffic itself never noticed
    after = lab.ctl.get(f"/api/v1/taps/{tap['id']}/stats")

    def delta(key: str) -> int:
        return after["delivery"][key] - before["delivery"][key]

    # Switches credit counters a little late (OVS's revalidators, every ~0.5 s): wait for them to settle.
    def settled() -> dict | None:
        nonlocal after
        last, after = after, lab.ctl.get(f"/api/v1/taps/{tap['id']}/stats")
        return after if delta("sent_packets") == 1500 and after["delivery"] == last["delivery"] else None

    wait_until(settled, 6, interval=1.2, message=lambda: f"sent {delta('sent_packets')}, delivered {delta('delivered_packets')}")
    assert after["packets"] - before["packets"] == 1500
    assert delta("undelivered_packets") == 1500 - delta("delivered_packets")
    # "Delivered" is what the switch handed to the monitor's live port. Around the link's
    # coming up, the veth's far end may drop a few of those (or the switch see the port
    # a little late): within half a second of copies (50 at 100 pps) of what the monitor
    # captured; everything else exactly.
    assert 0 < len(got["h2"]) < 1500
    assert abs(delta("delivered_packets") - len(got["h2"])) <= 50, (delta("delivered_packets"), len(got["h2"]))
    print(f"degraded {detected:.1f} s after link down, active {recovered:.1f} s after link up; "
          f"{len(got['h2'])} of 1500 copies delivered")
    delete_tap(lab, tap["id"])


def test_a_capture_job_saves_the_next_packets_of_a_policy_to_pcapng(lab, tmp_path):
    """Count 50 over a 200-packet stream: a pcapng that tshark reads, holding exactly the
    first 50 packets cut to snaplen; the receiver got all 200; no capture rule left."""
    tap = create_tap(lab, name="captured", src_ip="10.0.0.1", dst_ip="10.0.0.3", ip_proto="udp", dst_port=7272,
                     monitor_ip="10.0.0.2")
    wait_tap(lab, tap["id"])
    http = lab.ctl.http
    for body, code, field in (({"tap_id": tap["id"], "count": 0}, 422, "count"),
                              ({"tap_id": tap["id"], "duration_s": 10_000}, 422, "duration_s"),
                              ({"tap_id": 999_999}, 404, "tap_id"),
                              ({"tap_id": tap["id"], "src_ip": "10.0.0.1"}, 422, "not both")):
        resp = http.post("/api/v1/captures", json=body)
        assert resp.status_code == code and field in resp.text, (body, resp.status_code, resp.text)
    job = http.post("/api/v1/captures", json={"tap_id": tap["id"], "count": 50, "duration_s": 60, "snaplen": 96})
    assert job.status_code == 201, job.text
    job = job.json()
    assert job["match"]["dst_port"] == 7272 and job["state"] in ("starting", "running")
    wait_until(lambda: http.get(f"/api/v1/captures/{job['id']}").json()["state"] == "running", 10,
               message=lambda: str(http.get(f"/api/v1/captures/{job['id']}").json()))
    flow = Flow("00:00:00:00:00:01", "00:00:00:00:00:03", "10.0.0.1", "10.0.0.3", "udp", 5, 7272)
    got = traffic(lab, "h1", flow, "cap", 200, ["h3"], size=300)
    assert len(got["h3"]) == 200
    done = wait_until(lambda: (j := http.get(f"/api/v1/captures/{job['id']}").json())["state"] == "done" and j, 10)
    assert done["packets"] == 50 and done["reason"] == "50 packets captured"
    path = tmp_path / "job.pcapng"
    path.write_bytes(http.get(done["download"]).content)
    out = subprocess.run(["tshark", "-r", str(path), "-T", "json", "-x"], capture_output=True, text=True, check=True)
    packets = json.loads(out.stdout)
    assert len(packets) == 50
    raw = [bytes.fromhex(p["_source"]["layers"]["frame_raw"][0]) for p in packets]
    assert raw == [f[:96] for f in got["h3"][:50]]
    assert {p["_source"]["layers"]["frame"]["frame.len"] for p in packets} == {str(len(got["h3"][0]))}
    # Every capture rule goes when the job ends; the policy's stay.
    wait_until(lambda: not any("controller(" in lab.ovs.ofctl("dump-groups", sw.name) for sw in lab.net.switches), 10,
               message="a capture bucket is left in a switch")
    assert any("dl_dst" in l or "nw_dst" in l for l in vtap_rules(lab)) and wait_tap(lab, tap["id"])
    trail = http.get("/api/v1/audit").json()
    assert {"capture.start", "capture.download"} <= {r["action"] for r in trail}
    # An operator whose scope does not hold the job's match (h1 -> h3): not its to see,
    # download or stop, whoever started the job (here: the admin).
    narrow = http.post("/api/v1/tokens", json={"name": "narrow", "role": "operator",
                                               "scope": {"sources": ["10.0.0.2"], "monitors": ["10.0.0.2"]}}).json()
    with httpx.Client(base_url=lab.ctl.api, headers={"authorization": f"Bearer {narrow['token']}"}, timeout=10) as op:
        for method, path in (("get", f"/api/v1/captures/{job['id']}"), ("get", done["download"]),
                             ("delete", f"/api/v1/captures/{job['id']}")):
            resp = op.request(method.upper(), path)
            assert resp.status_code == 403 and "outside your scope" in resp.text, (method, path, resp.status_code, resp.text)
        assert op.get("/api/v1/captures").json() == []
    assert http.get(f"/api/v1/captures/{job['id']}").json()["packets"] == 50  # still there, whole
    refused = [r for r in http.get("/api/v1/audit").json() if r["actor"] == "narrow"]
    assert {(r["action"], r["result"]) for r in refused} >= {("capture.download", "403"), ("capture.delete", "403")}
    assert http.delete(f"/api/v1/captures/{job['id']}").status_code == 204
    assert http.get(f"/api/v1/captures/{job['id']}").status_code == 404
    # The same from the command line: `vtap capture --tap NAME -c N -w FILE` waits for the
    # packets, saves them, and deletes its job.
    out = tmp_path / "cli.pcapng"
    cli = subprocess.Popen([sys.executable, "-m", "vtap", "capture", "--tap", "captured", "-c", "20", "-w", str(out),
                            "--api", lab.ctl.api, "--token", lab.ctl.token], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: [j for j in http.get("/api/v1/captures").json() if j["state"] == "running"], 10)
    traffic(lab, "h1", flow, "cli-cap", 30, ["h3"])
    stdout, stderr = cli.communicate(timeout=20)
    assert cli.returncode == 0 and "20 packets in" in stdout, stderr
    listed = subprocess.run(["tshark", "-r", str(out)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(listed) == 20 and http.get("/api/v1/captures").json() == []
    delete_tap(lab, tap["id"])


def test_silent_hosts_expire_and_talkers_stay(lab):
    """Restart the controller with a short --host-timeout: h1 and h2 keep talking, h3 is
    silent; h3 and its rules go, and come back when it speaks again. Runs last here."""
    from vtap.lab.process import ControllerProcess

    lab.ctl.stop()
    ctl = ControllerProcess(lab.ctl.state_dir, lab.workdir / "controller-expiry.log", ("--host-timeout", "4"))
    ctl.of_port, ctl.api_port = lab.ctl.of_port, lab.ctl.api_port
    lab.ctl = ctl.start()
    lab.wait_health(switches=3, links=4, timeout=30)
    pinger = lab.net["h1"].popen(["ping", "-i", "0.2", "-w", "12", "10.0.0.2"])
    try:
        macs = set()

        def h3_gone() -> bool:
            nonlocal macs
            macs = {h["mac"] for h in lab.ctl.get("/api/v1/hosts")}
            return "00:00:00:00:00:03" not in macs

        wait_until(h3_gone, 15, interval=0.5, message=lambda: f"silent h3 still known: {sorted(macs)}")
        assert macs == {"00:00:00:00:00:01", "00:00:00:00:00:02"}
        wait_until(lambda: "dl_dst=00:00:00:00:00:03" not in lab.ovs.ofctl("dump-flows", "s1"), 10, interval=0.2,
                   message="h3's forwarding rules still on s1")
        assert "dl_dst=00:00:00:00:00:03" not in lab.ovs.ofctl("dump-flows", "s1")
    finally:
        pinger.terminate()
        pinger.wait()
    assert ping(lab.net["h3"], "10.0.0.1", count=2)
    assert "00:00:00:00:00:03" in {h["mac"] for h in lab.ctl.get("/api/v1/hosts")}
