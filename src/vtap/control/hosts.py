"""Host tracking: where each MAC is attached, and which IPs it uses.

Learned only from frames that enter at edge ports (the caller checks), so a frame in
transit can never pull a host toward the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from vtap.model.network import Host, is_multicast_mac


@dataclass
class HostTable:
    hosts: dict[str, Host] = field(default_factory=dict)

    def learn(self, mac: str, dpid: int, port: int, ips: tuple[str, ...], now: float) -> bool:
        """Record a sighting of `mac` using `ips` (already filtered to host addresses);
        True when the view changed (new host, move, new address)."""
        if is_multicast_mac(mac) or mac == "00:00:00:00:00:00":
            return False
        changed = False
        old = self.hosts.get(mac)
        known = set(old.ips) if old is not None else set()
        for ip in ips:
            if ip in known:
                continue
            known.add(ip)
            # An IP belongs to one host: a new owner takes it over (VM re-addressed).
            for other in list(self.hosts.values()):
                if other.mac != mac and ip in other.ips:
                    self.hosts[other.mac] = replace(other, ips=tuple(i for i in other.ips if i != ip))
                    changed = True
        ips = tuple(sorted(known))
        new = Host(mac=mac, ips=ips, dpid=dpid, port=port, last_seen=now)
        self.hosts[mac] = new
        return changed or old is None or (old.dpid, old.port, old.ips) != (new.dpid, new.port, new.ips)

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
