"""Finding the network: LLDP rounds and what arrives of them, and probes for the
addresses policies name.

Part of `Controller` (a mixin of its methods, on its state); the decisions are the
core's (`ControlCore.lldp_in`, `decide_roles`, the probe schedule), this sends and
times the frames."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from vtap.control import relay
from vtap.control.core import HOST_GONE_S, OWNER_GONE_S
from vtap.control.discovery import NONCE_BYTES, parse_lldp
from vtap.openflow.channel import ChannelClosed, Datapath
from vtap.store.errors import StoreUnavailable

log = logging.getLogger(__name__)


class Discovering:
    """LLDP and address probes (see the module docstring)."""

    def _lldp_in(self, dp: Datapath, in_port: int, data: bytes) -> None:
        claim = parse_lldp(data)
        if claim is None:
            return
        new, mislearned, refused = self.core.lldp_in(dp.dpid, in_port, claim, time.monotonic())
        if refused:
            log.warning("LLDP refused (%s) at %016x port %d, claiming %016x port %d", refused, dp.dpid, in_port, claim.dpid, claim.port)
        if new:
            log.info("link %016x:%d -> %016x:%d", claim.dpid, claim.port, dp.dpid, in_port)
            self._save_links()
            if mislearned:
                self.store.delete_hosts(mislearned)
            self.changed()

    def _send_lldp(self, dp: Datapath, ports: list[int] | None = None, unknown_only: bool = False) -> None:
        for port in self.core.lldp_ports(dp.dpid, unknown_only):
            if ports is not None and port.port_no not in ports:
                continue
            try:
                dp.packet_out(port.port_no, self.core.lldp_frame(dp.dpid, port, time.monotonic()))
            except ChannelClosed:
                return

    async def _discovery_loop(self) -> None:
        """A round every `lldp_interval`: a new nonce, LLDP out of every switch's ports.

        A frame is believed with the nonce of the current round or the one before, and
        rounds are counted as the controller reads them back, not by the clock: a round
        that comes late (the loop was busy, so frames of the last round may still wait in
        the switches' connections unread), or whose frames are not read yet, is held: the
        nonce stays, and frames go only out of the ports whose role is still to be found
        (their chance to be proven a link must not wait). A lagging controller so never
        refuses its own frames as replayed, and sends no more than it reads: sending
        every round anyway piled up frames faster than a slow loop (traced, or a compile
        holding the interpreter) read them, and it never caught up."""
        due = time.monotonic() + self.lldp_interval
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            late = time.monotonic() - due
            due = time.monotonic() + self.lldp_interval
            if not self.leading:
                continue
            turned = False
            if late < self.lldp_interval / 2:
                turned = self.core.new_lldp_round(secrets.token_bytes(NONCE_BYTES))
            else:
                log.warning("discovery round %.2f s late (the loop was busy): the last round's nonce stays", late)
            if not turned:
                self.lldp_rounds_held += 1
            for dp in list(self.datapaths.values()):
                self._send_lldp(dp, unknown_only=not turned)
            gone = self.core.expire_links(time.monotonic())
            if gone:
                log.info("links expired (no LLDP): %s", gone)
                self._save_links()
                self.changed()

    def _save_links(self) -> None:
        """Keep the proven links for the next start (not when a switch disconnects: its
        links are then still the best guess of where it will be)."""
        links = self.core.links.links()
        if links != self._saved_links and self.leading:
            self.store.save_links(links)
            self._saved_links = links



    def _roles_and_probes(self) -> None:
        """A tenth of a second's duty: ports whose role is due, probes that are due."""
        self._decide_roles()
        self._probe_due()

    def _decide_roles(self) -> None:
        """Unknown ports whose discovery chance is over turn edge (control/roles.py)."""
        turned, learned, departed = self.core.decide_roles(time.monotonic())
        if departed:
            log.info("hosts forgotten, their port down %.0f s: %s", HOST_GONE_S, ", ".join(departed))
            self.store.delete_hosts(departed)
        for host in learned:
            log.info("host %s (%s) at %016x port %d (seen while its port was not known yet)", host.mac,
                     ", ".join(host.ips), host.dpid, host.port)
            if self.core.is_pinned(host.mac) or self.cluster is not None:
                self.store.save_hosts([host])
        if turned or learned or departed:
            self.changed()

    def _probe_due(self) -> None:
        moved, changed = self.core.conflicts_due(time.time())
        if moved:
            for conflict in moved:
                log.warning("claim applied, its owner's port has been down %.0f s: %s", OWNER_GONE_S, conflict.reason())
            self._audit_moves(moved, "controller", f"the owner's port was down {OWNER_GONE_S:g} s and the address "
                                                   "appeared elsewhere")
        if changed:
            self.changed()
        for ip in self.core.probes_due(time.monotonic()):
            self.probe(ip)

    def confirm_move(self, mac: str, actor: str) -> int:
        """The operator confirms that the held claims of `mac` are right: apply them."""
        applied = self.core.confirm_move(mac, time.time())
        for conflict in applied:
            log.warning("claim applied by the operator: %s", conflict.reason())
        if applied:
            self._audit_moves(applied, actor, "confirmed by an operator")
            self.changed()
        return len(applied)

    def _audit_moves(self, moves: list, actor: str, why: str) -> None:
        """Every applied move is an audit record: one for the host, and one in the history
        of each policy it concerns (its monitor, source or destination moved)."""
        now = time.time()
        records = []
        for conflict in moves:
            c = conflict.claim
            before = {"address": c.address, "mac": c.owner}
            after = {"address": c.address, "mac": c.mac, "dpid": f"{c.dpid:016x}", "port": c.port, "why": why}
            common = {"time": now, "actor": actor, "remote": "controller", "result": "applied", "before": before, "after": after}
            records.append({**common, "action": "host.move", "target": f"host:{c.mac}"})
            records += [{**common, "action": "tap.identity-move", "target": f"tap:{tap_id}"}
                        for tap_id in self.core.taps_concerned(conflict)]
        task = asyncio.ensure_future(self._append_audits(records))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _append_audits(self, records: list[dict]) -> None:
        try:
            await self.store.append_audits(records)
        except StoreUnavailable as exc:
            for record in records:
                log.error("audit record not written (%s): %s", exc, record)

    def probe(self, ip: str) -> None:
        """Ask every edge port of the fabric who holds `ip`; the answer comes back
        through the neighbour rules and is learned like any ARP or ND frame."""
        frame = relay.probe_frame(ip)
        for dpid, port in relay.all_edge_ports(self.core.view()):
            self._packet_out(dpid, port, frame)
        self.probes_sent += 1
        log.debug("probed for %s", ip)
