"""The controller's decisions without a switch: `ControlCore` given events and the time."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from os_ken.lib.packet import arp, ethernet, packet

from tests.unit.fabric import view_from_topo
from tests.unit.frames import arp_request
from vtap.control.core import ControlCore
from vtap.control.discovery import ROUNDS_MISSED
from vtap.lab.topos import parse_topo
from vtap.model.network import Link, Port
from vtap.model.policy import Tap, TapSpec
from vtap.model.state import PolicyState, SwitchSync, SwitchSyncs, SyncState


def core_for(spec: str = "linear,3", *, hosts_known: bool = True) -> ControlCore:
    view = view_from_topo(parse_topo(spec), hosts_known=hosts_known)
    core = ControlCore(link_lifetime=3.5, host_timeout=30.0)
    for device in view.devices.values():
        core.switch_up(device, 0.0)
    for link in view.links:
        core.lldp_arrived(link, 0.0)
    core.load(list(view.hosts.values()), [])
    settle_roles(core)
    return core


def settle_roles(core: ControlCore, now: float = 0.0) -> None:
    """Every switch's rules in, two LLDP rounds sent, and time enough: every port not
    proven a link turns edge (control/roles.py)."""
    for dpid, device in core.devices.items():
        core.switch_synced(dpid, now)
    for _ in range(2):
        for dpid in core.devices:
            for port in core.lldp_ports(dpid):
                core.roles.lldp_sent((dpid, port.port_no))
    core.decide_roles(now + core.edge_after)


def in_sync(core: ControlCore, gen: int | None = None) -> dict[int, SwitchSync]:
    return {d: SwitchSync(SyncState.IN_SYNC, core.generation if gen is None else gen) for d in core.devices}


def test_a_policy_is_active_only_once_every_switch_concerned_confirmed_its_generation():
    core = core_for()
    core.set_tap(Tap(id=1, spec=TapSpec(name="t", src_ip="10.0.0.1", dst_ip="10.0.0.3", monitor_ip="10.0.0.2")))
    assert core.tap_status(1, in_sync(core)).state == PolicyState.PENDING  # not compiled yet
    core.compile()
    status = core.tap_status(1, in_sync(core, core.generation - 1))
    assert status.state == PolicyState.PENDING and "installing" in status.reason
    assert core.tap_status(1, in_sync(core)).state == PolicyState.ACTIVE
    switches = in_sync(core)
    del switches[1]
    assert core.tap_status(1, switches).state == PolicyState.DEGRADED
    switches[1] = SwitchSync(SyncState.ERROR, core.generation, "bundle refused")
    status = core.tap_status(1, switches)
    assert status.state == PolicyState.ERROR and "bundle refused" in status.reason


def test_policies_compiled_alike_are_judged_once_per_moment_and_as_each_alone():
    core = core_for()
    for i in range(1, 5):  # two pairs compiled alike: the same switches, the same state
        core.set_tap(Tap(id=i, spec=TapSpec(name=f"t{i}", src_ip=f"10.0.0.{1 + 2 * (i % 2)}",
                                            dst_ip=f"10.0.0.{3 - 2 * (i % 2)}", monitor_ip="10.0.0.2")))
    core.compile()
    live = in_sync(core)
    syncs = SwitchSyncs(live)
    alone = [core.tap_status(i, dict(live)) for i in range(1, 5)]
    assert [core.tap_status(i, syncs) for i in range(1, 5)] == alone
    assert {s.state for s in alone} == {PolicyState.ACTIVE} and len(syncs.judged) == 2
    # A moment's copies: a switch that goes on does not change what was judged at it.
    concerned = min(alone[0].switches)
    live[concerned].state = SyncState.ERROR
    assert syncs[concerned].state == SyncState.IN_SYNC and core.tap_status(1, syncs).state == PolicyState.ACTIVE
    assert core.tap_status(1, SwitchSyncs(live)).state == PolicyState.ERROR


def test_a_policy_naming_an_unknown_monitor_is_pending_and_its_address_is_probed():
    core = core_for()
    core.set_tap(Tap(id=1, spec=TapSpec(name="t", src_ip="10.0.0.1", dst_ip="10.0.0.3", monitor_ip="10.0.0.9")))
    core.compile()
    assert core.tap_status(1, in_sync(core)).state == PolicyState.PENDING
    assert core.probes_due(100.0) == ["10.0.0.9"]
    assert core.probes_due(100.1) == []  # backing off


def _arp_reply(src_mac: str, src_ip: str) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="00:00:00:00:00:01", src=src_mac, ethertype=0x0806))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=src_mac, src_ip=src_ip, dst_mac="00:00:00:00:00:01", dst_ip="10.0.0.1"))
    pkt.serialize()
    return bytes(pkt.data)


def test_a_frame_teaches_its_sender_and_is_delivered():
    core = core_for(hosts_known=False)
    outcome = core.frame_arrived(3, 1, _arp_reply("00:00:00:00:00:03", "10.0.0.3"), now=5.0)
    assert outcome.changed and outcome.learned.mac == "00:00:00:00:00:03" and outcome.learned.ips == ("10.0.0.3",)
    assert outcome.learned.last_seen == 5.0 and outcome.outs == ()  # h1 is not known yet: nowhere to deliver
    assert core.view().host_by_ip("10.0.0.3").dpid == 3
    again = core.frame_arrived(3, 1, _arp_reply("00:00:00:00:00:03", "10.0.0.3"), now=6.0)
    assert not again.changed and again.learned is None


def test_frames_from_the_switch_itself_teach_no_host():
    """The LOCAL port is a tunnel endpoint's (OVS asks there for a tunnel's next hop):
    its frames are delivered as any, but never make a host."""
    core = core_for(hosts_known=False)
    outcome = core.frame_arrived(1, 0xFFFFFFFE, _arp_reply("8e:c4:83:16:de:48", "10.218.15.183"), now=5.0)
    assert outcome.learned is None and core.view().host_by_ip("10.218.15.183") is None


def test_lldp_on_a_port_forgets_the_hosts_mislearned_there_and_a_port_down_drops_its_links():
    core = core_for()
    new, forgotten = core.lldp_arrived(Link(1, 2, 3, 1), 1.0)  # h3's port turns out to face s1
    assert new and forgotten == ["00:00:00:00:00:03"]
    assert core.lldp_arrived(Link(99, 1, 3, 1), 1.0) == (False, [])  # not from a switch of ours
    gone = core.port_changed(3, Port(1, "s3-eth1", "02:00:00:00:03:01", up=False), 2.0)
    assert Link(1, 2, 3, 1) in gone and 1 not in core.view().link_ports.get(3, ())


def test_silent_hosts_are_forgotten_but_a_policy_s_hosts_are_probed_instead():
    core = core_for()
    core.set_tap(Tap(id=1, spec=TapSpec(name="t", src_ip="10.0.0.1", dst_ip="10.0.0.3", monitor_ip="10.0.0.2")))
    core.compile()
    for dpid in core.devices:
        core.host_counters(dpid, [], now=0.0)  # counters watched from t=0
    probe, gone = core.host_liveness(now=10.0)
    assert probe == [] and gone == []
    assert core.host_counters(1, [("00:00:00:00:00:01", 5)], now=20.0)[0].last_seen == 20.0
    probe, gone = core.host_liveness(now=45.0)
    assert gone == [] and set(probe) == {"10.0.0.2", "10.0.0.3"}  # silent for 45 s, but named: asked for
    core.remove_tap(1)
    core.compile()
    probe, gone = core.host_liveness(now=45.0)
    assert probe == [] and sorted(gone) == ["00:00:00:00:00:02", "00:00:00:00:00:03"]


def _counted(steps) -> dict:
    """The value of `tap_counters_in_steps`, run through."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def test_tap_counters_add_up_per_policy():
    core = core_for()
    core.set_tap(Tap(id=1, spec=TapSpec(name="a", src_ip="10.0.0.1", dst_ip="10.0.0.3", monitor_ip="10.0.0.2")))
    core.compile()
    (cookie,) = core.compilation.cookie_owners
    assert _counted(core.tap_counters_in_steps([(1, cookie, 7, 700), (1, cookie, 1, 100), (1, 12345, 9, 9)])) == {
        1: {"packets": 8, "bytes": 800, "copies": 8, "dropped": 0}}


