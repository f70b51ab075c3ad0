"""Asking for addresses: which IPs the controller probes for, and when.

A policy may name a host that has said nothing yet (a monitor only ever receives), or a
host known by its MAC but not by the address the policy uses.  The controller then asks
the fabric itself (`relay.probe_frame` out of every edge port): at once, then again
with a doubling interval while the address is still wanted and unknown, so a silent
host is found within a fraction of a second and an absent one costs little.

Pure: the schedule is told what is wanted and the time, and says what to send.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FIRST_RETRY_S = 0.25
MAX_RETRY_S = 30.0


@dataclass
class ProbeSchedule:
    """Per wanted address: when to ask next, and the interval after that."""

    first_retry: float = FIRST_RETRY_S
    max_retry: float = MAX_RETRY_S
    _next: dict[str, tuple[float, float]] = field(default_factory=dict)

    def due(self, wanted: set[str], now: float) -> list[str]:
        """Addresses to probe now. New wants are due at once; answered or dropped wants
        are forgotten, so a want that comes back starts again from the first retry."""
        for ip in list(self._next):
            if ip not in wanted:
                del self._next[ip]
        out = []
        for ip in sorted(wanted):
            at, interval = self._next.get(ip, (now, self.first_retry))
            if at <= now:
                out.append(ip)
                self._next[ip] = (now + interval, min(interval * 2, self.max_retry))
            else:
                self._next[ip] = (at, interval)
        return out
