"""The lab on OVS-DPDK (Debian's ovs-vswitchd-dpdk, every switch port a DPDK AF_PACKET
port polled by a PMD thread, on hugepages the lab reserves and gives back), driven by
the controller as any other: its pipeline works there with real packets — group ALL
copies, truncation, sampling (multipath), the rate limit (a meter), a GRE tunnel to a
collector, fast-failover.

`tree,2,2`: s1 above s2 (h1, h2) and s3 (h3, h4); the smallest tree with a monitor
beside each receiver, so a monitor pool can fail over. The test fails, never skips,
when DPDK cannot start: the message says what was missing."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.harness import Lab, create_tap, delete_tap, ip, mac, traffic, wait_tap
from vtap.lab import dpdk
from vtap.lab.collector import decap
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Capture, Flow, frames, marked, send_frames


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    before = int(dpdk.NR_HUGEPAGES.read_text())
    lab = Lab(parse_topo("tree,2,2"), tmp_path_factory.mktemp("dpdk"), dpdk=True, serve_args=("--tunnels", "local"))
    try:
        assert lab.ovs.vsctl("get", "Open_vSwitch", ".", "dpdk_initialized").strip() == "true"
        lab.net.pingAll(timeout="1")  # every host known
        yield lab
    finally:
        lab.close()
    assert int(dpdk.NR_HUGEPAGES.read_text()) == before  # given back


def udp(src: int, dst: int, sport: int, dport: int) -> Flow:
    return Flow(mac(src), mac(dst), ip(src), ip(dst), "udp", sport, dport)


def test_every_switch_port_is_a_dpdk_port_polled_by_a_pmd_thread(lab):
    ports = lab.ovs.vsctl("--bare", "--columns=name,type", "find", "Interface", "type=dpdk").split()
    names = {p for p in ports if p != "dpdk"}
    assert names == {i.name for sw in lab.net.switches for i in sw.intfList() if i.name != "lo"}
    rxq = lab.ovs.appctl("dpif-netdev/pmd-rxq-show")
    assert "core_id 1" in rxq and all(name in rxq for name in names), rxq
    assert Path(dpdk.VSWITCHD).name in Path(f"/proc/{lab.ovs.dir.joinpath('ovs-vswitchd.pid').read_text().strip()}/exe").resolve().name


def test_a_tap_copies_every_matching_frame_byte_for_byte_and_nothing_else(lab):
    tap = create_tap(lab, name="dpdk", src_ip=ip(1), dst_ip=ip(3), ip_proto="udp", dst_port=5001, monitor_ip=ip(2))
    wait_tap(lab, tap["id"])
    got = traffic(lab, "h1", udp(1, 3, 4000, 5001), "m", 100, ["h3", "h2", "h4"])
    assert len(got["h3"]) == 100
    assert got["h2"] == got["h3"] and got["h4"] == []  # every copy, byte for byte, only at the monitor
    got = traffic(lab, "h1", udp(1, 3, 4000, 6000), "n", 50, ["h3", "h2"])
    assert len(got["h3"]) == 50 and got["h2"] == []
    stats = lab.ctl.get(f"/api/v1/taps/{tap['id']}/stats")
    assert stats["copies"] == stats["packets"] >= 100
    delete_tap(lab, tap["id"])


def test_copies_cut_to_the_snaplen(lab):
    tap = create_tap(lab, name="dpdk-cut", src_ip=ip(3), dst_ip=ip(1), ip_proto="udp", monitor_ip=ip(4), snaplen=64)
    wait_tap(lab, tap["id"])
    got = traffic(lab, "h3", udp(3, 1, 4000, 53), "c", 20, ["h1", "h4"], size=600)
    assert len(got["h1"]) == 20 and got["h4"] == [f[:64] for f in got["h1"]]
    delete_tap(lab, tap["id"])


def _sent_and_seen(lab, sender: str, sent: list[bytes], tag: str, watch: list[str], interval: float) -> dict:
    """Send `sent` from `sender`; the frames of `tag` from it each watched host captured."""
    src = lab.net[sender].MAC().replace(":", "")
    caps = {name: Capture(lab.net[name], lab.workdir / f"{tag}-{name}.pcap").start() for name in watch}
    try:
        send_frames(lab.net[sender], sent, lab.workdir / f"{tag}.bin", interval=interval)
    finally:
        got = {name: [(t, f) for t, f in cap.stop() if f[6:12].hex() == src and (marked(f) or "").startswith(tag)]
               for name, cap in caps.items()}
    return got


def test_sampling_copies_whole_flows_a_quarter_of_them(lab):
    tap = create_tap(lab, name="dpdk-sample", src_ip=ip(1), dst_ip=ip(3), ip_proto="udp", dst_port=8000,
                     monitor_ip=ip(2), sample=4)
    wait_tap(lab, tap["id"])
    ports = range(30000, 30200)
    sent = [f for p in ports for f in frames(Flow(mac(1), mac(3), ip(1), ip(3), "udp", p, 8000), f"smp{p}", 3)]
    got = _sent_and_seen(lab, "h1", sent, "smp", ["h3", "h2"], interval=0.0005)
    assert len(got["h3"]) == len(sent)  # every original
    per_flow = Counter(marked(f).split(":")[0] for _, f in got["h2"])
    assert set(per_flow.values()) == {3}, per_flow  # a sampled flow is copied whole
    assert 0.12 <= len(per_flow) / len(ports) <= 0.40, len(per_flow)  # 1 in 4, give or take
    delete_tap(lab, tap["id"])


def test_the_rate_limit_meters_copies_never_originals(lab):
    tap = create_tap(lab, name="dpdk-meter", src_ip=ip(1), dst_ip=ip(3), ip_proto="udp", dst_port=8100,
                     monitor_ip=ip(4), rate_limit_pps=200)
    wait_tap(lab, tap["id"])
    sent = frames(udp(1, 3, 4000, 8100), "meter", 3000)
    got = _sent_and_seen(lab, "h1", sent, "meter", ["h3", "h4"], interval=1 / 1000)  # ~1,000 pps for ~3 s
    assert len(got["h3"]) == 3000
    seconds = got["h3"][-1][0] - got["h3"][0][0]
    assert 0.8 * 200 <= len(got["h4"]) / seconds <= 1.2 * 200, (len(got["h4"]), seconds)
    delete_tap(lab, tap["id"])


def test_copies_reach_a_gre_collector_with_their_key_byte_for_byte(lab):
    tap = create_tap(lab, name="dpdk-gre", src_ip=ip(1), dst_ip=ip(3), ip_proto="udp", dst_port=8200,
                     monitor_ip=ip(4), transport="gre", tunnel_key=9)
    wait_tap(lab, tap["id"], timeout=30)
    sent = frames(udp(1, 3, 4000, 8200), "gre", 20)
    src = mac(1).replace(":", "")
    cap = Capture(lab.net["h4"], lab.workdir / "g-col.pcap").start()
    try:
        got = _sent_and_seen(lab, "h1", sent, "gre", ["h3"], interval=0.005)["h3"]
    finally:
        outer = [d for d in (decap(f) for _, f in cap.stop()) if d and d[2][6:12].hex() == src]
    assert len(got) == 20
    assert [(kind, key) for kind, key, _ in outer] == [("gre", 9)] * 20
    assert [inner for _, _, inner in outer] == [f for _, f in got]
    delete_tap(lab, tap["id"])


def test_a_monitor_pool_fails_over_when_a_members_port_goes_down(lab):
    tap = create_tap(lab, name="dpdk-pool", src_ip=ip(1), dst_ip=ip(3), ip_proto="udp", dst_port=7000,
                     monitor_pool=[ip(2), ip(4)])
    wait_tap(lab, tap["id"])
    got = traffic(lab, "h1", udp(1, 3, 4000, 7000), "p", 50, ["h3", "h2", "h4"])
    assert len(got["h3"]) == 50
    member = "h2" if got["h2"] else "h4"
    other = "h4" if member == "h2" else "h2"
    assert got[member] == got["h3"] and got[other] == []  # one flow, one member
    link = lab.net[member].defaultIntf().link
    end = link.intf2 if link.intf1.node is lab.net[member] else link.intf1
    sw, intf = end.node, end.name
    # DPDK's AF_PACKET driver does not follow its veth's carrier: the host's end going
    # down leaves the OpenFlow port up (a NIC's driver would report it). An operator's
    # `mod-port down` is what this datapath can see; it takes the port out as a carrier
    # loss would.
    lab.net.configLinkStatus(member, sw.name, "down")
    try:
        time.sleep(1.0)
        assert "LINK_DOWN" not in _port_desc(lab, sw.name, intf)
    finally:
        lab.net.configLinkStatus(member, sw.name, "up")
    lab.ovs.ofctl("mod-port", sw.name, intf, "down")
    try:
        time.sleep(1.0)
        assert "PORT_DOWN" in _port_desc(lab, sw.name, intf)
        got = traffic(lab, "h1", udp(1, 3, 4000, 7000), "q", 50, ["h3", other])
        assert len(got["h3"]) == 50 and got[other] == got["h3"]  # the fast-failover group took the other
    finally:
        lab.ovs.ofctl("mod-port", sw.name, intf, "up")
    delete_tap(lab, tap["id"])


def _port_desc(lab, switch: str, intf: str) -> str:
    """The `dump-ports-desc` lines of one port (its config and state)."""
    lines = lab.ovs.ofctl("dump-ports-desc", switch).splitlines()
    start = next(i for i, line in enumerate(lines) if f"({intf}):" in line)
    end = next((j for j in range(start + 1, len(lines)) if "):" in lines[j] and "addr:" in lines[j]), len(lines))
    return "\n".join(lines[start:end])