def test_policies_no_rule_counted_for_share_one_read_only_zero():
    """Counted every second while the UI's stream is open: a policy whose rules counted
    nothing holds the one read-only zero, not a dict of its own (2.3 MiB at 10,000)."""
    from vtap.control.core_delivery import NOT_COUNTED

    core = core_for()
    for i in (1, 2, 3):
        core.set_tap(Tap(id=i, spec=TapSpec(name=f"p{i}", src_ip="10.0.0.1", dst_ip="10.0.0.3", dst_port=i,
                                            ip_proto="udp", monitor_ip="10.0.0.2")))
    core.compile()
    cookie = next(c for c, owners in core.compilation.cookie_owners.items() if owners == {2})
    counted = _counted(core.tap_counters_in_steps([(1, cookie, 3, 300)]))
    assert counted == {1: NOT_COUNTED, 2: {"packets": 3, "bytes": 300, "copies": 3, "dropped": 0}, 3: NOT_COUNTED}
    assert counted[1] is counted[3] is NOT_COUNTED and counted[2] is not NOT_COUNTED
    assert dict(NOT_COUNTED) == {"packets": 0, "bytes": 0, "copies": 0, "dropped": 0}
    with pytest.raises(TypeError):
        counted[1]["packets"] += 1  # read-only: a consumer cannot count into every policy at once


