"""Tools on the copies (issue 29). A real IDS: Suricata reading the monitor's interface
raises exactly one alert for one canary packet a policy copies to it; none when the
policy is disabled, none when its `snaplen` cuts the copy before the canary's content;
and a VXLAN collector's Suricata alerts on the copies inside their tunnel. Flow features
for ML: nfstream computes the same features from the monitor's copies as from the
receiver's own capture, field by field. Live capture: `vtap capture -w - | tshark -r -`
shows the first packets while the job still runs. `vtap sensor` proves receipt at the
tool, and catches loss after the port.

`tree,2,2` with `--tunnels local`: h1 sends to h3; h2 is the monitor (its Suricata reads
h2-eth0); h4 is a VXLAN collector (its own Suricata). The lab's hosts talk as Linux does
(IPv6 and all): the rule matches the canary's content only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from tests.integration.harness import Lab, create_tap, ip, mac, wait_tap
from tests.waiting import wait_until
from vtap.lab.ids import CANARY, CANARY_SID, Suricata
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Capture, send_frames

PORT = 7777


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(parse_topo("tree,2,2"), tmp_path_factory.mktemp("ids"), serve_args=("--tunnels", "local"))
    lab.net.pingAll(timeout="1")
    lab.ids = {name: Suricata(lab.net[name], lab.workdir / f"suricata-{name}").start() for name in ("h2", "h4")}
    yield lab
    for ids in lab.ids.values():
        ids.stop()
    lab.close()


def canary(n: int, pad: int = 0) -> bytes:
    """A UDP datagram h1 -> h3 whose payload holds the canary after `pad` bytes."""
    payload = b"." * pad + CANARY + f":{n}".encode()
    return bytes(Ether(src=mac(1), dst=mac(3)) / IP(src=ip(1), dst=ip(3)) / UDP(sport=4000, dport=PORT) / payload)


def send_and_count(lab: Lab, frames: list[bytes], tag: str, ids: str = "h2") -> tuple[int, int]:
    """Send `frames` from h1: (how many reached h3, new canary alerts at `ids`'s Suricata)."""
    before = len(lab.ids[ids].alerts(CANARY_SID))
    cap = Capture(lab.net["h3"], lab.workdir / f"{tag}-h3.pcap").start()
    try:
        send_frames(lab.net["h1"], frames, lab.workdir / f"{tag}.bin", interval=0.01)
    finally:
        h1 = bytes.fromhex(mac(1).replace(":", ""))
        got = [f for _, f in cap.stop() if CANARY in f and f[6:12] == h1]  # not h3's ICMP error quoting it
    # Suricata writes an alert within its flush interval; give it time to have written all.
    try:
        wait_until(lambda: len(lab.ids[ids].alerts(CANARY_SID)) > before, 5, interval=0.2)
    except AssertionError:
        pass
    time.sleep(1.5)  # and any second one it would write (an absence has no event to wait for)
    return len(got), len(lab.ids[ids].alerts(CANARY_SID)) - before


def test_one_canary_copied_to_the_monitor_is_one_alert(lab):
    tap = create_tap(lab, name="ids", src_ip=ip(1), dst_ip=ip(3), ip_proto="udp", dst_port=PORT, monitor_ip=ip(2))
    wait_tap(lab, tap["id"])
    assert send_and_count(lab, [canary(1)], "one") == (1, 1)
    alert = lab.ids["h2"].alerts(CANARY_SID)[-1]
    assert (alert["src_ip"], alert["dest_ip"], alert["dest_port"]) == (ip(1), ip(3), PORT)
    # Disabled: h3 still gets it, and the IDS sees nothing.
    resp = lab.ctl.http.put(f"/api/v1/taps/{tap['id']}", json={**{k: v for k, v in tap.items() if k in (
        "name", "src_ip", "dst_ip", "ip_proto", "dst_port", "monitor_ip")}, "enabled": False})
    assert resp.status_code == 200, resp.text
    wait_tap(lab, tap["id"], status="disabled")
    assert send_and_count(lab, [canary(2)], "disabled") == (1, 0)
    assert lab.ctl.http.delete(f"/api/v1/taps/{tap['id']}").status_code == 204


def test_a_snaplen_that_cuts_before_the_canary_leaves_nothing_to_alert_on(lab):
    tap = create_tap(lab, name="ids-cut", src_ip=ip(1), dst_ip=ip(3), ip_proto="udp", dst_port=PORT, monitor_ip=ip(2),
                     snaplen=64)
    wait_tap(lab, tap["id"])
    assert send_and_count(lab, [canary(3, pad=40)], "cut") == (1, 0)  # the canary begins at byte 82 of the frame
    assert send_and_count(lab, [canary(4, pad=0)], "uncut") == (1, 1)  # control: within the first 64 bytes it alerts
    assert lab.ctl.http.delete(f"/api/v1/taps/{tap['id']}").status_code == 204


def test_a_vxlan_collectors_ids_alerts_on_the_copies_inside_the_tunnel(lab):
    tap = create_tap(lab, name="ids-vxlan", src_ip=ip(1), dst_ip=ip(3), ip_proto="udp", dst_port=PORT, monitor_ip=ip(4),
                     transport="vxlan", tunnel_key=4242)
    wait_tap(lab, tap["id"], timeout=30)
    assert send_and_count(lab, [canary(5)], "vxlan", ids="h4") == (1, 1)
    alert = lab.ids["h4"].alerts(CANARY_SID)[-1]
    assert (alert["src_ip"], alert["dest_ip"]) == (ip(1), ip(3))  # the inner packet's, decapsulated by Suricata
    assert lab.ctl.http.delete(f"/api/v1/taps/{tap['id']}").status_code == 204


# nfstream's features that measure time: the two captures are made at two hosts, so these
# differ by the copies' extra hop and the machine's scheduling; within this bound.
TIME_TOLERANCE_MS = 25
NOT_FEATURES = {"id", "expiration_id"}


def features(path) -> dict[tuple, dict]:
    from nfstream import NFStreamer

    flows = NFStreamer(source=str(path), statistical_analysis=True, idle_timeout=60, active_timeout=600)
    return {(f.src_ip, f.src_port, f.dst_ip, f.dst_port, f.protocol): dict(zip(f.keys(), f.values())) for f in flows}


def test_flow_features_from_the_copies_equal_the_receivers(lab):
    tap = create_tap(lab, name="ml", src_ip=ip(1), dst_ip=ip(3), ip_proto="udp", dst_port=9000, monitor_ip=ip(2))
    wait_tap(lab, tap["id"])
    frames = []
    for packet in range(8):  # 20 flows, interleaved, packets of varied sizes: statistics with something to say
        for flow in range(20):
            frames.append(bytes(Ether(src=mac(1), dst=mac(3)) / IP(src=ip(1), dst=ip(3))
                                / UDP(sport=5000 + flow, dport=9000) / (b"m" * (20 + 37 * ((flow + packet) % 9)))))
    caps = {name: Capture(lab.net[name], lab.workdir / f"ml-{name}.pcap").start() for name in ("h3", "h2")}
    try:
        send_frames(lab.net["h1"], frames, lab.workdir / "ml.bin", interval=0.002)
    finally:
        for cap in caps.values():
            cap.stop()
    at_receiver, at_monitor = (features(lab.workdir / f"ml-{name}.pcap") for name in ("h3", "h2"))
    keys = {(ip(1), 5000 + flow, ip(3), 9000, 17) for flow in range(20)}
    assert keys <= set(at_receiver) and keys <= set(at_monitor)
    assert set(at_monitor) == keys  # the monitor got these flows' copies, and nothing else
    for key in sorted(keys):
        rcv, mon = at_receiver[key], at_monitor[key]
        assert rcv["bidirectional_packets"] == 8, key
        exact = {k for k in rcv if k not in NOT_FEATURES and not k.endswith("_ms")}
        assert {k: mon[k] for k in exact} == {k: rcv[k] for k in exact}, key  # sizes, counts, MACs, ports, app...
        for k in (k for k in rcv if k.endswith("_ms") and "seen" not in k):  # durations, inter-arrival times
            assert abs(mon[k] - rcv[k]) <= TIME_TOLERANCE_MS, (key, k, mon[k], rcv[k])
    assert lab.ctl.http.delete(f"/api/v1/taps/{tap['id']}").status_code == 204


def test_live_capture_shows_the_first_packets_while_the_job_runs(lab):
    """`vtap capture --tap NAME -w - | tshark -r -`: packets appear in tshark while the job
    still runs (it ends at 100 packets or 60 s; 5 are sent)."""
    tap = create_tap(lab, name="live", src_ip=ip(1), dst_ip=ip(3), ip_proto="udp", dst_port=9100, monitor_ip=ip(2))
    wait_tap(lab, tap["id"])
    vtap = str(Path(sys.executable).with_name("vtap"))
    pipeline = (f"{vtap} capture --api {lab.ctl.api} --token {lab.ctl.token} --tap live -c 100 -d 60 -w - "
                "| tshark -l -r - -T fields -e ip.src -e ip.dst -e udp.dstport 2>/dev/null")
    proc = subprocess.Popen(pipeline, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        job = wait_until(lambda: next((j for j in lab.ctl.get("/api/v1/captures") if j["state"] == "running"), None), 15)
        frames = [bytes(Ether(src=mac(1), dst=mac(3)) / IP(src=ip(1), dst=ip(3)) / UDP(sport=4000, dport=9100) / b"live")
                  for _ in range(5)]
        send_frames(lab.net["h1"], frames, lab.workdir / "live.bin", interval=0.01)
        lines: list[str] = []
        out = b""
        os.set_blocking(proc.stdout.fileno(), False)

        def shown() -> bool:
            nonlocal out
            try:
                out += os.read(proc.stdout.fileno(), 65536)
            except BlockingIOError:
                pass
            lines[:] = [line.strip() for line in out.decode().splitlines() if line.strip()]
            return len(lines) >= 5

        wait_until(shown, 20, interval=0.2, message=lambda: f"tshark showed {lines}")
        assert lines[:5] == [f"{ip(1)}\t{ip(3)}\t9100"] * 5
        assert lab.ctl.get(f"/api/v1/captures/{job['id']}")["state"] == "running"  # live: the job goes on
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=15)
    wait_until(lambda: lab.ctl.get("/api/v1/captures") == [], 15)  # Ctrl-C stopped and removed the job
    assert lab.ctl.http.delete(f"/api/v1/taps/{tap['id']}").status_code == 204


def test_the_sensor_proves_receipt_at_the_tool_and_catches_loss_after_the_port(lab):
    """`vtap sensor` on the monitor counts the copies at the tool's interface. 10% of the
    frames dropped on the monitor's link after the switch port (nftables) show as a count
    short of "delivered to the port" by about that much, and the policy turns degraded,
    "lost between the port and the tool"; without the loss it is active again. The
    sensor's token reports for its own monitor and can do nothing else; the tool's alert
    on a canary is forwarded per policy."""
    tap = create_tap(lab, name="sensed", src_ip=ip(1), dst_ip=ip(3), ip_proto="udp", dst_port=9200, monitor_ip=ip(2))
    wait_tap(lab, tap["id"])
    minted = lab.ctl.http.post("/api/v1/tokens", json={"name": "sensor-h2", "role": "sensor",
                                                       "scope": {"monitors": [ip(2)]}})
    assert minted.status_code == 201, minted.text
    token = minted.json()["token"]
    vtap = str(Path(sys.executable).with_name("vtap"))
    # The sensor reads h2's interface inside h2's namespace, and reaches the API from here.
    sensor = subprocess.Popen([vtap, "sensor", "--api", lab.ctl.api, "--token", token, "--interface", "h2-eth0",
                               "--netns", f"/proc/{lab.net['h2'].pid}/ns/net", "--interval", "0.5",
                               "--eve", str(lab.ids["h2"].eve)],
                              stdout=subprocess.DEVNULL, stderr=open(lab.workdir / "sensor.log", "wb"))
    flow = [bytes(Ether(src=mac(1), dst=mac(3)) / IP(src=ip(1), dst=ip(3)) / UDP(sport=4000 + i % 50, dport=9200)
                  / b"steady") for i in range(200 * 60)]
    senders = []

    def traffic_on() -> None:  # 200 pps from h1 until stopped
        senders.append(send_frames(lab.net["h1"], flow, lab.workdir / "steady.bin", interval=1 / 200, wait=False))

    def traffic_off() -> dict:
        """Stop the traffic; the monitor's delivery once its counters, the port's and the
        tool's, have settled (equal in two reads 1.5 s apart)."""
        senders[-1].kill()
        senders[-1].wait()
        last: list = []

        def still() -> dict | None:  # the same in three reads over 3 s (a sensor starved of CPU reports late)
            d = stats()["delivery"]
            last.append((d["delivered_packets"], d["received_packets"]))
            return d if len(last) >= 3 and last[-1] == last[-2] == last[-3] else None

        return wait_until(still, 20, interval=1.5)

    def status() -> str:
        return lab.ctl.get(f"/api/v1/taps/{tap['id']}")["status"]

    def stats() -> dict:
        return lab.ctl.get(f"/api/v1/taps/{tap['id']}/stats")

    link = lab.net["h2"].defaultIntf().link
    port = link.intf2 if link.intf1.node is lab.net["h2"] else link.intf1  # the switch's end, toward the monitor
    try:
        traffic_on()
        wait_until(lambda: (stats()["tool"] or {}).get("packets", 0) > 200, 20, message=lambda: str(stats()))
        assert status() == "active"
        send_frames(lab.net["h1"], [bytes(Ether(src=mac(1), dst=mac(3)) / IP(src=ip(1), dst=ip(3))
                                          / UDP(sport=4999, dport=9200) / (CANARY + b":sensor"))], lab.workdir / "c.bin")
        wait_until(lambda: (stats()["tool"] or {}).get("alerts") == 1, 15, message=lambda: str(stats()["tool"]))
        before = traffic_off()
        # 10% of the frames leaving the switch port toward the monitor dropped at random:
        # nftables' egress hook (this kernel has no netem: CONFIG_NET_SCH_NETEM is not set).
        ruleset = (f'table netdev vtaploss {{\n chain lossy {{\n type filter hook egress device "{port.name}" priority 0;\n'
                   f' numgen random mod 10 == 0 counter drop\n }}\n}}\n')
        nft = subprocess.run(["nft", "-f", "-"], input=ruleset, text=True, capture_output=True)
        assert nft.returncode == 0, nft.stderr
        try:
            traffic_on()
            wait_until(lambda: status() == "degraded", 40, interval=0.5, message=lambda: str(stats()["delivery"]))
            tap_now = lab.ctl.get(f"/api/v1/taps/{tap['id']}")
            assert "lost between the port and the tool" in tap_now["status_reason"], tap_now
            after = traffic_off()
            delivered = after["delivered_packets"] - before["delivered_packets"]
            received = after["received_packets"] - before["received_packets"]
            listed = subprocess.run(["nft", "-j", "list", "table", "netdev", "vtaploss"], capture_output=True, text=True)
            dropped = next(x["rule"]["expr"][-2]["counter"]["packets"] for x in json.loads(listed.stdout)["nftables"]
                           if "rule" in x)
            # nftables dropped about 10% (at random), and the tool fell short by what it dropped:
            # the sensor counts exactly what reached the interface, give or take a frame or two
            # of the counters' timing.
            assert 0.06 <= dropped / delivered <= 0.14, (delivered, dropped)
            assert abs((delivered - received) - dropped) <= max(3, delivered // 200), (delivered, received, dropped)
        finally:
            subprocess.run(["nft", "delete", "table", "netdev", "vtaploss"], capture_output=True)
        traffic_on()
        wait_until(lambda: status() == "active", 40, interval=0.5, message=lambda: str(stats()["delivery"]))
    finally:
        for sender in senders:
            sender.kill()
        sensor.kill()
        sensor.wait()
    with httpx.Client(base_url=lab.ctl.api, headers={"authorization": f"Bearer {token}"}) as as_sensor:
        assert as_sensor.post("/api/v1/taps", json={"name": "nope", "src_ip": ip(1), "monitor_ip": ip(2)}).status_code == 403
        other = as_sensor.post("/api/v1/sensors/reports", json={"monitor": ip(4), "received_packets": 0,
                                                                "received_bytes": 0})
        assert other.status_code == 403  # only its own monitor's reports
    assert lab.ctl.http.delete(f"/api/v1/taps/{tap['id']}").status_code == 204
