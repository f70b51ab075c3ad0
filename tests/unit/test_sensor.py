"""`vtap sensor`'s decisions (pure): which policies are this monitor's, which policy a
frame at the tool is a copy of, and which an alert is about; and the ledger's judgement
of loss between the port and the tool."""

from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from vtap.control.delivery import DeliveryLedger, GroupCounters
from vtap.sensor import alert_policies, attribute, mine

MON, MON_IP = "00:00:00:00:00:02", "10.0.0.2"
TAPS = [
    {"id": 1, "name": "a", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.3", "ip_proto": 17, "dst_port": 7777,
     "monitor_ip": MON_IP, "status": "active"},
    {"id": 2, "name": "b", "src_mac": "00:00:00:00:00:01", "direction": "both", "monitor_mac": MON},
    {"id": 3, "name": "c", "src_ip": "10.0.0.1", "monitor_ip": "10.0.0.9"},  # another monitor's
    {"id": 4, "name": "d", "src_ip": "10.0.0.1", "monitor_ip": MON_IP, "transport": "vxlan", "tunnel_key": 42},
    {"id": 5, "name": "e", "src_ip": "10.0.0.1", "monitor_ip": MON_IP, "enabled": False},
]


def frame(sport: int = 4000, dport: int = 7777, src: str = "10.0.0.1", dst: str = "10.0.0.3",
          src_mac: str = "00:00:00:00:00:01", dst_mac: str = "00:00:00:00:00:03") -> bytes:
    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / b"x")


def vxlan(vni: int, inner: bytes) -> bytes:
    header = bytes([0x08, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\0"
    return bytes(Ether() / IP(src="10.255.255.1", dst=MON_IP) / UDP(sport=50000, dport=4789) / (header + inner))


def test_a_sensor_counts_for_the_enabled_policies_of_its_monitor():
    assert [p.id for p in mine(TAPS, MON, {MON_IP})] == [1, 2, 4]


def test_a_frame_is_attributed_by_match_a_tunnelled_one_by_its_key():
    policies = mine(TAPS, MON, {MON_IP})
    assert attribute(policies, frame()) == [1, 2]  # two policies, one copy
    assert attribute(policies, frame(src_mac="00:00:00:00:00:03", dst_mac="00:00:00:00:00:01", src="10.0.0.3",
                                     dst="10.0.0.1", sport=7777, dport=4000)) == [2]  # both directions of b
    assert attribute(policies, frame(src_mac="00:00:00:00:00:05", src="10.0.0.5")) == []
    assert attribute(policies, vxlan(42, frame())) == [4]
    assert attribute(policies, vxlan(43, frame())) == []


def test_an_alert_names_its_policies_by_its_flow():
    policies = mine(TAPS, MON, {MON_IP})
    alert = {"src_ip": "10.0.0.1", "dest_ip": "10.0.0.3", "proto": "UDP", "src_port": 4000, "dest_port": 7777}
    assert alert_policies(policies, alert) == [1, 2, 4]  # b and d name no ports: they tap all 10.0.0.1 sends
    assert alert_policies(policies, {**alert, "dest_port": 7778}) == [2, 4]


def feed(ledger: DeliveryLedger, seconds: range, rate: int, loss: float, totals: list[int]) -> list[bool]:
    """One poll a second: `rate` copies sent and delivered to the port, the tool receiving
    all but `loss` of them; the monitor's verdict after each."""
    out = []
    for t in seconds:
        totals[0] += rate
        totals[1] += round(rate * (1 - loss))
        ledger.observe(float(t), {1: [GroupCounters(10, ((totals[0], totals[0] * 100),)),
                                      GroupCounters(20, ((totals[0], totals[0] * 100),))]},
                       {(1, 10): (MON,)}, {MON: (1, 20)}, {MON: MON_IP})
        ledger.report(MON, totals[1], totals[1] * 100, float(t))
        out.append(ledger.monitors[MON].failing)
    return out


def test_loss_between_the_port_and_the_tool_degrades_and_clears():
    ledger = DeliveryLedger()
    totals = [0, 0]
    assert not any(feed(ledger, range(0, 30), 200, 0.0, totals))  # all reach the tool
    lossy = feed(ledger, range(30, 60), 200, 0.10, totals)  # 10% lost after the port
    assert lossy[-1] and not lossy[0]
    m = ledger.monitors[MON]
    assert "lost between the port and the tool" in m.reason and not m.port_failing
    clean = feed(ledger, range(60, 90), 200, 0.0, totals)
    assert not clean[-1]


def test_a_silent_sensor_is_not_judged_on():
    ledger = DeliveryLedger()
    totals = [0, 0]
    feed(ledger, range(0, 10), 200, 0.5, totals)
    assert ledger.monitors[MON].failing
    for t in range(10, 20):  # no report any more: the port's verdict alone (all delivered)
        totals[0] += 200
        ledger.observe(float(t), {1: [GroupCounters(10, ((totals[0], 0),)), GroupCounters(20, ((totals[0], 0),))]},
                       {(1, 10): (MON,)}, {MON: (1, 20)}, {MON: MON_IP})
    assert not ledger.monitors[MON].failing


def test_an_unknown_interface_is_a_clear_error():
    import pytest

    from vtap.sensor import interface_addresses

    with pytest.raises(OSError, match="no such interface here"):
        interface_addresses("nosuch0")