def test_tap_counters_in_steps_pause_and_drop_what_went_meanwhile(monkeypatch):
    import vtap.control.core_delivery as core_delivery

    monkeypatch.setattr(core_delivery, "COUNT_STEP", 2)
    core = core_for()
    for i in range(1, 6):
        core.set_tap(Tap(id=i, spec=TapSpec(name=f"p{i}", src_ip="10.0.0.1", dst_ip="10.0.0.3", dst_port=i,
                                            ip_proto="udp", monitor_ip="10.0.0.2")))
    core.compile()
    cookies = {next(iter(owners)): cookie for cookie, owners in core.compilation.cookie_owners.items() if len(owners) == 1}
    stats = [(1, cookies[i], i, 100 * i) for i in range(1, 6)]
    whole = _counted(core.tap_counters_in_steps(stats))
    assert whole == {i: {"packets": i, "bytes": 100 * i, "copies": i, "dropped": 0} for i in range(1, 6)}
    steps = core.tap_counters_in_steps(stats)
    next(steps)  # paused after its first step: a policy goes meanwhile
    core.remove_tap(4)
    paused = 1
    while True:
        try:
            next(steps)
            paused += 1
        except StopIteration as done:
            result = done.value
            break
    assert paused >= 5  # ids, rules and the last pass in steps of two
    assert result == {i: c for i, c in whole.items() if i != 4}


def _garp(mac: str, ip: str) -> bytes:
    return arp_request(mac, ip, ip)


def test_only_this_controllers_lldp_of_a_live_round_makes_a_link():
    from vtap.control.discovery import HOLD_MAX, lldp_frame, parse_lldp

    core = core_for("linear,3")
    core.lldp = type(core.lldp)(b"k" * 32)
    core.new_lldp_round(b"1" * 8)
    core.set_tap(Tap(id=1, spec=TapSpec(name="t", src_ip="10.0.0.1", dst_ip="10.0.0.3", monitor_ip="10.0.0.2")))
    core.compile()
    links = core.links.links()
    s1 = core.devices[1]
    forged = parse_lldp(lldp_frame(1, 1, "02:00:00:00:00:01", b"x" * 32, b"1" * 8))  # h1's port, claimed by a host
    assert core.lldp_in(3, 1, forged, 1.0) == (False, [], "forged")
    real = parse_lldp(core.lldp_frame(1, s1.ports[0], 0.0))
    assert core.lldp_in(1, s1.ports[0].port_no, real, 1.0) == (False, [], "loop")  # reflected into its own port
    assert core.lldp_in(2, 1, real, 1.0) == (False, [], "host port")  # onto h2's port: h2 is the monitor
    assert core.new_lldp_round(b"2" * 8)  # round 1 answered (by the frames above): it turns
    # Round 2 unanswered: held HOLD_MAX rounds (discovery.LldpRounds), then it turns.
    assert [core.new_lldp_round(b"%d" % i * 8) for i in range(3, 4 + HOLD_MAX)] == [False] * HOLD_MAX + [True]
    assert core.lldp_in(3, 1, real, 1.0) == (False, [], "replayed")
    assert core.links.links() == links and core.view().hosts["00:00:00:00:00:03"].port == 1
    assert core.lldp_refused == {"forged": 1, "replayed": 1, "host port": 1, "loop": 1}
    # Hosts are never handed a fresh proof: no LLDP out of a port with a known host.
    assert 1 not in [p.port_no for p in core.lldp_ports(1)] and 2 in [p.port_no for p in core.lldp_ports(1)]


