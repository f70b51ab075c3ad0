"""LLDP frames, link lifetime, host learning and the ARP relay."""

from __future__ import annotations

from os_ken.lib.packet import arp, ethernet, packet

from tests.unit.fabric import view_from_topo
from vtap.control import relay
from vtap.control.discovery import LinkTable, lldp_frame, parse_lldp
from vtap.control.hosts import HostTable
from vtap.lab.topos import parse_topo
from vtap.model.network import Link


def test_lldp_roundtrip():
    frame = lldp_frame(0x0300_0001, 7, "02:00:00:00:00:01")
    assert parse_lldp(frame) == (0x03000001, 7)
    assert parse_lldp(b"\x00" * 60) is None


def test_links_expire_and_drop_with_their_port():
    table = LinkTable(lifetime=3.0)
    l1, l2 = Link(1, 2, 2, 2), Link(2, 2, 1, 2)
    assert table.seen(l1, 0.0) and table.seen(l2, 0.0)
    assert not table.seen(l1, 2.0)
    assert table.expire(4.0) == [l2]
    assert table.drop_port(2, 2) == [l1]
    assert table.links() == frozenset()


def test_hosts_learn_move_and_take_over_ips():
    t = HostTable()
    assert t.learn("00:00:00:00:00:01", 1, 1, "10.0.0.1", 0.0)
    assert not t.learn("00:00:00:00:00:01", 1, 1, "10.0.0.1", 1.0)
    assert t.learn("00:00:00:00:00:01", 2, 3, None, 2.0)  # moved
    assert (t.hosts["00:00:00:00:00:01"].dpid, t.hosts["00:00:00:00:00:01"].port) == (2, 3)
    assert t.learn("00:00:00:00:00:02", 1, 2, "10.0.0.1", 3.0)  # IP moves to a new MAC
    assert t.hosts["00:00:00:00:00:01"].ips == ()
    assert not t.learn("ff:ff:ff:ff:ff:ff", 1, 1, None, 0.0)


def _arp_request(src_mac, src_ip, dst_ip) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=src_mac, ethertype=0x0806))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=src_mac, src_ip=src_ip, dst_mac="00:00:00:00:00:00", dst_ip=dst_ip))
    pkt.serialize()
    return bytes(pkt.data)


def test_arp_for_a_known_host_is_answered_by_proxy():
    view = view_from_topo(parse_topo("linear,3"))
    d = relay.decide(view, 1, 1, _arp_request("00:00:00:00:00:01", "10.0.0.1", "10.0.0.3"))
    assert d.sender_mac == "00:00:00:00:00:01" and d.sender_ip == "10.0.0.1"
    (out,) = d.outs
    assert (out.dpid, out.port) == (1, 1)
    reply = packet.Packet(out.data).get_protocol(arp.arp)
    assert reply.opcode == arp.ARP_REPLY and reply.src_mac == "00:00:00:00:00:03" and reply.src_ip == "10.0.0.3"


def test_arp_for_an_unknown_host_is_relayed_to_every_other_edge_port():
    view = view_from_topo(parse_topo("fattree,4"), hosts_known=False)
    frame = _arp_request("00:00:00:00:00:01", "10.0.0.1", "10.0.0.9")
    d = relay.decide(view, 0x030001, 1, frame)
    assert len(d.outs) == 15 and all(o.data == frame for o in d.outs)
    assert (0x030001, 1) not in {(o.dpid, o.port) for o in d.outs}


def test_nothing_is_learned_from_a_port_facing_a_switch():
    view = view_from_topo(parse_topo("linear,3"))
    d = relay.decide(view, 2, 2, _arp_request("00:00:00:00:00:01", "10.0.0.1", "10.0.0.3"))
    assert d.sender_mac is None and d.outs == ()


def test_hosts_expire_after_silence_unless_kept():
    t = HostTable()
    t.learn("00:00:00:00:00:01", 1, 1, "10.0.0.1", 0.0)
    t.learn("00:00:00:00:00:02", 1, 2, "10.0.0.2", 0.0)
    t.learn("00:00:00:00:00:03", 1, 3, "10.0.0.3", 0.0)
    t.refresh("00:00:00:00:00:01", 50.0)
    assert t.expire(60.0, 0, {1: 0.0}) == []  # 0: never
    assert t.expire(60.0, 30.0, {}) == []  # switch 1 not watched yet: nothing can be judged silent
    assert t.expire(60.0, 30.0, {1: 40.0}) == []  # watched for 20 s only: too early
    assert t.expire(80.0, 30.0, {1: 40.0}, keep=frozenset({"00:00:00:00:00:03"})) == ["00:00:00:00:00:02"]
    assert set(t.hosts) == {"00:00:00:00:00:01", "00:00:00:00:00:03"}


def test_a_host_recorded_on_a_switch_that_is_gone_is_looked_for_everywhere():
    from dataclasses import replace

    view = view_from_topo(parse_topo("linear,3"))
    stale = {**view.hosts, "00:00:00:00:00:03": replace(view.hosts["00:00:00:00:00:03"], dpid=99)}
    from vtap.model.view import NetworkView

    stale_view = NetworkView(view.devices, view.links, stale)
    d = relay.decide(stale_view, 1, 1, _arp_request("00:00:00:00:00:01", "10.0.0.1", "10.0.0.3"))
    assert {(o.dpid, o.port) for o in d.outs} == {(2, 1), (3, 1)}  # relayed, not answered from a stale record


def test_a_port_that_faced_a_switch_keeps_facing_it_until_it_goes_down():
    table = LinkTable(lifetime=3.0)
    table.seen(Link(1, 2, 2, 2), 0.0)
    table.drop_switch(1)  # s1 disconnects: its links go, s2's port 2 still faces it
    assert table.links() == frozenset() and (2, 2) in table.switch_ports
    table.expire(10.0)
    assert (2, 2) in table.switch_ports
    table.drop_port(2, 2)  # the port goes down: it may face a host next
    assert (2, 2) not in table.switch_ports
