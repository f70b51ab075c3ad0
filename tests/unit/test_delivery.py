"""Delivery accounting: copies sent toward a monitor against copies handed to its port."""

from __future__ import annotations

import pytest

from tests.unit.fabric import Fabric, view_from_topo
from tests.unit.test_taps import ip, mac, tap, tcp
from vtap.compile.network import compile_network
from vtap.control.delivery import DeliveryLedger, GroupCounters
from vtap.lab.topos import parse_topo

SENT = {(1, 10): ("m",)}  # switch 1, tap group 10: one bucket, toward monitor "m"
DELIVERY = {"m": (2, 20)}  # monitor "m": delivery group 20 at switch 2


def poll(ledger: DeliveryLedger, now: float, sent: int, delivered: int) -> list[str]:
    counters = {1: [GroupCounters(10, ((sent, sent * 100),))], 2: [GroupCounters(20, ((delivered, delivered * 100),))]}
    return ledger.observe(now, counters, SENT, DELIVERY, {"m": "10.0.0.9"})


def test_a_monitor_that_stops_receiving_fails_and_recovers_by_itself():
    ledger = DeliveryLedger(lag=0)
    assert poll(ledger, 0, 100, 100) == []
    assert poll(ledger, 1, 200, 199) == []  # one in flight: within the tolerance
    m = ledger.monitors["m"]
    assert (m.sent_packets, m.delivered_packets, m.sent_bytes) == (200, 199, 20000)
    assert poll(ledger, 2, 300, 199) == ["m"]
    assert m.failing and m.reason == "101 of 200 copies in the last 10 s did not reach 10.0.0.9"
    for t in (3, 4):
        assert poll(ledger, t, 300 + 100 * (t - 2), 199 + 100 * (t - 2)) == []
    assert poll(ledger, 5, 600, 499) == ["m"]  # 3 s of full delivery, the loss still in the 10 s window
    assert not m.failing and m.reason == ""
    assert m.undelivered_packets == 101
    for t in (6, 7, 8):  # the old loss, still in the 10 s window, does not count again
        assert poll(ledger, t, 600 + 100 * (t - 5), 499 + 100 * (t - 5)) == []


def test_counters_credited_late_at_the_monitor_are_not_a_loss():
    """OVS credits counters when its revalidators read the datapath: the monitor's switch
    may report a second behind the tap switch, at any rate."""
    ledger = DeliveryLedger()
    for t in range(1, 20):
        assert poll(ledger, t, 10_000 * t, 10_000 * (t - 1)) == []
    # The monitor's link goes down at t=19: noticed once the lag is covered, within 4 s.
    verdicts = [poll(ledger, t, 10_000 * t, 190_000) for t in range(20, 24)]
    assert verdicts == [[], [], [], ["m"]]
    assert ledger.monitors["m"].reason == "10000 of 80000 copies in the last 10 s did not reach 10.0.0.9"


def test_no_copies_sent_is_not_a_failure_and_a_small_loss_at_high_rate_is_tolerated():
    ledger = DeliveryLedger()
    for t in range(5):
        assert poll(ledger, t, 0, 0) == []
    assert poll(ledger, 5, 100_000, 99_950) == []  # 50 of 100,000 (0.05 %) is read skew, not loss
    assert not ledger.monitors["m"].failing


def test_counters_that_go_down_were_recreated_and_totals_never_go_down():
    ledger = DeliveryLedger()
    poll(ledger, 0, 500, 500)
    poll(ledger, 1, 20, 20)  # groups rewritten: 20 new copies each
    m = ledger.monitors["m"]
    assert (m.sent_packets, m.delivered_packets) == (520, 520) and not m.failing


def test_monitors_no_policy_names_are_forgotten():
    ledger = DeliveryLedger()
    poll(ledger, 0, 5, 5)
    ledger.forget(set())
    assert ledger.monitors == {}


def account(fab: Fabric, comp, trace) -> dict[str, tuple[int, int]]:
    """Per monitor (sent, delivered) as the switches' bucket counters would say."""
    delivery_of = {v: m for m, v in comp.deliveries.items()}
    out: dict[str, list[int]] = {}
    for d, gid, i in trace.buckets:
        if (d, gid) in comp.sent_buckets:
            out.setdefault(comp.sent_buckets[(d, gid)][i], [0, 0])[0] += 1
        if (d, gid) in delivery_of:
            out.setdefault(delivery_of[(d, gid)], [0, 0])[1] += 1
    return {m: (s, dl) for m, (s, dl) in out.items()}