def test_a_claim_on_a_monitors_address_is_held_reported_and_moves_only_when_the_owner_has_left():
    core = core_for("linear,3")
    core.set_tap(Tap(id=1, spec=TapSpec(name="t", src_ip="10.0.0.1", dst_ip="10.0.0.3", monitor_ip="10.0.0.2")))
    core.compile()
    monitor = core.hosts.hosts["00:00:00:00:00:02"]
    outcome = core.frame_arrived(3, 1, _garp("00:00:00:00:00:03", "10.0.0.2"), now=11.0)  # h3 claims the monitor's IP
    assert outcome.outs == () and "10.0.0.2 claimed by 00:00:00:00:00:03" in outcome.log
    core.compile()
    status = core.tap_status(1, in_sync(core))
    assert status.state == PolicyState.DEGRADED and "identity conflict" in status.reason
    assert core.view().host_by_ip("10.0.0.2").mac == monitor.mac  # proxy ARP still answers with the monitor's MAC
    assert core.taps_concerned(core.conflicts["10.0.0.2"]) == [1]
    # The monitor never sends a frame, never answers: silence hands nothing over.
    for t in range(12, 29):
        core.frame_arrived(3, 1, _garp("00:00:00:00:00:03", "10.0.0.2"), now=float(t))
        assert core.conflicts_due(t + 0.5) == ([], False) and core.view().host_by_ip("10.0.0.2").mac == monitor.mac
    # Claims stop: forgotten after a while, and the policy is active again.
    moved, changed = core.conflicts_due(28.0 + 31.0)
    assert moved == [] and changed and core.conflicts == {}
    core.compile()
    assert core.tap_status(1, in_sync(core)).state == PolicyState.ACTIVE
    # The monitor's port goes down: a claim made before that, or within 2 s of it, moves nothing.
    core.frame_arrived(3, 1, _garp("00:00:00:00:00:03", "10.0.0.2"), now=60.0)
    core.port_changed(2, Port(monitor.port, "s2-eth1", "02:00:00:00:02:01", up=False), 61.0)
    assert core.conflicts_due(61.0)[0] == [] and core.conflicts_due(64.0)[0] == []  # not claimed again since
    core.frame_arrived(3, 1, _garp("00:00:00:00:00:03", "10.0.0.2"), now=64.5)
    moved, changed = core.conflicts_due(65.0)  # down 4 s, claimed again since: the owner has left
    assert [c.claim.address for c in moved] == ["10.0.0.2"] and core.view().host_by_ip("10.0.0.2").mac == "00:00:00:00:00:03"


def test_a_link_flap_does_not_hand_a_monitor_over():
    core = core_for("linear,3")
    core.set_tap(Tap(id=1, spec=TapSpec(name="t", src_ip="10.0.0.1", monitor_mac="00:00:00:00:00:02")))
    core.compile()
    port = core.hosts.hosts["00:00:00:00:00:02"].port
    core.port_changed(2, Port(port, "s2-eth1", "02:00:00:00:02:01", up=False), 10.0)
    core.frame_arrived(3, 1, _garp("00:00:00:00:00:02", "10.0.0.2"), now=10.1)  # its MAC seen elsewhere meanwhile
    assert core.conflicts_due(10.2) == ([], False)
    core.port_changed(2, Port(port, "s2-eth1", "02:00:00:00:02:01", up=True), 11.0)  # back within 2 s
    core.frame_arrived(3, 1, _garp("00:00:00:00:00:02", "10.0.0.2"), now=12.5)
    assert core.conflicts_due(13.0)[0] == [] and core.hosts.hosts["00:00:00:00:00:02"].dpid == 2


