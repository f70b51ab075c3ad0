"""LLDP frames, link lifetime, host learning and the ARP relay."""

from __future__ import annotations

import pytest
from os_ken.lib.packet import arp, ethernet, lldp, packet

from tests.unit.fabric import view_from_topo
from tests.unit.frames import arp_request, udp_frame
from vtap.control import relay
from vtap.control.discovery import ROUNDS_MISSED, LinkTable, LinkTransit, LldpRounds, lldp_frame, parse_lldp
from vtap.control.hosts import HostTable
from vtap.lab.topos import parse_topo
from vtap.model.network import Link


def test_lldp_roundtrip_and_its_proof():
    rounds = LldpRounds(b"k" * 32)
    rounds.new_round(b"1" * 8)
    claim = parse_lldp(lldp_frame(0x0300_0001, 7, "02:00:00:00:00:01", rounds.key, rounds.nonce))
    assert (claim.dpid, claim.port) == (0x03000001, 7) and rounds.judge(claim) is None
    assert parse_lldp(b"\x00" * 60) is None
    assert rounds.new_round(b"2" * 8)
    assert rounds.judge(claim) is None  # the round before: still in flight
    assert rounds.judge(parse_lldp(lldp_frame(0x0300_0001, 7, "02:00:00:00:00:01", rounds.key, rounds.nonce))) is None
    assert rounds.new_round(b"3" * 8)  # round 2 was answered: it turns
    assert rounds.judge(claim) == "replayed"
    other_key = parse_lldp(lldp_frame(0x0300_0001, 7, "02:00:00:00:00:01", b"x" * 32, rounds.nonce))
    assert rounds.judge(other_key) == "forged"
    genuine = lldp_frame(1, 7, "02:00:00:00:00:01", rounds.key, rounds.nonce)
    other_port = genuine.replace(b"\x04\x02\x027", b"\x04\x02\x028")  # the port id TLV, with its proof kept
    assert parse_lldp(other_port).port == 8 and rounds.judge(parse_lldp(other_port)) == "forged"
    bare = lldp.lldp((lldp.ChassisID(subtype=7, chassis_id=b"dpid:%016x" % 1), lldp.PortID(subtype=2, port_id=b"7"),
                      lldp.TTL(ttl=120), lldp.End()))
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=lldp.LLDP_MAC_NEAREST_BRIDGE, src="00:00:00:00:00:01", ethertype=0x88CC))
    pkt.add_protocol(bare)
    pkt.serialize()
    assert rounds.judge(parse_lldp(bytes(pkt.data))) == "forged"  # the old, unproven format


def test_links_expire_and_drop_with_their_port():
    table = LinkTable(lifetime=3.0)
    l1, l2 = Link(1, 2, 2, 2), Link(2, 2, 1, 2)
    assert table.seen(l1, 0.0) and table.seen(l2, 0.0)
    for _ in range(ROUNDS_MISSED):
        table.turned()
    assert not table.seen(l1, 2.0)
    assert table.expire(4.0) == [l2]
    assert table.drop_port(2, 2) == [l1]
    assert table.links() == frozenset()


def test_hosts_learn_move_and_take_over_ips():
    t = HostTable()
    assert t.learn("00:00:00:00:00:01", 1, 1, ("10.0.0.1",), 0.0).changed
    assert not t.learn("00:00:00:00:00:01", 1, 1, ("10.0.0.1",), 1.0).changed
    assert t.learn("00:00:00:00:00:01", 2, 3, (), 2.0).changed  # moved
    assert (t.hosts["00:00:00:00:00:01"].dpid, t.hosts["00:00:00:00:00:01"].port) == (2, 3)
    assert t.learn("00:00:00:00:00:02", 1, 2, ("10.0.0.1",), 3.0).changed  # IP moves to a new MAC
    assert t.hosts["00:00:00:00:00:01"].ips == ()
    assert not t.learn("ff:ff:ff:ff:ff:ff", 1, 1, (), 0.0).changed


def test_arp_for_a_known_host_is_answered_by_proxy():
    view = view_from_topo(parse_topo("linear,3"))
    d = relay.decide(view, 1, 1, arp_request("00:00:00:00:00:01", "10.0.0.1", "10.0.0.3"))
    assert d.sender_mac == "00:00:00:00:00:01" and d.sender_ips == ("10.0.0.1",)
    (out,) = d.outs
    assert (out.dpid, out.port) == (1, 1)
    reply = packet.Packet(out.data).get_protocol(arp.arp)
    assert reply.opcode == arp.ARP_REPLY and reply.src_mac == "00:00:00:00:00:03" and reply.src_ip == "10.0.0.3"


