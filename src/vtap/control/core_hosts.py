"""The core's decisions on hosts: claims held against the addresses policies pin, which
hosts policies pin, and which hosts are alive.

Part of `ControlCore` (a mixin of its methods, on its state: see `control/core.py`),
kept apart from the switch events: a frame makes a claim held (`frame_arrived`), but
what becomes of it, and of a silent host, is decided here, on the controller's timers
or by an operator. The table of hosts itself is `hosts.py`'s."""

from __future__ import annotations

from dataclasses import dataclass

from vtap.control.hosts import Claim
from vtap.model.network import Host


@dataclass
class Conflict:
    """A claim on an address a policy pins, held: since when, the last time it was made,
    and since when the owner's port has been down (None: up, as far as is known)."""

    claim: Claim
    since: float
    last: float
    owner_down_since: float | None = None

    def reason(self) -> str:
        c = self.claim
        what = f"host {c.address} seen" if c.address == c.mac else f"address {c.address} claimed by {c.mac}"
        return f"{what} at {c.dpid:016x} port {c.port}; held at {c.owner} (confirm with POST /api/v1/hosts/{c.mac}/confirm-move)"


OWNER_GONE_S = 2.0  # a pinned owner's port down this long, and the claim made again since: the owner has left
CLAIM_FORGET_S = 30.0  # a held claim not repeated this long is forgotten


class HostDecisions:
    """The core's held claims and host liveness (see the module docstring)."""

    # ---- held claims --------------------------------------------------------------------

    def conflicts_due(self, now: float) -> tuple[list[Conflict], bool]:
        """(claims applied because their owner has left, anything changed).

        An address a policy pins (source, destination, monitor) is bound by place, not by
        chatter: a monitor never sends, and a silent source or destination must not lose
        its binding by being quiet, so no timer hands it over while its owner's port is
        up, whatever the owner sends or does not send. A held claim is applied only when
        the owner's port has been down for `OWNER_GONE_S` and the claim was made again
        since (the owner left, and the address appeared elsewhere: a move), or by an
        operator (`confirm_move`). Two seconds ride out a link flap or a vNIC reset,
        which must not hand a monitor to whoever claims it meanwhile, while a host that
        really moved is followed soon after. A claim not repeated for `CLAIM_FORGET_S`
        is forgotten."""
        moved, changed = [], False
        for address, conflict in list(self.conflicts.items()):
            owner = self.hosts.hosts.get(conflict.claim.owner)
            down = owner is not None and self._port_down(owner.dpid, owner.port)
            if not down:
                conflict.owner_down_since = None
            elif conflict.owner_down_since is None:
                conflict.owner_down_since = now
            gone = conflict.owner_down_since is not None and now - conflict.owner_down_since >= OWNER_GONE_S \
                and conflict.last >= conflict.owner_down_since
            if owner is None or gone:
                self.hosts.move(conflict.claim, now)
                moved.append(conflict)
                del self.conflicts[address]
                changed = True
            elif now - conflict.last > CLAIM_FORGET_S:
                del self.conflicts[address]
                changed = True
        if changed:
            self.invalidate()
        return moved, changed

    def _port_down(self, dpid: int, port_no: int) -> bool:
        """The port is known down or gone (not: its switch is disconnected, which says
        nothing of the host behind it)."""
        device = self.devices.get(dpid)
        if device is None:
            return False
        port = device.port(port_no)
        return port is None or not port.up

    def taps_concerned(self, conflict: Conflict) -> list[int]:
        """The policies a claim concerns: those naming the address or the owner's MAC, and
        those whose monitor the owner is."""
        c = conflict.claim
        out = self.named.naming(c.address, c.owner)
        out.update(tap_id for tap_id, macs in self.compilation.monitors.items() if c.owner in macs)
        return sorted(out)

    def confirm_move(self, mac: str, now: float) -> list[Conflict]:
        """The operator says the claims of `mac` are right: apply them now."""
        mine = [c for c in self.conflicts.values() if c.claim.mac == mac]
        for conflict in mine:
            self.hosts.move(conflict.claim, now)
            del self.conflicts[conflict.claim.address]
        if mine:
            self.invalidate()
        return mine

    # ---- host liveness ----------------------------------------------------------------

    def host_counters(self, dpid: int, counts: list[tuple[str, int]], now: float) -> list[Host]:
        """Packet counts of one switch's known-host rules, (MAC, packets): the hosts whose
        count grew were active, and their last sighting moves to `now`."""
        self._watched_since.setdefault(dpid, now)
        refreshed = []
        for mac, packets in counts:
            key = (dpid, mac)
            if packets > self._host_packets.get(key, 0):
                host = self.hosts.refresh(mac, now)
                if host is not None:
                    refreshed.append(host)
            self._host_packets[key] = packets
        return refreshed

    def is_pinned(self, mac: str) -> bool:
        """A policy names this host (as of the last compile)."""
        return mac in self._pinned_macs

    @property
    def pinned_macs(self) -> frozenset[str]:
        """The hosts policies name, as of the last compile."""
        return self._pinned_macs

    def pins(self) -> tuple[frozenset[str], frozenset[str]]:
        """(addresses, MACs) that policies name, enabled or not: their hosts are kept
        however silent (a monitor only ever receives) and their bindings are held
        against claims from elsewhere."""
        macs = set(self.compilation.deliveries) | self.named.macs.keys()  # monitors, and MACs named
        ips = self.named.ips.keys()
        macs.update(h.mac for h in self.hosts.hosts.values() if not ips.isdisjoint(h.ips))
        return frozenset(ips), frozenset(macs)

    def pinned_hosts(self) -> frozenset[str]:
        return self.pins()[1]

    def host_liveness(self, now: float) -> tuple[list[str], list[str]]:
        """(addresses to probe, hosts forgotten): a host silent for `host_timeout` is
        forgotten with its rules, unless a policy names it; then it is asked for, so that
        its answer confirms or corrects where it is."""
        pinned = self.pinned_hosts()
        probe = [ip for mac in self.hosts.silent(now, self.host_timeout, self._watched_since) if mac in pinned
                 for ip in self.hosts.hosts[mac].ips]
        gone = self.hosts.expire(now, self.host_timeout, self._watched_since, pinned)
        if gone:
            self._host_packets = {k: v for k, v in self._host_packets.items() if k[1] not in gone}
            self.invalidate()
        return probe, gone
