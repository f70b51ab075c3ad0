"""What each switch port faces: another switch (`link`), hosts (`edge`), or not yet known.

A controller comes up on a network that already talks: switch ports send IPv6 DAD, router
solicitations and MLD as the kernel brings them up, hosts send ARP and mDNS from the
first second, and a frame flooded before the links are known reaches inter-switch
ports. Learning hosts from whatever arrives first, and flooding out of every port that
is not yet known to face a switch, lost links and melted looped fabrics. So, as 802.1D
keeps a new port from forwarding until it knows the port closes no loop, a port's role
is state here, changed by events:

- a port that comes up is `unknown`: nothing is flooded out of it, nothing that comes in
  is forwarded, and a host seen there is only noted (tentative);
- authenticated LLDP sent from it or received on it makes it a `link`, for as long as it
  stays up (a switch that disconnects still forwards, in fail-secure mode);
- it turns `edge` once discovery has had its chance and proved nothing: its switch's rules
  (among them the one that sends LLDP up) have been in for `edge_after` seconds, the port
  has been up that long, and at least `LLDP_CHANCES` LLDP frames have left it since then.
  A switch behind it, if connected, would have sent one of those frames up, and its own
  LLDP, sent every round, would have arrived. Its tentative hosts are then learned;
- an `edge` port on which LLDP later arrives turns `link` at once (as RSTP's edge ports
  fall back on a BPDU) and its hosts are forgotten;
- a port that holds a known host (restored from the store, published by a cluster's
  leader) is `edge` from the start: the host was learned at an edge port, and a restart
  must not wait for discovery to forward to it.

Pure: the time is an argument. `LinkTable.switch_ports` holds the `link` ports (a
port there is a link whatever this holds); this holds the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

LLDP_CHANCES = 2  # LLDP frames out of an unknown port, after its switch's rules are in, before it may turn edge
TENTATIVE_PER_PORT = 32  # MACs noted per unknown port at most (a MAC flood costs nothing here)

PortKey = tuple[int, int]  # (dpid, port number)


class PortRole(str, Enum):
    UNKNOWN = "unknown"
    EDGE = "edge"
    LINK = "link"


@dataclass
class Probation:
    """An unknown port's chance to be proven a link."""

    up_since: float
    lldp_sent: int = 0  # LLDP frames out of it since its switch's rules were in


@dataclass(frozen=True)
class Tentative:
    """A sender seen at an unknown port: learned if the port turns edge."""

    mac: str
    ips: tuple[str, ...]
    seen: float


@dataclass
class PortRoles:
    edge_after: float
    edge: set[PortKey] = field(default_factory=set)
    probation: dict[PortKey, Probation] = field(default_factory=dict)
    synced: dict[int, float] = field(default_factory=dict)  # dpid -> since when its rules are in
    tentative: dict[PortKey, dict[str, Tentative]] = field(default_factory=dict)

    def role(self, key: PortKey, link_ports: set[PortKey] | frozenset[PortKey]) -> PortRole:
        if key in link_ports:
            return PortRole.LINK
        return PortRole.EDGE if key in self.edge else PortRole.UNKNOWN

    def unknown(self, link_ports: set[PortKey] | frozenset[PortKey]) -> frozenset[PortKey]:
        """Ports whose role is not known (a port proven a link meanwhile is a link)."""
        return frozenset(k for k in self.probation if k not in link_ports)

    # ---- events ---------------------------------------------------------------------

    def port_up(self, key: PortKey, now: float, *, link: bool, hosted: bool) -> None:
        """A port is up (it came up, or its switch connected): unknown unless already
        known to face a switch, or to hold a host."""
        if link or key in self.edge:
            return
        if hosted:
            self.edge.add(key)
            self.probation.pop(key, None)
            return
        self.probation.setdefault(key, Probation(now))

    def port_down(self, key: PortKey) -> None:
        """Whatever is behind a port that went down is not known any more."""
        self.edge.discard(key)
        self.probation.pop(key, None)
        self.tentative.pop(key, None)

    def switch_gone(self, dpid: int) -> None:
        """A switch disconnected: its unknown ports start over when it is back. Its edge
        ports stay edge, the best guess of where it will be (as its links stay links)."""
        self.synced.pop(dpid, None)
        for key in [k for k in self.probation if k[0] == dpid]:
            del self.probation[key]
            self.tentative.pop(key, None)

    def switch_synced(self, dpid: int, now: float) -> None:
        """The switch holds its rules (the first time since it connected)."""
        self.synced.setdefault(dpid, now)

    def lldp_sent(self, key: PortKey) -> None:
        """An LLDP frame left the port; it counts once the switch's rules are in (before
        that, the frame may come back to a switch that cannot yet send it up)."""
        probation = self.probation.get(key)
        if probation is not None and key[0] in self.synced:
            probation.lldp_sent += 1

    def proven_link(self, key: PortKey) -> None:
        """Authenticated LLDP was sent from or received on the port: it faces a switch."""
        self.edge.discard(key)
        self.probation.pop(key, None)
        self.tentative.pop(key, None)

    def mark_edge(self, key: PortKey) -> None:
        """A known host sits at the port (restored or published): it faces hosts."""
        self.probation.pop(key, None)
        self.edge.add(key)

    def note(self, key: PortKey, mac: str, ips: tuple[str, ...], now: float) -> None:
        """A sender seen at an unknown port: kept until the port's role is known."""
        seen = self.tentative.setdefault(key, {})
        old = seen.get(mac)
        if old is None and len(seen) >= TENTATIVE_PER_PORT:
            return
        merged = tuple(sorted(set(old.ips) | set(ips))) if old is not None else tuple(sorted(set(ips)))
        seen[mac] = Tentative(mac, merged, now)

    def decide(self, now: float, link_ports: set[PortKey] | frozenset[PortKey]) -> list[tuple[PortKey, list[Tentative]]]:
        """Unknown ports whose chance is over turn edge: each with the senders noted there.
        A port proven a link by other means (links a cluster's leader published) leaves
        probation as a link."""
        turned = []
        for key, probation in list(self.probation.items()):
            if key in link_ports:
                self.proven_link(key)
                continue
            synced = self.synced.get(key[0])
            if synced is None or probation.lldp_sent < LLDP_CHANCES:
                continue
            if now - max(probation.up_since, synced) < self.edge_after:
                continue
            del self.probation[key]
            self.edge.add(key)
            turned.append((key, sorted(self.tentative.pop(key, {}).values(), key=lambda t: t.mac)))
        return turned