def test_arp_for_an_unknown_host_is_relayed_to_every_other_edge_port():
    view = view_from_topo(parse_topo("fattree,4"), hosts_known=False)
    frame = arp_request("00:00:00:00:00:01", "10.0.0.1", "10.0.0.9")
    d = relay.decide(view, 0x030001, 1, frame)
    assert len(d.outs) == 15 and all(o.data == frame for o in d.outs)
    assert (0x030001, 1) not in {(o.dpid, o.port) for o in d.outs}


def test_nothing_is_learned_from_a_port_facing_a_switch():
    view = view_from_topo(parse_topo("linear,3"))
    d = relay.decide(view, 2, 2, arp_request("00:00:00:00:00:01", "10.0.0.1", "10.0.0.3"))
    assert d.sender_mac is None and d.outs == ()


def test_hosts_expire_after_silence_unless_kept():
    t = HostTable()
    t.learn("00:00:00:00:00:01", 1, 1, ("10.0.0.1",), 0.0)
    t.learn("00:00:00:00:00:02", 1, 2, ("10.0.0.2",), 0.0)
    t.learn("00:00:00:00:00:03", 1, 3, ("10.0.0.3",), 0.0)
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
    d = relay.decide(stale_view, 1, 1, arp_request("00:00:00:00:00:01", "10.0.0.1", "10.0.0.3"))
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


def test_a_host_is_known_by_every_address_it_uses():
    t = HostTable()
    assert t.learn("00:00:00:00:00:10", 1, 1, ("fe80::200:ff:fe00:10",), 0.0).changed
    assert t.learn("00:00:00:00:00:10", 1, 1, ("10.0.0.16",), 1.0).changed  # its first ARP reply
    assert t.learn("00:00:00:00:00:10", 1, 1, ("fe80::200:ff:fe00:10", "fc00::16"), 2.0).changed
    assert t.hosts["00:00:00:00:00:10"].ips == ("10.0.0.16", "fc00::16", "fe80::200:ff:fe00:10")
    assert not t.learn("00:00:00:00:00:10", 1, 1, ("fc00::16",), 3.0).changed


def _ipv6_frame(src_mac, dst_mac, src_ip, dst_ip, icmp) -> bytes:
    from os_ken.lib.packet import ipv6

    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=dst_mac, src=src_mac, ethertype=0x86DD))
    pkt.add_protocol(ipv6.ipv6(src=src_ip, dst=dst_ip, nxt=58, hop_limit=255))
    pkt.add_protocol(icmp)
    pkt.serialize()
    return bytes(pkt.data)


def _ns(src_mac, src_ip, target) -> bytes:
    from os_ken.lib.packet import icmpv6

    return _ipv6_frame(src_mac, "33:33:ff:00:00:03", src_ip, "ff02::1:ff00:3",
                       icmpv6.icmpv6(type_=135, data=icmpv6.nd_neighbor(dst=target, option=icmpv6.nd_option_sla(hw_src=src_mac))))


def _view_with_v6():
    from dataclasses import replace

    from vtap.model.view import NetworkView

    view = view_from_topo(parse_topo("linear,3"))
    hosts = {m: replace(h, ips=h.ips + (f"fc00::{int(m[-2:], 16)}",)) for m, h in view.hosts.items()}
    return NetworkView(view.devices, view.links, hosts)


def test_neighbour_solicitation_for_a_known_host_is_answered_by_proxy():
    from os_ken.lib.packet import icmpv6, ipv6

    d = relay.decide(_view_with_v6(), 1, 1, _ns("00:00:00:00:00:01", "fc00::1", "fc00::3"))
    assert d.sender_mac == "00:00:00:00:00:01" and d.sender_ips == ("fc00::1",)
    (out,) = d.outs
    assert (out.dpid, out.port) == (1, 1)
    pkt = packet.Packet(out.data)
    eth, ip6, na = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv6.ipv6), pkt.get_protocol(icmpv6.icmpv6)
    assert (eth.src, eth.dst, ip6.src, ip6.dst) == ("00:00:00:00:00:03", "00:00:00:00:00:01", "fc00::3", "fc00::1")
    assert na.type_ == 136 and na.data.dst == "fc00::3" and na.data.option.hw_src == "00:00:00:00:00:03"
    assert na.data.res & relay.ND_SOLICITED and na.data.res & relay.ND_OVERRIDE
    # The checksum is right (a receiver's stack would drop it otherwise): scapy recomputes it.
    from scapy.layers.inet6 import ICMPv6ND_NA
    from scapy.layers.l2 import Ether

    frame = Ether(out.data)
    sent = frame[ICMPv6ND_NA].cksum
    del frame[ICMPv6ND_NA].cksum
    assert Ether(bytes(frame))[ICMPv6ND_NA].cksum == sent