def test_the_operator_can_confirm_a_held_move():
    core = core_for("linear,3")
    core.set_tap(Tap(id=1, spec=TapSpec(name="t", src_ip="10.0.0.1", dst_ip="10.0.0.3", monitor_mac="00:00:00:00:00:02")))
    core.compile()
    core.frame_arrived(3, 1, _garp("00:00:00:00:00:02", "10.0.0.2"), now=1.0)  # the monitor's MAC on h3's port
    assert "00:00:00:00:00:02" in core.conflicts
    assert [c.claim.address for c in core.confirm_move("00:00:00:00:00:02", 2.0)] == ["00:00:00:00:00:02"]
    assert (core.view().hosts["00:00:00:00:00:02"].dpid, core.view().hosts["00:00:00:00:00:02"].port) == (3, 1)


def test_a_mac_flood_is_capped_per_port_and_logged_once_a_minute():
    core = core_for("linear,3")
    core.hosts.max_per_port = 4
    logs = [core.frame_arrived(1, 1, _garp(f"00:00:00:00:ab:{i:02x}", f"10.9.0.{i}"), now=i * 0.01).log for i in range(100)]
    assert core.hosts.count_at(1, 1) == 4 and core.hosts.refused == {(1, 1): 97}  # h1 + 3 new
    assert sum(1 for line in logs if line) == 1
    assert core.frame_arrived(1, 1, _garp("00:00:00:00:ac:01", "10.9.1.1"), now=61.0).log


def test_a_restart_starts_from_the_stored_links_until_lldp_has_had_its_chance():
    """Stored links stand in for LLDP after a restart: the first compile already has every
    path; a stored link LLDP does not prove again expires, a proven one stays."""
    view = view_from_topo(parse_topo("linear,3"))
    core = ControlCore(link_lifetime=3.5, host_timeout=30.0)
    core.load(list(view.hosts.values()), [], sorted(view.links), now=100.0, link_grace=10.0)
    assert core.remembered == {1, 2, 3}
    for device in view.devices.values():
        core.switch_up(device, 100.0)
    assert core.view().path(1, 3) == [1, 2, 3]  # no LLDP yet
    assert all((d, p) in core.view().switch_ports for link in view.links for d, p in
               ((link.src_dpid, link.src_port), (link.dst_dpid, link.dst_port)))  # never taken for hosts
    proven = [l for l in view.links if 1 in (l.src_dpid, l.dst_dpid)]
    for _ in range(ROUNDS_MISSED):
        core.links.turned()  # the rounds of the grace (their frames read)
    for link in proven:
        core.lldp_arrived(link, 112.0)
    gone = core.expire_links(114.0)  # 10 s of grace + 3.5 s of lifetime: the unproven go
    assert set(gone) == set(view.links) - set(proven)
    assert core.view().path(1, 2) == [1, 2] and core.view().path(1, 3) is None


def test_a_host_ports_flap_changes_its_own_switchs_rules_only():
    """fattree,4: h1's link goes down and up again; every other switch's rules stay the
    very same set, and the host stays where it was seen."""
    core = core_for("fattree,4")
    before = core.compile()
    h1 = core.hosts.hosts["00:00:00:00:00:01"]
    port = core.devices[h1.dpid].port(h1.port)
    core.port_changed(h1.dpid, replace(port, up=False), 10.0)
    down = core.compile()
    assert {d for d in before if down[d] != before[d]} == {h1.dpid}
    core.port_changed(h1.dpid, port, 11.0)
    up = core.compile()
    assert {d for d in before if up[d] != before[d]} <= {h1.dpid}
    settle_roles(core, 11.0)
    assert core.compile() == before and core.hosts.hosts[h1.mac] == h1


def test_hosts_at_a_port_down_long_enough_are_forgotten_but_not_a_policys():
    """A flap keeps a host (and its rules elsewhere); a port down 2 s forgets its hosts,
    so whoever plugs in there next gets nothing of theirs, except a host a policy names."""
    core = core_for("linear,3")
    core.set_tap(Tap(id=1, spec=TapSpec(name="t", src_ip="10.0.0.1", monitor_ip="10.0.0.3")))
    core.compile()
    for mac in ("00:00:00:00:00:01", "00:00:00:00:00:02"):
        h = core.hosts.hosts[mac]
        core.port_changed(h.dpid, replace(core.devices[h.dpid].port(h.port), up=False), 10.0)
    assert core.decide_roles(11.0)[2] == []  # a flap so far
    assert core.decide_roles(12.0)[2] == ["00:00:00:00:00:02"]
    assert "00:00:00:00:00:01" in core.hosts.hosts  # named by the policy: kept by place