@pytest.mark.parametrize("transport", ["vlan", "rewrite"])
@pytest.mark.parametrize("monitor", [2, 3, 9])  # same edge switch, same pod, other pod
def test_every_copy_is_counted_sent_once_and_delivered_once(transport, monitor):
    view = view_from_topo(parse_topo("fattree,4"))
    taps = [tap(1, src_ip=ip(1), dst_ip=ip(16), src_mac=mac(1), dst_mac=mac(16), ip_proto="tcp", dst_port=80,
                monitor_ip=ip(monitor), transport=transport),
            tap(2, src_ip=ip(1), dst_ip=ip(16), src_mac=mac(1), dst_mac=mac(16), monitor_ip=ip(10), transport=transport)]
    desired, comp = compile_network(view, taps)
    fab = Fabric(view, desired)
    m = view.hosts[mac(monitor)]
    assert {g.type for g in fab.groups[m.dpid].values() if g.group_id == comp.deliveries[m.mac][1]} == {"ff"}
    h = view.hosts[mac(1)]
    trace = fab.inject(h.dpid, h.port, tcp(1, 16))
    assert account(fab, comp, trace) == {mac(monitor): (1, 1), mac(10): (1, 1)}
    assert sorted(trace.delivered) == sorted([(m.dpid, m.port), (view.hosts[mac(10)].dpid, view.hosts[mac(10)].port),
                                              (view.hosts[mac(16)].dpid, view.hosts[mac(16)].port)])
    fab.down.add((m.dpid, m.port))  # the monitor's link goes down
    trace = fab.inject(h.dpid, h.port, tcp(1, 16))
    assert account(fab, comp, trace) == {mac(monitor): (1, 0), mac(10): (1, 1)}
    assert (m.dpid, m.port) not in trace.delivered


def test_copies_a_rate_limit_dropped_are_not_a_loss():
    """A send group counts every budgeted copy it saw, also those its meter then dropped
    (OVS credits a datapath flow's packets to every group it went through): the meter's
    drops are taken off, so the monitor is not judged failing, and the policy's drops add up."""
    ledger = DeliveryLedger(lag=0)
    sent = {(1, 10): (None,), (1, 11): ("m",)}  # the tap group's budgeted bucket: counted at send group 11
    for t in range(6):
        counters = {1: [GroupCounters(10, ((1000 * t, 0),)), GroupCounters(11, ((1000 * t, 0),))],
                    2: [GroupCounters(20, ((500 * t, 0),))]}
        drops = {(1, 0x75000010): (3, "m", 500 * t, 0)}
        assert ledger.observe(t, counters, sent, DELIVERY, {}, {}, drops) == []
    m = ledger.monitors["m"]
    assert (m.sent_packets, m.delivered_packets) == (2500, 2500)


def test_a_local_monitors_delivery_counted_the_dropped_copies_too():
    ledger = DeliveryLedger(lag=0)
    local = {"m": (1, 20)}  # the monitor hangs off the tap switch
    for t in range(4):  # 1000 copies a second reach the send group and the delivery group; the meter drops 600
        counters = {1: [GroupCounters(11, ((1000 * t, 0),)), GroupCounters(20, ((1000 * t, 0),))]}
        assert ledger.observe(t, counters, {(1, 11): ("m",)}, local, {}, {}, {(1, 0x75000010): (3, "m", 600 * t, 0)}) == []
    assert (ledger.monitors["m"].sent_packets, ledger.monitors["m"].delivered_packets) == (1200, 1200)


def test_cut_copies_to_a_local_monitor_are_delivered_by_its_cut_group():
    ledger = DeliveryLedger(lag=0)
    for t in range(3):
        counters = {2: [GroupCounters(30, ((7 * t, 0),)), GroupCounters(31, ((7 * t, 0),))]}
        ledger.observe(t, counters, {(2, 30): ("m",)}, DELIVERY, {}, {(2, 31): "m"})
    assert (ledger.monitors["m"].sent_packets, ledger.monitors["m"].delivered_packets) == (14, 14)