def test_neighbour_solicitation_for_an_unknown_target_or_from_dad_is_relayed():
    view = _view_with_v6()
    d = relay.decide(view, 1, 1, _ns("00:00:00:00:00:01", "fc00::1", "fc00::99"))
    assert {(o.dpid, o.port) for o in d.outs} == {(2, 1), (3, 1)}
    d = relay.decide(view, 1, 1, _ns("00:00:00:00:00:01", "::", "fc00::3"))  # duplicate address detection
    assert d.sender_ips == () and {(o.dpid, o.port) for o in d.outs} == {(2, 1), (3, 1)}


def test_neighbour_advertisement_teaches_its_target_address():
    from os_ken.lib.packet import icmpv6

    na = icmpv6.icmpv6(type_=136, data=icmpv6.nd_neighbor(res=relay.ND_OVERRIDE, dst="fc00::3",
                                                         option=icmpv6.nd_option_tla(hw_src="00:00:00:00:00:03")))
    frame = _ipv6_frame("00:00:00:00:00:03", "00:00:00:00:00:01", "fe80::200:ff:fe00:3", "fc00::1", na)
    d = relay.decide(view_from_topo(parse_topo("linear,3")), 3, 1, frame)
    assert d.sender_mac == "00:00:00:00:00:03" and set(d.sender_ips) == {"fe80::200:ff:fe00:3", "fc00::3"}
    assert [(o.dpid, o.port) for o in d.outs] == [(1, 1)]


def test_an_arp_reply_to_a_probe_is_learned_and_goes_nowhere():
    reply = packet.Packet()
    reply.add_protocol(ethernet.ethernet(dst=relay.PROBE_MAC, src="00:00:00:00:00:03", ethertype=0x0806))
    reply.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac="00:00:00:00:00:03", src_ip="10.0.0.3",
                               dst_mac=relay.PROBE_MAC, dst_ip="0.0.0.0"))
    reply.serialize()
    d = relay.decide(view_from_topo(parse_topo("linear,3"), hosts_known=False), 3, 1, bytes(reply.data))
    assert d.sender_mac == "00:00:00:00:00:03" and d.sender_ips == ("10.0.0.3",) and d.outs == ()


def test_probe_frames_ask_without_teaching():
    from os_ken.lib.packet import icmpv6, ipv6

    a = packet.Packet(relay.probe_frame("10.0.0.7")).get_protocol(arp.arp)
    assert (a.opcode, a.src_ip, a.dst_ip, a.src_mac) == (arp.ARP_REQUEST, "0.0.0.0", "10.0.0.7", relay.PROBE_MAC)
    pkt = packet.Packet(relay.probe_frame("fc00::1:2:3"))
    eth, ip6, ns = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv6.ipv6), pkt.get_protocol(icmpv6.icmpv6)
    assert (eth.dst, ip6.src, ip6.dst) == ("33:33:ff:02:00:03", "::", "ff02::1:ff02:3")
    assert ns.type_ == 135 and ns.data.dst == "fc00::1:2:3" and ns.data.option is None