def test_a_port_holding_a_pinned_host_is_edge_even_without_lldp():
    """A policy comes to name a host whose port came back up and is not known yet: its
    port gets no LLDP (wormhole defence), so it is taken as edge rather than left
    waiting for chances that never come."""
    core = core_for("linear,3")
    h1 = core.hosts.hosts["00:00:00:00:00:01"]
    port = core.devices[h1.dpid].port(h1.port)
    core.port_changed(h1.dpid, replace(port, up=False), 10.0)
    core.port_changed(h1.dpid, port, 10.5)
    assert core.port_role(h1.dpid, h1.port).value == "unknown"
    core.set_tap(Tap(id=1, spec=TapSpec(name="t", src_ip="10.0.0.1", monitor_ip="10.0.0.3")))
    core.compile()
    assert port not in core.lldp_ports(h1.dpid)
    turned, _, _ = core.decide_roles(10.6)
    assert (h1.dpid, h1.port) in turned and core.port_role(h1.dpid, h1.port).value == "edge"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "remove"]), st.integers(1, 6), st.sampled_from("abcdef")), max_size=30))
def test_the_policies_by_name_follow_every_set_rename_and_removal(steps):
    """An apply plans by the names it declares (`plan_changes` on `by_name`), so the
    name index must be exactly the policies by id, by name, whatever came before."""
    core = ControlCore(link_lifetime=3.5, host_timeout=30.0)
    core.load([], [Tap(id=9, spec=TapSpec(name="loaded", src_ip="10.0.0.1", monitor_ip="10.0.0.2"))])
    for op, ident, name in steps:
        if op == "remove":
            core.remove_tap(ident)
        elif all(t.spec.name != name or t.id == ident for t in core.taps.values()):  # names are unique, as the store keeps them
            core.set_tap(Tap(id=ident, spec=TapSpec(name=name, src_ip="10.0.0.1", monitor_ip="10.0.0.2")))
        assert core.by_name == {t.spec.name: t for t in core.taps.values()}


def test_a_monitor_is_labelled_by_the_address_its_first_policy_gives_else_its_hosts_first_ipv4():
    """Labels (reasons, metrics): the policies' part is found when the monitor set
    changes, the hosts' part again at every view change."""
    core = core_for()
    core.set_tap(Tap(id=1, spec=TapSpec(name="by-mac", src_ip="10.0.0.1", monitor_mac="00:00:00:00:00:02")))
    core.set_tap(Tap(id=2, spec=TapSpec(name="by-ip", src_ip="10.0.0.1", monitor_ip="10.0.0.3")))
    core.compile()
    assert core.monitor_labels() == {"00:00:00:00:00:02": "10.0.0.2", "00:00:00:00:00:03": "10.0.0.3"}
    host = core.hosts.hosts["00:00:00:00:00:02"]
    core.hosts.hosts[host.mac] = replace(host, ips=("fe80::2", "10.0.0.9"))
    core.invalidate()  # a view change, the monitors the same
    assert core.monitor_labels()["00:00:00:00:00:02"] == "10.0.0.9"
    core.remove_tap(2)
    core.compile()
    assert core.monitor_labels() == {"00:00:00:00:00:02": "10.0.0.9"}


def test_the_last_compiles_inputs_are_what_it_compiled_until_a_policy_changes():
    """An in-place compile's inputs hold the core's own policies (no copy per change):
    a stop writes them down as the snapshot's only while no policy changed since."""
    core = core_for()
    core.set_tap(Tap(id=1, spec=TapSpec(name="a", src_ip="10.0.0.1", monitor_ip="10.0.0.2")))
    assert core.policies_changed()
    core.compile()
    core.set_tap(Tap(id=2, spec=TapSpec(name="b", src_ip="10.0.0.3", monitor_ip="10.0.0.2")))
    core.compile()  # in place: one policy among those compiled
    inputs, _ = core.last_compiled
    assert not core.policies_changed() and inputs.taps == core.taps
    core.remove_tap(1)
    assert core.policies_changed()
    core.compile()
    assert not core.policies_changed() and core.last_compiled[0].taps == core.taps
