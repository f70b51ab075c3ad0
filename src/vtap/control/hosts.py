"""Host tracking: where each MAC is attached, and which IPs it uses.

Learned only from frames that enter at edge ports (the caller checks), so a frame in
transit can never pull a host toward the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from vtap.model.network import Host, is_multicast_mac


@dataclass(frozen=True)
class Claim:
    """A frame said that `address` (an IP, or a MAC itself for a move) is at `mac` behind
    (dpid, port), against the binding a policy pins: held, never applied by itself."""

    address: str
    owner: str  # the MAC bound to the address
    mac: str
    dpid: int
    port: int


@dataclass(frozen=True)
class Sighting:
    """What one sighting did to the table."""

    changed: bool = False  # new host, move, or new address
    refused: bool = False  # a new MAC on a port already at its cap
    held: tuple[Claim, ...] = ()


@dataclass
class HostTable:
    hosts: dict[str, Host] = field(default_factory=dict)
    max_per_port: int = 0  # 0: no cap
    refused: dict[tuple[int, int], int] = field(default_factory=dict)  # (dpid, port) -> MACs refused there

    def learn(self, mac: str, dpid: int, port: int, ips: tuple[str, ...], now: float, *,
              pinned_ips: frozenset[str] = frozenset(), pinned_macs: frozenset[str] = frozenset()) -> Sighting:
        """Record a sighting of `mac` using `ips` (already filtered to host addresses).

        A MAC in `pinned_macs` seen at another port, and an address in `pinned_ips` used
        by another MAC, are held as claims: the table keeps its binding. A MAC new to a
        port that already has `max_per_port` MACs is refused and counted."""
        if is_multicast_mac(mac) or mac == "00:00:00:00:00:00":
            return Sighting()
        old = self.hosts.get(mac)
        here = (dpid, port)
        if old is not None and (old.dpid, old.port) != here and mac in pinned_macs:
            return Sighting(held=(Claim(mac, mac, mac, dpid, port),))
        if (old is None or (old.dpid, old.port) != here) and self.max_per_port and self.count_at(dpid, port) >= self.max_per_port:
            self.refused[here] = self.refused.get(here, 0) + 1
            return Sighting(refused=True)
        changed = False
        held = []
        known = set(old.ips) if old is not None else set()
        for ip in ips:
            if ip in known:
                continue
            owner = next((h for h in self.hosts.values() if h.mac != mac and ip in h.ips), None)
            if owner is not None and ip in pinned_ips:
                held.append(Claim(ip, owner.mac, mac, dpid, port))
                continue
            known.add(ip)
            if owner is not None:
                # An IP belongs to one host: a new owner takes it over (VM re-addressed).
                self.hosts[owner.mac] = replace(owner, ips=tuple(i for i in owner.ips if i != ip))
                changed = True
        new = Host(mac=mac, ips=tuple(sorted(known)), dpid=dpid, port=port, last_seen=now)
        self.hosts[mac] = new
        changed = changed or old is None or (old.dpid, old.port, old.ips) != (new.dpid, new.port, new.ips)
        return Sighting(changed=changed, held=tuple(held))

    def count_at(self, dpid: int, port: int) -> int:
        return sum(1 for h in self.hosts.values() if (h.dpid, h.port) == (dpid, port))

    def move(self, claim: Claim, now: float) -> None:
        """Apply a claim that was held: the address goes to the claimant, where it is."""
        if claim.address == claim.mac:
            host = self.hosts.get(claim.mac)
            if host is not None:
                self.hosts[claim.mac] = replace(host, dpid=claim.dpid, port=claim.port, last_seen=now)
            return
        owner = self.hosts.get(claim.owner)
        if owner is not None:
            self.hosts[owner.mac] = replace(owner, ips=tuple(i for i in owner.ips if i != claim.address))
        mine = self.hosts.get(claim.mac)
        ips = tuple(sorted(set(mine.ips if mine else ()) | {claim.address}))
        self.hosts[claim.mac] = Host(claim.mac, ips, claim.dpid, claim.port, now)

    def forget_port(self, dpid: int, port: int) -> list[str]:
        """Drop hosts seen on a port that turned out to face another switch."""
        gone = [m for m, h in self.hosts.items() if (h.dpid, h.port) == (dpid, port)]
        for mac in gone:
            del self.hosts[mac]
        return gone

    def refresh(self, mac: str, now: float) -> Host | None:
        """The host was seen active (its rules counted packets): push last_seen forward."""
        host = self.hosts.get(mac)
        if host is None:
            return None
        self.hosts[mac] = replace(host, last_seen=now)
        return self.hosts[mac]

    def silent(self, now: float, timeout: float, watched_since: dict[int, float]) -> list[str]:
        """Hosts not seen for longer than `timeout` seconds (0: none ever are)."""
        if timeout <= 0:
            return []
        return [
            m for m, h in self.hosts.items()
            if h.dpid in watched_since and now - max(h.last_seen, watched_since[h.dpid]) > timeout
        ]

    def expire(self, now: float, timeout: float, watched_since: dict[int, float], keep: frozenset[str] = frozenset()) -> list[str]:
        """Forget hosts silent for longer than `timeout` seconds (0: never), except `keep`.

        Silence is only known on a switch whose counters have been watched: a host is
        judged from the later of its last sighting and the start of that watch, so a
        restarted controller does not expire hosts it has not had the chance to see.
        """
        gone = [m for m in self.silent(now, timeout, watched_since) if m not in keep]
        for mac in gone:
            del self.hosts[mac]
        return gone