def test_probes_back_off_while_wanted_and_restart_when_wanted_again():
    from vtap.control.core import NamedAddresses
    from vtap.control.probing import ProbeSchedule
    from vtap.model.policy import Tap, TapSpec

    s = ProbeSchedule(first_retry=0.25, max_retry=1.0)
    assert s.due({"10.0.0.9"}, 0.0) == ["10.0.0.9"]
    assert s.due({"10.0.0.9"}, 0.1) == []
    times = [t / 100 for t in range(0, 400, 5)]
    sent = [t for t in times[3:] if s.due({"10.0.0.9"}, t)]
    assert sent == [0.25, 0.75, 1.75, 2.75, 3.75]  # 0.25, 0.5, then capped at 1.0
    assert s.due(set(), 4.0) == []
    assert s.due({"10.0.0.9"}, 4.0) == ["10.0.0.9"]  # wanted again: asked at once
    taps = [Tap(id=1, spec=TapSpec(name="a", src_ip="10.0.0.1", dst_ip="10.0.0.0/24", monitor_ip="fc00::9")),
            Tap(id=2, spec=TapSpec(name="b", src_ip="10.0.0.2", monitor_ip="10.0.0.3", enabled=False)),
            Tap(id=3, spec=TapSpec(name="c", src_ip="10.0.0.1", monitor_pool=["10.0.0.7", "00:00:00:00:00:08"]))]
    named = NamedAddresses()
    for tap in taps:
        named.set(tap)
    # Looked for: the single addresses enabled policies name, not a pool's members.
    assert named.probe == {"10.0.0.1": 2, "fc00::9": 1}
    assert named.ips.keys() == {"10.0.0.1", "fc00::9", "10.0.0.2", "10.0.0.3", "10.0.0.7"}
    assert named.macs.keys() == {"00:00:00:00:00:08"}
    named.set(taps[0])  # set again: counted once
    named.remove(3)
    assert named.probe == {"10.0.0.1": 1, "fc00::9": 1} and "10.0.0.7" not in named.ips


def test_addresses_and_macs_a_policy_pins_are_held_against_claims():
    t = HostTable()
    t.learn("00:00:00:00:00:09", 1, 1, ("10.0.0.9",), 0.0)
    pins = dict(pinned_ips=frozenset({"10.0.0.9"}), pinned_macs=frozenset({"00:00:00:00:00:09"}))
    seen = t.learn("00:00:00:00:00:66", 2, 1, ("10.0.0.9",), 1.0, **pins)  # gratuitous ARP for the monitor's IP
    assert [c.address for c in seen.held] == ["10.0.0.9"] and seen.held[0].owner == "00:00:00:00:00:09"
    assert t.hosts["00:00:00:00:00:09"].ips == ("10.0.0.9",) and t.hosts["00:00:00:00:00:66"].ips == ()
    seen = t.learn("00:00:00:00:00:09", 2, 1, (), 2.0, **pins)  # the monitor's MAC from another port
    assert [c.address for c in seen.held] == ["00:00:00:00:00:09"]
    assert (t.hosts["00:00:00:00:00:09"].dpid, t.hosts["00:00:00:00:00:09"].port) == (1, 1)
    t.move(seen.held[0], 3.0)  # once the owner is gone, or the operator says so
    assert (t.hosts["00:00:00:00:00:09"].dpid, t.hosts["00:00:00:00:00:09"].port) == (2, 1)
    # Addresses nobody pins move as before.
    assert t.learn("00:00:00:00:00:77", 2, 2, ("10.0.0.9",), 4.0).changed
    assert t.hosts["00:00:00:00:00:77"].ips == ("10.0.0.9",)


def test_a_port_learns_at_most_its_cap_of_macs():
    t = HostTable(max_per_port=3)
    results = [t.learn(f"00:00:00:00:01:{i:02x}", 1, 1, (), 0.0) for i in range(10)]
    assert [r.changed for r in results] == [True] * 3 + [False] * 7
    assert [r.refused for r in results] == [False] * 3 + [True] * 7
    assert t.count_at(1, 1) == 3 and t.refused == {(1, 1): 7}
    assert t.learn("00:00:00:00:01:00", 1, 1, ("10.0.0.1",), 1.0).changed  # known MACs still update
    assert t.learn("00:00:00:00:02:00", 1, 2, (), 1.0).changed  # other ports have their own cap


def test_a_links_transit_is_timed_from_the_send_of_the_same_round_and_forgotten_with_the_link():
    transit = LinkTransit()
    link, other = Link(1, 2, 3, 4), Link(3, 4, 1, 2)
    assert transit.of(link) is None
    transit.sending(1, 2, b"round-1", 10.0)
    transit.arrived(link, b"round-1", 10.004)
    transit.sending(1, 2, b"round-2", 11.0)
    transit.arrived(link, b"round-1", 11.5)  # a frame of the round before: not timed against this send
    transit.arrived(link, b"round-2", 11.002)
    last, least = transit.of(link)
    assert last == pytest.approx(0.002) and least == pytest.approx(0.002)
    transit.sending(1, 2, b"round-3", 12.0)
    transit.arrived(link, b"round-3", 12.009)
    assert transit.of(link) == (pytest.approx(0.009), pytest.approx(0.002))
    transit.arrived(other, b"round-3", 12.0)  # nothing was sent out of 3:4
    assert transit.of(other) is None
    transit.keep(frozenset({other}))
    assert transit.of(link) is None


