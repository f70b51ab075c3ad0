"""The core's decisions on switch events: switches and ports coming and going, the
roles their ports are given, LLDP sent and arrived, and frames sent up by a switch.

Part of `ControlCore` (a mixin of its methods, on its state: see `control/core.py`),
kept apart from the policies and their compiles: these events decide what the network
is (the view a compile reads), not what is wanted of it. The tables they change are
`discovery.py`'s, `roles.py`'s and `hosts.py`'s."""

from __future__ import annotations

from dataclasses import dataclass, replace

from vtap.control import relay
from vtap.control.core_hosts import Conflict
from vtap.control.discovery import LldpClaim, lldp_frame
from vtap.control.roles import PortRole
from vtap.model.network import Device, Host, Link, Port


@dataclass(frozen=True)
class FrameOutcome:
    """What a frame sent up to the controller changed, and the packet-outs to make."""

    outs: tuple[relay.PacketOut, ...] = ()
    learned: Host | None = None  # new or changed
    changed: bool = False
    log: str | None = None  # something an operator should read (refused MACs, held claims)


HOST_GONE_S = 2.0  # hosts at a port down this long are forgotten (a shorter flap keeps them, and its rules local)
REFUSAL_LOG_S = 60.0  # refused MACs are logged once a minute per port


class SwitchEvents:
    """The core's answers to switch events (see the module docstring)."""

    def switch_up(self, device: Device, now: float) -> None:
        self.devices[device.dpid] = device
        for port_no in device.up_ports():
            self._port_up(device.dpid, port_no, now, any_host=True)
        self.invalidate()

    def switch_down(self, dpid: int) -> None:
        self.devices.pop(dpid, None)
        self._watched_since.pop(dpid, None)
        self.links.drop_switch(dpid)
        self.roles.switch_gone(dpid)
        self.invalidate()

    def switch_synced(self, dpid: int, now: float) -> None:
        """The switch confirmed its rules (its LLDP rule among them): from now on, LLDP
        out of its unknown ports counts toward their chance (see control/roles.py)."""
        self.roles.switch_synced(dpid, now)

    def _port_up(self, dpid: int, port_no: int, now: float, *, any_host: bool) -> None:
        """A port is up: edge at once if it holds a host a policy names (or, with
        `any_host`, any known host: a switch that connects again, or after a restart),
        else unknown until discovery has had its chance."""
        key = (dpid, port_no)
        self._down_since.pop(key, None)
        hosted = any((h.dpid, h.port) == key for h in self.hosts.hosts.values() if any_host or h.mac in self._pinned_macs)
        self.roles.port_up(key, now, link=key in self.links.switch_ports, hosted=hosted)

    def port_changed(self, dpid: int, port: Port, now: float) -> list[Link]:
        """A port came, went, or changed state: the links gone with it."""
        device = self.devices.get(dpid)
        if device is not None:
            ports = {p.port_no: p for p in device.ports}
            ports[port.port_no] = port
            self.devices[dpid] = replace(device, ports=tuple(sorted(ports.values(), key=lambda p: p.port_no)))
        self.invalidate()
        if port.up:
            if device is not None and port.port_no in self.devices[dpid].up_ports():
                self._port_up(dpid, port.port_no, now, any_host=False)
            return []
        # What is behind a port that went down is not known any more: the port is unknown
        # again when it comes back (unless a host a policy names is there). Its hosts stay
        # where they were seen for HOST_GONE_S (a flapping link then changes its own
        # switch's rules only), then are forgotten (unless a policy names them): whoever
        # plugs in there next does not get their traffic.
        self.roles.port_down((dpid, port.port_no))
        self._down_since.setdefault((dpid, port.port_no), now)
        return self.links.drop_port(dpid, port.port_no)

    def _forget_departed(self, now: float) -> list[str]:
        """Hosts at a port down for `HOST_GONE_S` are forgotten (not those a policy names)."""
        gone = {key for key, since in self._down_since.items() if now - since >= HOST_GONE_S}
        for key in gone:
            del self._down_since[key]
        macs = [m for m, h in self.hosts.hosts.items() if (h.dpid, h.port) in gone and m not in self._pinned_macs]
        for mac in macs:
            del self.hosts.hosts[mac]
        if macs:
            self.invalidate()
        return macs

    def port_deleted(self, dpid: int, port_no: int) -> list[Link]:
        device = self.devices.get(dpid)
        if device is not None:
            self.devices[dpid] = replace(device, ports=tuple(p for p in device.ports if p.port_no != port_no))
        self.invalidate()
        self.roles.port_down((dpid, port_no))
        return self.links.drop_port(dpid, port_no)

    def port_role(self, dpid: int, port_no: int) -> PortRole:
        return self.roles.role((dpid, port_no), self.links.switch_ports)

    def decide_roles(self, now: float) -> tuple[list[tuple[int, int]], list[Host], list[str]]:
        """Unknown ports whose discovery chance is over turn edge, and the senders noted
        there are learned (not one known at another port: a frame that reached an
        unknown port proves nothing against a sighting elsewhere); hosts at a port down
        for `HOST_GONE_S` are forgotten: (the ports that turned, the hosts learned, the
        hosts forgotten)."""
        departed = self._forget_departed(now)
        marked = []
        for host in self.hosts.hosts.values():
            # A host a policy names gets no LLDP on its port (the wormhole defence), so its
            # port's chance would never come: such a port faces a host.
            if host.mac in self._pinned_macs and (host.dpid, host.port) in self.roles.probation:
                self.roles.mark_edge((host.dpid, host.port))
                marked.append((host.dpid, host.port))
        turned = self.roles.decide(now, self.links.switch_ports)
        learned = []
        for (dpid, port), senders in turned:
            for t in senders:
                known = self.hosts.hosts.get(t.mac)
                if known is not None and (known.dpid, known.port) != (dpid, port):
                    continue
                seen = self.hosts.learn(t.mac, dpid, port, t.ips, t.seen, pinned_ips=self._pinned_ips,
                                        pinned_macs=self._pinned_macs)
                if seen.changed:
                    learned.append(self.hosts.hosts[t.mac])
        if turned or marked:
            self.invalidate()
        return marked + [key for key, _ in turned], learned, departed

    def links_published(self, links, until: float) -> None:
        """Links another instance proved (a cluster's leader), as the whole set: their
        ports are links."""
        self.links.replace(links, until)
        for end in self.links.switch_ports:
            self.roles.proven_link(end)
        self.invalidate()

    def host_published(self, host: Host) -> None:
        """A cluster's leader published a host: its port faces hosts."""
        self.hosts.hosts[host.mac] = host
        if (host.dpid, host.port) not in self.links.switch_ports:
            self.roles.mark_edge((host.dpid, host.port))
        self.invalidate()

    def new_lldp_round(self, nonce: bytes) -> bool:
        """A new discovery round, unless the current one is held (discovery.LldpRounds)."""
        if not self.lldp.new_round(nonce, len(self.links.last_seen)):
            return False
        self.links.turned()
        return True

    def lldp_frame(self, dpid: int, port: Port, now: float) -> bytes:
        """The frame to send out of the port now (counted toward the port's chance; its
        time kept, to time its arrival)."""
        self.roles.lldp_sent((dpid, port.port_no))
        self.transit.sending(dpid, port.port_no, self.lldp.nonce, now)
        return lldp_frame(dpid, port.port_no, port.hw_addr, self.lldp.key, self.lldp.nonce)

    def lldp_ports(self, dpid: int, unknown_only: bool = False) -> list[Port]:
        """Where to send LLDP: every up port but those of hosts a policy pins. Withholding
        LLDP from a port must never make a real link unprovable (a port wrongly taken
        for a host's would stay an edge port in a loop), so only the port of a host a
        policy names is kept from a fresh proof it could relay to make a link (a
        wormhole toward the monitor or a tapped host).

        `unknown_only`: just the ports whose role is still to be found (a held round
        sends there only; see `Discovering._discovery_loop`)."""
        device = self.devices.get(dpid)
        if device is None:
            return []
        pinned_at = {h.port for h in self.hosts.hosts.values() if h.dpid == dpid and h.mac in self._pinned_macs}
        up = set(device.up_ports())
        ports = [p for p in device.ports if p.port_no in up and p.port_no not in pinned_at]
        if unknown_only:
            unknown = self.roles.unknown(self.links.switch_ports)
            ports = [p for p in ports if (dpid, p.port_no) in unknown]
        return ports

    def lldp_in(self, dpid: int, in_port: int, claim: LldpClaim, now: float) -> tuple[bool, list[str], str | None]:
        """An LLDP frame in vtap's format arrived: (a new link, hosts mislearned on its
        ports, why it was refused). Only this controller's frames of a live round make a
        link, never back into the port they left, nor onto the port of a host a policy pins."""
        refusal = self.lldp.judge(claim)
        if refusal is None and (claim.dpid, claim.port) == (dpid, in_port):
            refusal = "loop"
        if refusal is None and any((h.dpid, h.port) == (dpid, in_port) for h in self.hosts.hosts.values()
                                   if h.mac in self._pinned_macs):
            refusal = "host port"
        if refusal is not None:
            self.lldp_refused[refusal] += 1
            return False, [], refusal
        link = Link(claim.dpid, claim.port, dpid, in_port)
        self.transit.arrived(link, claim.nonce, now)
        new, forgotten = self.lldp_arrived(link, now)
        return new, forgotten, None

    def lldp_arrived(self, link: Link, now: float) -> tuple[bool, list[str]]:
        """A link seen (its frame already judged): (the link is new, hosts mislearned on its ports)."""
        if link.src_dpid not in self.devices or not self.links.seen(link, now):
            return False, []
        forgotten = []
        for end in ((link.src_dpid, link.src_port), (link.dst_dpid, link.dst_port)):
            forgotten += self.hosts.forget_port(*end)
            self.roles.proven_link(end)
        self.invalidate()
        return True, forgotten

    def expire_links(self, now: float) -> list[Link]:
        gone = self.links.expire(now)
        if gone:
            self.invalidate()
        return gone

    def frame_arrived(self, dpid: int, in_port: int, data: bytes, now: float) -> FrameOutcome:
        """A host's frame sent up by a switch: learn its sender, say what to send where.

        A frame whose claim is held (an address or MAC a policy pins, from elsewhere) is
        not delivered either: its lie must not reach other hosts' caches.

        A frame from a port whose role is not known yet only notes its sender (learned
        if the port turns edge) and goes nowhere: it may have been flooded there by a
        switch whose rules are not in, or sent by the switch port on the other side."""
        if self.port_role(dpid, in_port) == PortRole.UNKNOWN and (dpid, in_port) in self.roles.probation:
            sender = relay.sender(data)
            if sender is not None:
                self.roles.note((dpid, in_port), sender[0], sender[1], now)
            return FrameOutcome()
        decision = relay.decide(self.view(), dpid, in_port, data)
        if not decision.sender_mac:
            return FrameOutcome(decision.outs)
        seen = self.hosts.learn(decision.sender_mac, dpid, in_port, decision.sender_ips, now,
                                pinned_ips=self._pinned_ips, pinned_macs=self._pinned_macs)
        if seen.refused:
            last = self._refusal_logged.get((dpid, in_port))
            if last is None or now - last >= REFUSAL_LOG_S:
                self._refusal_logged[(dpid, in_port)] = now
                return FrameOutcome((), log=f"switch {dpid:016x} port {in_port}: more than {self.hosts.max_per_port} MACs; "
                                            f"{self.hosts.refused[(dpid, in_port)]} refused so far")
            return FrameOutcome()
        if seen.held:
            new = [c for c in seen.held if c.address not in self.conflicts]
            for claim in seen.held:
                conflict = self.conflicts.get(claim.address)
                if conflict is None or conflict.claim != claim:
                    self.conflicts[claim.address] = Conflict(claim, now, now)
                else:
                    conflict.last = now
            if new:
                self.invalidate()
                return FrameOutcome((), changed=True, log="; ".join(self.conflicts[c.address].reason() for c in new))
            return FrameOutcome()
        if seen.changed:
            self.invalidate()
            return FrameOutcome(decision.outs, self.hosts.hosts[decision.sender_mac], True)
        return FrameOutcome(decision.outs)
