"""The controller: switch events in, a global view out, every switch kept at its desired rules.

Every event (switch connected, port changed, LLDP arrival, host learned, link expired)
only updates the tables here and calls `changed()`; a debounced recompile then hands
each switch's reconciler its new desired rule set.  Restart and reconnect need no
special code: they are one more reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from os_ken.lib.packet import ethernet, packet

from vtap.compile.network import compile_network
from vtap.compile.pipeline import (
    COOKIE_FORWARDING,
    ETH_TYPE_LLDP,
    OWNER_SHIFT,
    OWNER_TAP,
    PRIO_KNOWN_HOST,
    TABLE_CLASSIFY,
    TABLE_TAP,
    VTAP_COOKIE,
)

COOKIE_TAP = VTAP_COOKIE | (OWNER_TAP << OWNER_SHIFT)
OWNER_MASK = 0xFFFFFF << OWNER_SHIFT
from vtap.compile.taps import COMPILED, DEGRADED, ERROR, PENDING, TapCompilation, compile_taps
from vtap.control import relay
from vtap.control.discovery import LinkTable, lldp_frame, parse_lldp
from vtap.control.hosts import HostTable
from vtap.control.probing import ProbeSchedule, named_addresses
from vtap.control.reconciler import SwitchReconciler
from vtap.model.network import Device, Link, is_physical_port
from vtap.model.policy import Tap, TapSpec
from vtap.model.view import NetworkView
from vtap.openflow.channel import ChannelClosed, Datapath, OpenFlowError
from vtap.store.sqlite import Store

log = logging.getLogger(__name__)

ACTIVE = "active"  # the one state only the controller knows: rules confirmed by barrier


@dataclass(frozen=True)
class TapStatus:
    status: str
    reason: str
    switches: tuple[int, ...]


class Controller:
    def __init__(
        self,
        store: Store | None = None,
        *,
        lldp_interval: float = 1.0,
        link_lifetime: float | None = None,
        settle: float | None = None,
        debounce: float = 0.02,
        host_timeout: float = 3600.0,
        packet_in_rate: int = 1000,
    ):
        self.store = store
        self.lldp_interval = lldp_interval
        self.links = LinkTable(lifetime=link_lifetime or 3.5 * lldp_interval)
        self.settle = settle if settle is not None else 2.5 * lldp_interval
        self.debounce = debounce
        self.host_timeout = host_timeout
        self.packet_in_rate = packet_in_rate
        self.packet_ins = 0
        self._host_packets: dict[tuple[int, str], int] = {}
        self._watched_since: dict[int, float] = {}  # dpid -> first host-counter read this connection
        self.hosts = HostTable()
        self.probes = ProbeSchedule()
        self._unresolved: set[str] = set()  # addresses policies name that no host holds
        self.probes_sent = 0
        self.datapaths: dict[int, Datapath] = {}
        self.reconcilers: dict[int, SwitchReconciler] = {}
        self.started_at = time.time()
        self._view: NetworkView | None = None
        self.taps: dict[int, Tap] = {}
        self.compilation = TapCompilation()
        self.generation = 0
        self._last_compile_s = 0.0
        self.view_version = 0  # bumped on every change; the UI refetches the topology on it
        self._tap_generation: dict[int, int] = {}  # tap id -> generation of its current version
        self._recompile_handle: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task] = []
        if store is not None:
            for host in store.load_hosts():
                self.hosts.hosts[host.mac] = host
            for tap in store.load_taps():
                self.taps[tap.id] = tap
                self._tap_generation[tap.id] = 1

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._discovery_loop(), name="lldp"))
        self._tasks.append(asyncio.create_task(self._probe_loop(), name="probe"))
        if self.host_timeout > 0:
            self._tasks.append(asyncio.create_task(self._host_liveness_loop(), name="host-liveness"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for rec in list(self.reconcilers.values()):
            await rec.stop()

    # ---- the view -----------------------------------------------------------------

    def view(self) -> NetworkView:
        if self._view is None:
            devices = {
                dpid: Device(
                    dpid=dpid,
                    ports=tuple(sorted(dp.ports.values(), key=lambda p: p.port_no)),
                    connected_since=dp.connected_since,
                    n_tables=dp.n_tables,
                )
                for dpid, dp in self.datapaths.items()
            }
            self._view = NetworkView(devices=devices, links=self.links.links(), hosts=dict(self.hosts.hosts),
                                     switch_ports=frozenset(self.links.switch_ports))
        return self._view

    def changed(self) -> None:
        """Something changed: recompile soon (bursts are coalesced).

        The wait grows with the last compile's duration, so that a stream of changes
        (thousands of policies posted one by one) is compiled in a few large batches
        rather than once per change, while a lone change still applies within ~20 ms.
        """
        self._view = None
        self.view_version += 1
        if self._recompile_handle is None:
            loop = asyncio.get_running_loop()
            delay = min(max(self.debounce, self._last_compile_s), 2.0)
            self._recompile_handle = loop.call_later(delay, self._recompile)

    def _recompile(self) -> None:
        started = time.perf_counter()
        self._recompile_handle = None
        view = self.view()
        self.generation += 1
        for tap_id, gen in self._tap_generation.items():
            if gen < 0:
                self._tap_generation[tap_id] = self.generation
        desired, self.compilation = compile_network(view, list(self.taps.values()), self.packet_in_rate)
        for dpid, rec in self.reconcilers.items():
            rec.set_desired(desired[dpid], self.generation)
        known = {ip for host in view.hosts.values() for ip in host.ips}
        self._unresolved = named_addresses(list(self.taps.values())) - known
        self._probe_due()
        self._last_compile_s = time.perf_counter() - started

    # ---- TAP policies ---------------------------------------------------------------

    def add_tap(self, spec: TapSpec) -> Tap:
        """Store, then apply (the store raises NameTaken and nothing changes)."""
        tap = self.store.add_tap(spec) if self.store else Tap(id=max(self.taps, default=0) + 1, spec=spec)
        self._tap_changed(tap)
        return tap

    def update_tap(self, tap_id: int, spec: TapSpec) -> Tap:
        tap = self.store.update_tap(tap_id, spec) if self.store else Tap(id=tap_id, spec=spec)
        self._tap_changed(tap)
        return tap

    def delete_tap(self, tap_id: int) -> None:
        if self.store:
            self.store.delete_tap(tap_id)
        self.taps.pop(tap_id, None)
        self._tap_generation.pop(tap_id, None)
        self.changed()

    def _tap_changed(self, tap: Tap) -> None:
        self.taps[tap.id] = tap
        self._tap_generation[tap.id] = -1  # set by the next recompile
        self.changed()

    def dry_run(self, spec: TapSpec) -> tuple[Tap, TapCompilation]:
        """What the policy would install now, without storing or installing anything."""
        tap = Tap(id=max(self.taps, default=0) + 1, spec=spec)
        others = [t for t in self.taps.values() if t.spec.name != spec.name]
        return tap, compile_taps(self.view(), others + [tap])

    def tap_status(self, tap_id: int) -> TapStatus:
        gen = self._tap_generation.get(tap_id, -1)
        state = self.compilation.states.get(tap_id)
        if gen < 0 or state is None:
            return TapStatus(PENDING, "being compiled", ())
        switches = tuple(sorted(state.switches))
        if state.state != COMPILED:
            return TapStatus(state.state, state.reason, switches)
        for dpid in switches:
            rec = self.reconcilers.get(dpid)
            if rec is None:
                return TapStatus(DEGRADED, f"switch {dpid:016x} is not connected", switches)
            if rec.status.state == "error":
                return TapStatus(ERROR, f"switch {dpid:016x}: {rec.status.last_error}", switches)
            if rec.status.synced_generation < gen:
                return TapStatus(PENDING, f"installing on switch {dpid:016x}", switches)
        return TapStatus(ACTIVE, "", switches)

    async def tap_counters(self) -> dict[int, dict[str, int]]:
        """Per policy: packets and bytes that hit its tap rules (each copied once to its monitor).

        One flow-stats request per switch, for vtap's tap rules only (cookie owner byte);
        a region shared by overlapping policies counts for each of them.
        """
        comp = self.compilation
        by_cookie: dict[int, list[int]] = {}
        for dpid in sorted(comp.rules):
            dp = self.datapaths.get(dpid)
            if dp is None:
                continue
            try:
                replies = await dp.flow_stats(COOKIE_TAP, OWNER_MASK)
            except (ChannelClosed, asyncio.TimeoutError):
                continue
            for stats in replies:
                if stats.table_id == TABLE_TAP:
                    acc = by_cookie.setdefault(stats.cookie, [0, 0])
                    acc[0] += stats.packet_count
                    acc[1] += stats.byte_count
        out = {tap_id: {"packets": 0, "bytes": 0} for tap_id in self.taps}
        for cookie, (packets, bytes_) in by_cookie.items():
            for tap_id in comp.cookie_owners.get(cookie, ()):
                if tap_id in out:
                    out[tap_id]["packets"] += packets
                    out[tap_id]["bytes"] += bytes_
        return out

    def tap_paths(self, tap_id: int) -> dict[str, Any]:
        """Where a policy sits, for the UI: the tapped flow's path, the tap points, the
        copies' paths to the monitor (switch dpids and host MACs)."""
        view = self.view()
        tap = self.taps[tap_id]
        s = tap.spec
        monitor = view.hosts.get(self.compilation.monitors.get(tap_id, ""))
        tap_points = sorted(
            dpid for dpid, rules in self.compilation.rules_of(tap_id).items() if any(f.table == TABLE_TAP for f in rules.flows)
        )

        def host(mac: str | None, ip: str | None):
            if mac:
                return view.hosts.get(mac)
            if ip and "/" not in ip:
                return view.host_by_ip(ip)
            return None

        src, dst = host(s.src_mac, s.src_ip), host(s.dst_mac, s.dst_ip)
        flows = []
        for a, b in {"forward": [(src, dst)], "reverse": [(dst, src)], "both": [(src, dst), (dst, src)]}[s.direction]:
            if a is not None and b is not None:
                path = view.path(a.dpid, b.dpid) or []
                flows.append({"hosts": [a.mac, b.mac], "switches": path})
        copies = []
        if monitor is not None:
            for dpid in tap_points:
                copies.append({"switches": view.path(dpid, monitor.dpid) or [], "monitor": monitor.mac})
        return {"id": tap_id, "flows": flows, "tap_points": tap_points, "copies": copies,
                "monitor": monitor.mac if monitor else None}

    def sync_state(self, dpid: int) -> str:
        rec = self.reconcilers.get(dpid)
        return rec.status.state if rec else "disconnected"

    async def wait_in_sync(self, timeout: float) -> None:
        """Wait until no recompile is pending and every switch is in sync."""
        deadline = time.monotonic() + timeout
        while True:
            if self._recompile_handle is None and all(r.status.state == "in_sync" for r in self.reconcilers.values()):
                return
            if time.monotonic() > deadline:
                raise asyncio.TimeoutError("switches not in sync")
            await asyncio.sleep(0.05)

    # ---- switch events (SwitchHandler) ---------------------------------------------

    def switch_connected(self, dp: Datapath) -> None:
        old = self.datapaths.get(dp.dpid)
        if old is not None and old is not dp:
            log.warning("%r connected again; closing its previous connection", dp)
            old.writer.close()
            self._forget_switch(old)
        self.datapaths[dp.dpid] = dp
        rec = SwitchReconciler(dp, settle_until=time.monotonic() + self.settle)
        self.reconcilers[dp.dpid] = rec
        rec.start()
        self._send_lldp(dp)
        self.changed()

    def switch_disconnected(self, dp: Datapath) -> None:
        if self.datapaths.get(dp.dpid) is dp:
            log.info("%r disconnected", dp)
            self._forget_switch(dp)
            self.changed()

    def _forget_switch(self, dp: Datapath) -> None:
        self.datapaths.pop(dp.dpid, None)
        self._watched_since.pop(dp.dpid, None)
        rec = self.reconcilers.pop(dp.dpid, None)
        if rec is not None:
            asyncio.ensure_future(rec.stop())
        self.links.drop_switch(dp.dpid)

    def port_status(self, dp: Datapath, msg: Any) -> None:
        port = dp.ports.get(msg.desc.port_no)
        if port is None or not port.up:
            gone = self.links.drop_port(dp.dpid, msg.desc.port_no)
            if gone:
                log.info("%r port %d down: links removed %s", dp, msg.desc.port_no, gone)
        else:
            self._send_lldp(dp, [port.port_no])
        self.changed()

    def packet_in(self, dp: Datapath, msg: Any) -> None:
        self.packet_ins += 1
        in_port = msg.match["in_port"]
        data = bytes(msg.data)
        try:
            eth = packet.Packet(data).get_protocol(ethernet.ethernet)
        except Exception:
            return
        if eth is None:
            return
        if eth.ethertype == ETH_TYPE_LLDP:
            self._lldp_in(dp, in_port, data)
            return
        view = self.view()
        decision = relay.decide(view, dp.dpid, in_port, data)
        if decision.sender_mac and self.hosts.learn(decision.sender_mac, dp.dpid, in_port, decision.sender_ips, time.time()):
            log.info("host %s (%s) at %016x port %d", decision.sender_mac, ", ".join(decision.sender_ips), dp.dpid, in_port)
            if self.store is not None:
                self.store.save_hosts([self.hosts.hosts[decision.sender_mac]])
            self.changed()
        for out in decision.outs:
            target = self.datapaths.get(out.dpid)
            if target is not None:
                try:
                    target.packet_out(out.port, out.data)
                except ChannelClosed:
                    pass

    # ---- discovery ------------------------------------------------------------------

    def _lldp_in(self, dp: Datapath, in_port: int, data: bytes) -> None:
        sender = parse_lldp(data)
        if sender is None or sender[0] not in self.datapaths:
            return
        link = Link(sender[0], sender[1], dp.dpid, in_port)
        if self.links.seen(link, time.monotonic()):
            log.info("link %016x:%d -> %016x:%d", *(link.src_dpid, link.src_port, link.dst_dpid, link.dst_port))
            for end in ((link.src_dpid, link.src_port), (link.dst_dpid, link.dst_port)):
                mislearned = self.hosts.forget_port(*end)
                if mislearned and self.store is not None:
                    self.store.delete_hosts(mislearned)
            self.changed()

    def _send_lldp(self, dp: Datapath, ports: list[int] | None = None) -> None:
        for port_no in ports if ports is not None else list(dp.ports):
            port = dp.ports.get(port_no)
            if port is None or not port.up or not is_physical_port(port_no):
                continue
            try:
                dp.packet_out(port_no, lldp_frame(dp.dpid, port_no, port.hw_addr))
            except ChannelClosed:
                return

    async def _discovery_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lldp_interval)
            for dp in list(self.datapaths.values()):
                self._send_lldp(dp)
            gone = self.links.expire(time.monotonic())
            if gone:
                log.info("links expired (no LLDP): %s", gone)
                self.changed()

    # ---- probing for addresses ---------------------------------------------------------

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self._probe_due()

    def _probe_due(self) -> None:
        for ip in self.probes.due(self._unresolved, time.monotonic()):
            self.probe(ip)

    def probe(self, ip: str) -> None:
        """Ask every edge port of the fabric who holds `ip`; the answer comes back
        through the neighbour rules and is learned like any ARP or ND frame."""
        frame = relay.probe_frame(ip)
        view = self.view()
        for dpid, port in relay.all_edge_ports(view):
            dp = self.datapaths.get(dpid)
            if dp is None:
                continue
            try:
                dp.packet_out(port, frame)
            except ChannelClosed:
                continue
        self.probes_sent += 1
        log.debug("probed for %s", ip)

    # ---- host liveness ----------------------------------------------------------------

    async def _host_liveness_loop(self) -> None:
        """Hosts talk through proactive rules, not through the controller, so their
        liveness is read from the packet counters of their classify rules; hosts silent
        for `host_timeout` are forgotten, and their rules leave the switches."""
        interval = min(10.0, max(0.5, self.host_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            await self.check_hosts()

    def _pinned_hosts(self) -> frozenset[str]:
        """Hosts that policies name: kept however silent (a monitor only ever receives)."""
        pinned = set(self.compilation.monitors.values())
        ips = set()
        for tap in self.taps.values():
            s = tap.spec
            pinned.update(m for m in (s.src_mac, s.dst_mac, s.monitor_mac) if m)
            ips.update(ip for ip in (s.src_ip, s.dst_ip, s.monitor_ip) if ip and "/" not in ip)
        pinned.update(h.mac for h in self.hosts.hosts.values() if ips.intersection(h.ips))
        return frozenset(pinned)

    async def check_hosts(self) -> None:
        now = time.time()
        refreshed = []
        for dpid, dp in list(self.datapaths.items()):
            try:
                replies = await dp.flow_stats(COOKIE_FORWARDING, 0xFFFFFFFFFFFFFFFF)
            except (ChannelClosed, asyncio.TimeoutError, OpenFlowError):
                continue
            self._watched_since.setdefault(dpid, now)
            for stats in replies:
                if stats.table_id != TABLE_CLASSIFY or stats.priority != PRIO_KNOWN_HOST:
                    continue
                mac = dict(stats.match.items()).get("eth_src")
                if mac is None:
                    continue
                key = (dpid, mac)
                if stats.packet_count > self._host_packets.get(key, 0):
                    host = self.hosts.refresh(mac, now)
                    if host is not None:
                        refreshed.append(host)
                self._host_packets[key] = stats.packet_count
        if refreshed and self.store is not None:
            self.store.save_hosts(refreshed)
        pinned = self._pinned_hosts()
        # A host a policy names is never forgotten; when it has been silent that long, ask
        # for it, so that its answer confirms (or corrects) where it is.
        for mac in self.hosts.silent(now, self.host_timeout, self._watched_since):
            if mac in pinned:
                for ip in self.hosts.hosts[mac].ips:
                    self.probe(ip)
        gone = self.hosts.expire(now, self.host_timeout, self._watched_since, pinned)
        if gone:
            log.info("hosts expired after %.0fs of silence: %s", self.host_timeout, ", ".join(gone))
            if self.store is not None:
                self.store.delete_hosts(gone)
            self._host_packets = {k: v for k, v in self._host_packets.items() if k[1] not in gone}
            self.changed()