def test_unicast_to_a_host_whose_switch_is_away_goes_nowhere_else():
    """A switch cut off (or restarting) keeps its host where it was: its traffic is not
    handed to every edge port meanwhile. A host whose port went down on a switch that is
    here may have moved, and is looked for at every edge port."""
    from dataclasses import replace

    from vtap.model.view import NetworkView

    view = view_from_topo(parse_topo("linear,3"))
    frame = udp_frame("00:00:00:00:00:01", "00:00:00:00:00:03", "10.0.0.1", "10.0.0.3")
    assert [(o.dpid, o.port) for o in relay.decide(view, 1, 1, frame).outs] == [(3, 1)]
    away = NetworkView({d: v for d, v in view.devices.items() if d != 3}, view.links, view.hosts)
    assert relay.decide(away, 1, 1, frame).outs == ()
    moved = NetworkView(view.devices, view.links, {**view.hosts, "00:00:00:00:00:03": replace(view.hosts["00:00:00:00:00:03"], port=9)})
    assert {(o.dpid, o.port) for o in relay.decide(moved, 1, 1, frame).outs} == {(2, 1), (3, 1)}


def test_a_round_none_of_whose_frames_was_read_is_held_a_few_rounds():
    """A controller that reads its frames rounds after sending them (its loop behind the
    switches) keeps the nonce until one comes back, so it does not refuse its own frames
    as replayed; where none ever comes back, the nonce still turns every HOLD_MAX + 1."""
    from vtap.control.discovery import HOLD_MAX

    rounds = LldpRounds(b"k" * 32)
    assert rounds.new_round(b"1" * 8)
    sent = parse_lldp(lldp_frame(5, 2, "02:00:00:00:00:05", rounds.key, rounds.nonce))
    assert [rounds.new_round(bytes([48 + i]) * 8) for i in range(2, 2 + HOLD_MAX)] == [False] * HOLD_MAX
    assert rounds.judge(sent) is None  # read late: still this controller's, of a live round
    assert rounds.new_round(b"9" * 8) and rounds.nonce == b"9" * 8
    unanswered = [rounds.new_round(bytes([65 + i]) * 8) for i in range(HOLD_MAX + 1)]
    assert unanswered == [False] * HOLD_MAX + [True]  # nothing read: turned after HOLD_MAX
    assert rounds.judge(sent) == "replayed"


def test_a_round_turns_once_half_the_links_it_expects_are_read():
    """With 6 links known, the first frame read (a switch that just connected, a quiet
    connection) does not turn the round while the bulk waits unread; the third does."""
    rounds = LldpRounds(b"k" * 32)
    assert rounds.new_round(b"1" * 8, links=6)
    frames = [parse_lldp(lldp_frame(5, port, "02:00:00:00:00:05", rounds.key, rounds.nonce)) for port in range(1, 7)]
    assert rounds.judge(frames[0]) is None and not rounds.new_round(b"2" * 8, links=6)
    assert rounds.judge(frames[1]) is None and rounds.judge(frames[2]) is None
    assert rounds.new_round(b"3" * 8, links=6)
    assert all(rounds.judge(f) is None for f in frames[3:])  # the rest, read a round late: believed


def test_a_lagging_controller_keeps_its_links_until_rounds_have_turned_without_them():
    """Silent past its lifetime, a link stays while the rounds do not turn (the loop is
    behind: their frames are not read yet); it goes once ROUNDS_MISSED rounds turned
    without it, and one seen in a later round stays."""
    table = LinkTable(lifetime=3.0)
    quiet, talking = Link(1, 2, 2, 2), Link(2, 3, 3, 2)
    table.seen(quiet, 0.0), table.seen(talking, 0.0)
    assert table.expire(60.0) == []  # a minute behind, no round turned: nothing can be judged silent
    for r in range(ROUNDS_MISSED):
        assert table.expire(61.0 + r) == []
        table.turned()
        table.seen(talking, 61.0 + r)
    assert table.expire(70.0) == [quiet]
    assert table.links() == frozenset({talking}) and quiet not in table.seen_round
