"""Host tracking: where each MAC is attached, and which IPs it uses.

Learned only from frames that enter at edge ports (the caller checks), so a frame in
transit can never pull a host toward the core.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from vtap.model.network import Host


def is_unicast_mac(mac: str) -> bool:
    return not int(mac.split(":")[0], 16) & 1 and mac != "00:00:00:00:00:00"


def is_host_ip(ip: str) -> bool:
    """Addresses worth recording for a host (not unspecified, multicast or broadcast)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not (addr.is_unspecified or addr.is_multicast or str(addr) == "255.255.255.255")


@dataclass
class HostTable:
    hosts: dict[str, Host] = field(default_factory=dict)

    def learn(self, mac: str, dpid: int, port: int, ip: str | None, now: float) -> bool:
        """Record a sighting; True when the view changed (new host, move, new IP)."""
        if not is_unicast_mac(mac):
            return False
        changed = False
        ips: tuple[str, ...] = ()
        old = self.hosts.get(mac)
        if old is not None:
            ips = old.ips
        if ip and is_host_ip(ip) and ip not in ips:
            ips = tuple(sorted(ips + (ip,)))
        if ip:
            # An IP belongs to one host: a new owner takes it over (VM re-addressed).
            for other in list(self.hosts.values()):
                if other.mac != mac and ip in other.ips:
                    self.hosts[other.mac] = replace(other, ips=tuple(i for i in other.ips if i != ip))
                    changed = True
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

    def expire(self, now: float, timeout: float, watched_since: dict[int, float], keep: frozenset[str] = frozenset()) -> list[str]:
        """Forget hosts silent for longer than `timeout` seconds (0: never), except `keep`.

        Silence is only known on a switch whose counters have been watched: a host is
        judged from the later of its last sighting and the start of that watch, so a
        restarted controller does not expire hosts it has not had the chance to see.
        """
        if timeout <= 0:
            return []
        gone = [
            m for m, h in self.hosts.items()
            if m not in keep and h.dpid in watched_since and now - max(h.last_seen, watched_since[h.dpid]) > timeout
        ]
        for mac in gone:
            del self.hosts[mac]
        return gone
