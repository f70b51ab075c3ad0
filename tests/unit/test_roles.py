"""Port roles on a network that talks: floods never cross a loop, flooded frames teach nothing.

The property test wires random switch graphs (loops included) with hosts, then plays a
random order of events on `ControlCore`: switches connect and get their rules in, LLDP
rounds go out (each frame reaches the switch on the other side of the cable, if that
switch's rules are in), ports go down and up, time passes, hosts send multicast from the
first second and switch ports chatter (as a kernel's IPv6 does on a switch-side
interface). Frames travel the fake fabric on the true wiring, through the rules the
core compiles for every switch whose rules are in; whatever reaches the controller is
handed to the core, as a packet-in would be. At every step the flood graph has no cycle;
at the fixed point every link is found and no host sits at a link port.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from os_ken.lib.packet import ethernet, ipv6, packet, udp

from tests.unit.fabric import Fabric
from tests.unit.frames import arp_request
from vtap.compile.pipeline import PRIO_FLOOD, TABLE_FORWARD
from vtap.control.core import ControlCore
from vtap.control.discovery import parse_lldp
from vtap.control.roles import PortRole, PortRoles, Tentative
from vtap.model.network import Device, Link, Port
from vtap.model.policy import Tap, TapSpec
from vtap.model.view import NetworkView

KEY = b"k" * 32


def mdns_frame(src_mac: str, src_ip6: str) -> bytes:
    """An mDNS query to ff02::fb: multicast a host (or a switch port's kernel) sends unasked."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="33:33:00:00:00:fb", src=src_mac, ethertype=0x86DD))
    pkt.add_protocol(ipv6.ipv6(src=src_ip6, dst="ff02::fb", nxt=17, hop_limit=255))
    pkt.add_protocol(udp.udp(src_port=5353, dst_port=5353))
    pkt.add_protocol(b"\x00" * 12)
    pkt.serialize()
    return bytes(pkt.data)


def mdns_fields(src_mac: str) -> dict:
    return {"eth_src": src_mac, "eth_dst": "33:33:00:00:00:fb", "eth_type": 0x86DD, "ip_proto": 17,
            "ipv6_src": "fe80::1", "ipv6_dst": "ff02::fb", "udp_src": 5353, "udp_dst": 5353, "size": 74}


@dataclass
class Wiring:
    """The true network: switch ports wired to switch ports or to hosts."""

    n: int
    peer: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # switch port -> switch port
    host_at: dict[tuple[int, int], int] = field(default_factory=dict)  # switch port -> host number
    ports: dict[int, list[int]] = field(default_factory=dict)

    def add_port(self, d: int) -> int:
        self.ports.setdefault(d, []).append(len(self.ports.get(d, [])) + 1)
        return self.ports[d][-1]

    def true_links(self) -> set[Link]:
        return {Link(a[0], a[1], b[0], b[1]) for a, b in self.peer.items()}


@st.composite
def wirings(draw) -> Wiring:
    n = draw(st.integers(2, 6))
    w = Wiring(n)
    for d in range(1, n + 1):
        w.ports[d] = []
    edges = [(draw(st.integers(1, d - 1)), d) for d in range(2, n + 1)]  # a spanning tree: connected
    extra = draw(st.lists(st.tuples(st.integers(1, n), st.integers(1, n)), max_size=4))
    edges += [(a, b) for a, b in extra if a != b]  # loops, parallel links included
    for a, b in edges:
        pa, pb = w.add_port(a), w.add_port(b)
        w.peer[(a, pa)], w.peer[(b, pb)] = (b, pb), (a, pa)
    host = 0
    for d in range(1, n + 1):
        for _ in range(draw(st.integers(0, 2))):
            host += 1
            w.host_at[(d, w.add_port(d))] = host
    return w


def host_mac(i: int) -> str:
    return f"00:00:00:00:00:{i:02x}"


def port_mac(d: int, p: int) -> str:
    return f"02:00:00:00:{d:02x}:{p:02x}"


class Network:
    """The controller's core on a true wiring, with the events the shell would hand it."""

    def __init__(self, w: Wiring):
        self.w = w
        self.core = ControlCore(link_lifetime=1e9, lldp_key=KEY, edge_after=1.0)
        self.core.new_lldp_round(b"0" * 8)
        self.now = 0.0
        self.connected: set[int] = set()
        self.synced: set[int] = set()
        self.down: set[tuple[int, int]] = set()

    def device(self, d: int) -> Device:
        return Device(d, tuple(Port(p, f"s{d}-eth{p}", port_mac(d, p), (d, p) not in self.down) for p in self.w.ports[d]), 0.0)

    # ---- events ---------------------------------------------------------------------

    def connect(self, d: int) -> None:
        if d in self.connected:
            return
        self.connected.add(d)
        self.core.switch_up(self.device(d), self.now)
        self.send_lldp([d])

    def sync(self, d: int) -> None:
        """Its rules are in (the first time): the shell's extra LLDP round follows."""
        if d not in self.connected or d in self.synced:
            return
        self.synced.add(d)
        self.core.switch_synced(d, self.now)
        self.send_lldp(sorted(self.connected))

    def lldp_round(self, nonce: bytes) -> None:
        self.core.new_lldp_round(nonce)
        self.send_lldp(sorted(self.connected))

    def send_lldp(self, switches) -> None:
        for d in switches:
            for port in self.core.lldp_ports(d):
                frame = self.core.lldp_frame(d, port, self.now)
                there = self.w.peer.get((d, port.port_no))
                if there is not None and there[0] in self.synced and there not in self.down:
                    self.core.lldp_in(there[0], there[1], parse_lldp(frame), self.now)

    def tick(self, dt: float) -> None:
        self.now += dt
        self.core.decide_roles(self.now)

    def cable(self, key: tuple[int, int], up: bool) -> None:
        """A cable's two ends go down (or up) together, as a veth pair's do."""
        ends = [key] + ([self.w.peer[key]] if key in self.w.peer else [])
        for d, p in ends:
            (self.down.discard if up else self.down.add)((d, p))
            if d in self.connected:
                self.core.port_changed(d, Port(p, f"s{d}-eth{p}", port_mac(d, p), up), self.now)
        if up:
            self.send_lldp([d for d, _ in ends if d in self.connected])

    def host_talks(self, i: int) -> None:
        """Host i sends an ARP request and an mDNS query (multicast, flooded)."""
        key = next(k for k, h in self.w.host_at.items() if h == i)
        if key in self.down:
            return
        self.inject(key, arp_request(host_mac(i), f"10.0.0.{i}", "10.0.0.250"), {
            "eth_src": host_mac(i), "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0806, "size": 42})
        self.inject(key, mdns_frame(host_mac(i), f"fe80::{i}"), mdns_fields(host_mac(i)))

    def port_chatters(self, key: tuple[int, int]) -> None:
        """The kernel behind switch port `key` sends an mDNS query from its own MAC: it
        enters the switch on the other side of the cable."""
        there = self.w.peer.get(key)
        if there is None or key in self.down:
            return
        self.inject(there, mdns_frame(port_mac(*key), "fe80::aa"), mdns_fields(port_mac(*key)), own=False)

    def inject(self, key: tuple[int, int], raw: bytes, fields: dict, own: bool = True) -> None:
        """A frame enters switch port `key` (a host's own port when `own`)."""
        d, p = key
        if d not in self.synced:
            return  # no rules yet: fail-secure drops it
        trace = self.fabric().inject(d, p, fields, max_hops=4 * sum(len(v) for v in self.w.ports.values()))
        for at in trace.to_controller:
            self.core.frame_arrived(*at, raw, self.now)

    # ---- what the switches hold ------------------------------------------------------

    def rules(self) -> dict:
        desired = self.core.compile()
        return {d: desired[d] for d in self.synced if d in desired}

    def fabric(self) -> Fabric:
        wired = NetworkView(links=frozenset(Link(a[0], a[1], b[0], b[1]) for a, b in self.w.peer.items()
                                            if a not in self.down))
        return Fabric(wired, self.rules())

    def flood_ports(self) -> set[tuple[int, int]]:
        """Ports the compiled rules flood out of, for every connected switch (rules in or not)."""
        desired = self.core.compile()
        out = set()
        for d in self.connected:
            for f in desired[d].flows:
                if f.table == TABLE_FORWARD and f.priority == PRIO_FLOOD:
                    out.add((d, dict(f.match)["in_port"]))
        return out

    def assert_no_flood_cycle(self) -> None:
        """Cables whose two ends both flood form a forest (union-find over switches)."""
        flood = self.flood_ports()
        parent = {d: d for d in range(1, self.w.n + 1)}

        def root(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for a, b in self.w.peer.items():
            if a < b and a in flood and b in flood and a not in self.down:
                ra, rb = root(a[0]), root(b[0])
                assert ra != rb, f"floods cross a loop: {sorted(flood)} on {sorted(self.w.peer.items())}"
                parent[ra] = rb


def events(w: Wiring):
    """Events on this wiring: switch numbers, cables and hosts that exist."""
    switches = st.integers(1, w.n)
    cables = st.sampled_from(sorted(k for d in w.ports for k in ((d, p) for p in w.ports[d])))
    kinds = [
        st.tuples(st.just("connect"), switches),
        st.tuples(st.just("sync"), switches),
        st.tuples(st.just("round"), st.binary(min_size=8, max_size=8)),
        st.tuples(st.just("tick"), st.floats(0.05, 2.0)),
        st.tuples(st.just("cable"), cables, st.booleans()),
    ]
    if w.host_at:
        kinds.append(st.tuples(st.just("host"), st.sampled_from(sorted(w.host_at.values()))))
    if w.peer:
        kinds.append(st.tuples(st.just("chatter"), st.sampled_from(sorted(w.peer))))
    return st.one_of(kinds)


def play(net: Network, event: tuple) -> None:
    kind, *args = event
    getattr(net, {"connect": "connect", "sync": "sync", "round": "lldp_round", "tick": "tick", "cable": "cable",
                  "host": "host_talks", "chatter": "port_chatters"}[kind])(*args)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_floods_never_cross_a_loop_and_the_fixed_point_finds_every_link(data):
    w = data.draw(wirings())
    net = Network(w)
    for event in data.draw(st.lists(events(w), min_size=5, max_size=40)):
        play(net, event)
        net.assert_no_flood_cycle()
        for host in net.core.hosts.hosts.values():
            assert (host.dpid, host.port) not in net.core.links.switch_ports
    # The fixed point: every cable up, every switch connected with its rules in, hosts
    # talking and ports chattering throughout, LLDP rounds and time passing.
    for key in sorted(net.down):
        net.cable(key, True)
    for d in range(1, w.n + 1):
        net.connect(d)
        net.sync(d)
    for r in range(3):
        for i in sorted(w.host_at.values()):
            net.host_talks(i)
        for key in sorted(w.peer):
            net.port_chatters(key)
        net.lldp_round(bytes([r + 1]) * 8)
        net.tick(1.0)
        net.assert_no_flood_cycle()
    assert net.core.links.links() == w.true_links()
    assert net.core.view().usable_links == w.true_links()
    roles = {k: net.core.port_role(*k) for d in w.ports for k in ((d, p) for p in w.ports[d])}
    assert {k for k, r in roles.items() if r == PortRole.LINK} == set(w.peer)
    assert {k for k, r in roles.items() if r == PortRole.EDGE} == set(w.host_at)
    where = {h.mac: (h.dpid, h.port) for h in net.core.hosts.hosts.values()}
    assert where == {host_mac(i): k for k, i in w.host_at.items()}
    # A broadcast from any host now reaches every other host once, and never loops.
    for key, i in sorted(w.host_at.items()):
        trace = net.fabric().inject(*key, mdns_fields(host_mac(i)))
        assert sorted(trace.delivered) == sorted(k for k in w.host_at if k != key)


# ---- the rules, one by one ---------------------------------------------------------


def test_a_port_turns_edge_only_after_two_lldp_frames_and_the_wait_since_its_switch_synced():
    roles = PortRoles(edge_after=1.0)
    roles.port_up((1, 1), 0.0, link=False, hosted=False)
    roles.lldp_sent((1, 1))  # before the switch's rules are in: does not count
    roles.switch_synced(1, 0.5)
    roles.lldp_sent((1, 1))
    assert roles.decide(5.0, set()) == []  # one chance only
    roles.lldp_sent((1, 1))
    assert roles.decide(1.4, set()) == []  # not long enough since the rules went in
    roles.note((1, 1), "00:00:00:00:00:01", ("10.0.0.1",), 1.0)
    assert roles.decide(1.5, set()) == [((1, 1), [Tentative("00:00:00:00:00:01", ("10.0.0.1",), 1.0)])]
    assert roles.role((1, 1), set()) == PortRole.EDGE


def switch_1_alone() -> Network:
    """The line of two switches, switch 1 connected with its rules in for a round and
    a second; switch 2 not connected yet."""
    net = Network(_line())
    net.connect(1)
    net.sync(1)
    net.lldp_round(b"1" * 8)
    net.tick(1.0)
    return net


def test_lldp_turns_an_edge_port_into_a_link_and_forgets_its_hosts():
    net = switch_1_alone()
    assert net.core.port_role(1, 1) == PortRole.EDGE  # switch 2 is not connected: nothing came back
    net.host_talks(1)  # h1 is behind switch 1 port 2; its broadcast floods out of port 1 too
    assert net.core.hosts.hosts[host_mac(1)].port == 2
    net.connect(2)  # switch 2's first LLDP reaches switch 1, whose rules are in
    assert net.core.port_role(1, 1) == PortRole.LINK and net.core.port_role(2, 1) == PortRole.LINK
    net.sync(2)
    net.tick(1.0)
    net.host_talks(1)
    assert {h.mac: (h.dpid, h.port) for h in net.core.hosts.hosts.values()} == {host_mac(1): (1, 2)}


def test_a_frame_at_an_unknown_port_is_noted_and_goes_nowhere():
    net = Network(_line())
    net.connect(1)
    net.sync(1)
    outcome = net.core.frame_arrived(1, 2, arp_request(host_mac(1), "10.0.0.1", "10.0.0.2"), 0.0)
    assert outcome.outs == () and outcome.learned is None
    assert net.core.hosts.hosts == {} and (1, 2) in net.core.roles.tentative
    net.lldp_round(b"1" * 8)
    net.tick(1.0)
    assert net.core.hosts.hosts[host_mac(1)].ips == ("10.0.0.1",)  # learned once the port turned edge


def test_only_a_pinned_hosts_port_is_kept_from_lldp():
    net = switch_1_alone()
    net.host_talks(1)
    assert [p.port_no for p in net.core.lldp_ports(1)] == [1, 2]  # a host's port gets LLDP: it might be a link
    net.core.set_tap(Tap(id=1, spec=TapSpec(name="t", src_ip="10.0.0.2", monitor_mac=host_mac(1))))
    net.core.compile()
    assert [p.port_no for p in net.core.lldp_ports(1)] == [1]


def _line() -> Wiring:
    """Switch 1 port 1 -- switch 2 port 1; h1 at switch 1 port 2; h2 at switch 2 port 2."""
    w = Wiring(2, ports={1: [1, 2], 2: [1, 2]})
    w.peer = {(1, 1): (2, 1), (2, 1): (1, 1)}
    w.host_at = {(1, 2): 1, (2, 2): 2}
    return w
