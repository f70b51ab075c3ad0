"""The controller's async shell: switch connections in, every switch kept at its desired rules.

The decisions live in `ControlCore` (pure, given the time); this shell owns what has to
do with sockets, tasks, timers and the store. Every event only updates the core and
calls `changed()`; a debounced recompile then hands each switch's reconciler its new
desired rule set. Restart and reconnect need no special code: they are one more
reconcile.

In a cluster (`cluster` given, the store on etcd) every instance connects to every
switch, but only the leader writes: it asks each switch for the MASTER role under its
generation before its reconciler sends anything, learns hosts and links (packet-ins
reach the master only) and publishes them and the policies' states to the store. A
follower asks for SLAVE, keeps its view from what the leader publishes and compiles
it, so that on promotion its reconcilers read each switch back and send only the
difference — nothing, when the old leader had finished.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import math
import secrets
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from os_ken.lib.packet import ethernet, packet
from os_ken.ofproto import ofproto_v1_3 as ofp

from vtap.compile.pipeline import (
    COOKIE_FORWARDING,
    COOKIE_TAP,
    ETH_TYPE_LLDP,
    OWNER_MASK,
    POLICY_METER_BASE,
    PRIO_KNOWN_HOST,
    TABLE_CLASSIFY,
    TABLE_SEND,
    TABLE_TAP,
    Owner,
    cookie_owner,
    is_vtap_group,
)
from vtap.compile.taps import TapCompilation, TapState
from vtap.compile.tunnels import tunnel_plan
from vtap.control import relay
from vtap.control.capture import CaptureBook, CaptureJob
from vtap.control.core import HOST_GONE_S, OWNER_GONE_S, CompileJob, ControlCore, SwitchSync, TapStatus
from vtap.control.delivery import GroupCounters
from vtap.control.tunnels import TunnelAgent
from vtap.control.discovery import NONCE_BYTES, parse_lldp
from vtap.control.reconciler import SwitchReconciler
from vtap.model.capture import CaptureSpec, CaptureState, CaptureTarget
from vtap.model.network import Device
from vtap.model.policy import MatchSpec, Tap, TapChanges, TapSpec
from vtap.model.rules import SwitchRules
from vtap.model.state import PolicyState, SyncState
from vtap.model.view import NetworkView
from vtap.openflow.channel import ChannelClosed, Datapath, OpenFlowError, echo_request
from vtap.store.base import PolicyStore
from vtap.store.errors import StoreUnavailable

if TYPE_CHECKING:
    from vtap.control.cluster import Cluster
    from vtap.store.etcd import Change

log = logging.getLogger(__name__)

ECHO_CONTEST_S = 2.0  # how long a connected switch has to answer when another claims its dpid
LINK_GRACE_S = 10.0  # how long stored links stand in for LLDP after a restart
THAW_S = 600.0  # how often frozen objects are collected after all
GATHER_S = 3.0  # how long a restart waits for the stored topology's switches before its first compile
COMPILE_SWITCH_S = 0.0005  # how often the compile thread gives up the interpreter lock
LLDP_BURST_S = 0.05  # an extra LLDP round this long after a switch's rules are first in (syncs close together: one round)


class LoopLag:
    """How late the event loop runs a timer: what any request or packet-in storm costs
    the switches' connections, LLDP and reconcilers, which share the loop. The worst
    lateness of the last `window` seconds, and of all time."""

    TICK_S = 0.05

    def __init__(self, window: float = 10.0):
        self.window = window
        self.samples: deque[tuple[float, float]] = deque()  # (when, lateness), the window's
        self.worst_ever = 0.0

    async def run(self) -> None:
        while True:
            due = time.monotonic() + self.TICK_S
            await asyncio.sleep(self.TICK_S)
            now = time.monotonic()
            late = max(0.0, now - due)
            self.worst_ever = max(self.worst_ever, late)
            self.samples.append((now, late))
            while self.samples and now - self.samples[0][0] > self.window:
                self.samples.popleft()

    def worst(self) -> float:
        return max((late for _, late in self.samples), default=0.0)


def packet_in_reason(eth: Any, data: bytes) -> str:
    """Why a frame came up, for the metrics: LLDP, ARP, IPv6 neighbour discovery, or
    anything else (a new source to learn, an unknown destination)."""
    if eth is None:
        return "unparsable"
    if eth.ethertype == ETH_TYPE_LLDP:
        return "lldp"
    if eth.ethertype == 0x0806:
        return "arp"
    # IPv6, next header ICMPv6 (byte 20), type 135/136 (byte 54), untagged
    if eth.ethertype == 0x86DD and len(data) > 54 and data[20] == 58 and data[54] in (135, 136):
        return "nd"
    return "other"


def device_of(dp: Datapath) -> Device:
    """A connection's switch as a value, for the core."""
    return Device(dpid=dp.dpid, ports=tuple(sorted(dp.ports.values(), key=lambda p: p.port_no)),
                  connected_since=dp.connected_since, n_tables=dp.n_tables)


class Controller:
    def __init__(
        self,
        store: PolicyStore,
        *,
        lldp_interval: float = 1.0,
        link_lifetime: float | None = None,
        settle: float | None = None,
        debounce: float = 0.001,
        host_timeout: float = 3600.0,
        packet_in_rate: int = 1000,
        max_hosts_per_port: int = 32,
        delivery_interval: float = 1.0,
        cluster: Cluster | None = None,
        tunnels: TunnelAgent | None = None,
        tunnel_sources: ipaddress.IPv4Network = ipaddress.IPv4Network("10.0.0.0/8"),
    ):
        self.tunnels = tunnels
        self.tunnel_sources = tunnel_sources
        self.store = store
        self.cluster = cluster
        self.roles: dict[int, str] = {}  # dpid -> this instance's OpenFlow role there (cluster mode)
        self._status_due = asyncio.Event()  # the leader's policy states may have changed
        self.lldp_interval = lldp_interval
        self.settle = settle if settle is not None else 2.5 * lldp_interval
        self.debounce = debounce
        self.delivery_interval = delivery_interval
        self.captures = CaptureBook(store.state_dir / "captures")
        self.core = ControlCore(link_lifetime=link_lifetime or 3.5 * lldp_interval, lldp_key=store.secret("lldp"),
                                edge_after=lldp_interval, host_timeout=host_timeout, packet_in_rate=packet_in_rate,
                                max_hosts_per_port=max_hosts_per_port)
        self.core.new_lldp_round(secrets.token_bytes(NONCE_BYTES))
        # Links a previous run proved are taken as seen for a while, so that a restart
        # compiles the whole network as soon as its switches are back, without waiting
        # for LLDP to find every link again (they expire unless LLDP proves them).
        self.core.load(store.load_hosts(), store.load_taps(), store.load_links(), time.monotonic(),
                       LINK_GRACE_S)
        self._saved_links = self.core.links.links()
        self.packet_ins = 0
        self.packet_ins_by_reason: dict[str, int] = {}
        self.probes_sent = 0
        self.lldp_rounds_held = 0  # rounds that kept the last nonce because they came late
        self.loop_lag = LoopLag()
        self.datapaths: dict[int, Datapath] = {}
        self.refused_connections = 0
        self._background: set[asyncio.Future] = set()  # dpid contests, audit writes: kept referenced until done
        self.reconcilers: dict[int, SwitchReconciler] = {}
        self.started_at = time.time()
        self._last_compile_s = 0.0
        self._last_compile_end = 0.0  # perf_counter time
        self._pending_changes = 0  # changes since the last compile began
        self._last_batch = 0  # changes the last compile took in
        self.view_version = 0  # bumped on every change; the UI refetches the topology on it
        self._recompile_handle: asyncio.TimerHandle | None = None
        # Whole compiles run here, one at a time, off the loop that serves the switches.
        # The loop releases the interpreter lock at every system call and must win it back
        # from that thread each time: at Python's default switch interval (5 ms) a loop
        # busy with many sockets waited up to 250 ms for an echo; at 0.5 ms, under 100 ms.
        self._compiler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compile")
        sys.setswitchinterval(COMPILE_SWITCH_S)
        self._compiling = False  # a whole compile is running in `_compiler`
        self._compile_again = False  # and changes came meanwhile
        self._tasks: list[asyncio.Task] = []
        self._gather_until = 0.0  # until then, a restart waits for the stored topology's switches before compiling
        self._stopping = False
        self._lldp_burst: asyncio.TimerHandle | None = None  # an extra LLDP round, soon
        self._saved_pins: frozenset[str] = frozenset()  # the hosts policies named at the last compile, written down

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        if self.core.remembered:
            # Each switch that connects changes the view, and a compile of every policy
            # takes a second at 10,000: compiling once, when they are all back, is what
            # makes a restart fast. A switch that does not come back holds it GATHER_S.
            self._gather_until = time.monotonic() + GATHER_S
            asyncio.get_running_loop().call_later(GATHER_S, self._gathered)
        self._tasks.append(asyncio.create_task(self._discovery_loop(), name="lldp"))
        self._tasks.append(asyncio.create_task(self.loop_lag.run(), name="loop-lag"))
        self._tasks.append(asyncio.create_task(self._probe_loop(), name="probe"))
        if self.core.host_timeout > 0:
            self._tasks.append(asyncio.create_task(self._host_liveness_loop(), name="host-liveness"))
        if self.delivery_interval > 0:
            self._tasks.append(asyncio.create_task(self._delivery_loop(), name="delivery"))
        self._tasks.append(asyncio.create_task(self._capture_loop(), name="captures"))
        self._tasks.append(asyncio.create_task(self._thaw_loop(), name="gc-thaw"))
        if self.tunnels is not None:
            self.tunnels.on_applied = self._status_due.set
            self.tunnels.start()
        if self.cluster is not None:
            self.cluster.on_role = self.role_changed
            self._tasks.append(asyncio.create_task(self._status_loop(), name="status"))

    async def stop(self) -> None:
        # From now on a switch that goes is not routed around: a controller that stops
        # must leave the switches' rules as they are (it used to recompile as its own
        # connections closed, and took paths out of the switches still connected).
        self._stopping = True
        if self._recompile_handle is not None:
            self._recompile_handle.cancel()
            self._recompile_handle = None
        if self._lldp_burst is not None:
            self._lldp_burst.cancel()
            self._lldp_burst = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.captures.close(time.time())
        if self.tunnels is not None:
            await self.tunnels.stop()
        for rec in list(self.reconcilers.values()):
            await rec.stop()
        self._compiler.shutdown(wait=False, cancel_futures=True)

    # ---- cluster ----------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this instance drives the switches (always, without a cluster)."""
        return self.cluster is None or self.cluster.leading

    def may_write(self) -> bool:
        return self.cluster is None or self.cluster.may_write()

    def role_changed(self, leading: bool, generation: int, why: str) -> None:
        """The cluster elected this instance, or another (`generation` is the leader's)."""
        if leading:
            # The published links are the view until LLDP proves them again.
            self.core.links_published(self.core.links.links(), time.monotonic() + LINK_GRACE_S)
            # Switches that connected while another instance led, or before any did, and
            # have no pin yet: pinned now, with the certificate they connected with.
            for dp in self.datapaths.values():
                if dp.certificate is not None and self.store.pin_of(dp.dpid) is None:
                    self.store.save_pin(dp.dpid, dp.certificate)
            self.changed()
        else:
            for rec in self.reconcilers.values():
                asyncio.ensure_future(rec.stop())
            self.reconcilers.clear()
            now = time.time()
            for job in [j for j in self.captures.jobs.values() if not j.finished]:
                self.captures.finish(job, CaptureState.DONE, f"stopped: this instance no longer leads ({why})", now)
                self._end_capture(job.id)
        for dp in list(self.datapaths.values()):
            asyncio.ensure_future(self._take_role(dp))

    async def _take_role(self, dp: Datapath) -> None:
        """MASTER under this instance's generation when it leads, then its reconciler
        starts; SLAVE under the leader's otherwise. A refusal (stale generation) is logged."""
        cluster = self.cluster
        leading, generation = cluster.leading, cluster.generation if cluster.leading else (cluster.store.leader or ("", 0))[1]
        role = ofp.OFPCR_ROLE_MASTER if leading else ofp.OFPCR_ROLE_SLAVE
        try:
            await dp.role_request(role, generation)
        except OpenFlowError as exc:
            self.roles[dp.dpid] = "refused"
            log.error("%r refused role %s under generation %d: %s", dp, "master" if leading else "slave", generation, exc)
            if leading and exc.msg.type == ofp.OFPET_ROLE_REQUEST_FAILED and exc.msg.code == ofp.OFPRRFC_STALE:
                cluster.step_down(f"{dp!r} knows a newer generation than {generation}")
            return
        except (ChannelClosed, asyncio.TimeoutError):
            return
        if self.datapaths.get(dp.dpid) is not dp or cluster.leading != leading:
            return  # gone, or the role changed again meanwhile (that change asks again)
        self.roles[dp.dpid] = "master" if leading else "slave"
        if leading and dp.dpid not in self.reconcilers:
            self._start_reconciler(dp, settle=False)
            self._send_lldp(dp)
            self.changed()
        elif leading:
            # Its reconciler may be backing off after refusals while this instance did not
            # lead (up to 30 s): master now, it re-reads the switch at once.
            self.reconcilers[dp.dpid].kick()

    def _refused(self, why: str) -> None:
        """A switch refused a write as from a slave: another instance leads (the switch
        has seen its newer generation), so this one steps down at once."""
        if self.cluster is not None and self.cluster.leading:
            self.cluster.step_down(why)

    def store_changed(self, change: Change) -> None:
        """A key of the (etcd) store changed: another instance's write, or the leader's publication."""
        if change.kind == "tap":
            tap_id = int(change.name)
            if change.value is None:
                if tap_id in self.core.taps:
                    self.core.remove_tap(tap_id)
                    self.changed(view=False)
            elif self.core.taps.get(tap_id) != change.value:
                self.core.set_tap(change.value)
                self.changed(view=False)
        elif change.kind == "leader":
            self.cluster.leader_changed(change.value)
            self.view_version += 1
        elif change.kind == "member":
            self.view_version += 1
        elif self.leading:
            return  # hosts and links: this instance published them
        elif change.kind == "host":
            if change.value is None:
                self.core.hosts.hosts.pop(change.name, None)
            else:
                self.core.host_published(change.value)
            self.changed()
        elif change.kind == "links":
            self.core.links_published(change.value, math.inf)
            self.changed()

    async def _status_loop(self) -> None:
        """The leader publishes the policies' states (with the revision of the version
        they are about) whenever they change, for the followers' API: looked at after
        every compile, every switch confirmed in sync and every delivery check, and
        once a second."""
        last: dict = {}
        while True:
            try:
                await asyncio.wait_for(self._status_due.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(0.002)  # switches confirming one compile together: one look
            self._status_due.clear()
            if not self.leading:
                last = {}
                continue
            status = {}
            for tap_id in self.core.taps:
                st = self.tap_status(tap_id)
                status[str(tap_id)] = [self.store.tap_revision(tap_id), st.state.value, st.reason]
            if status != last:
                self.store.publish_status(status)
                last = status

    def _follower_status(self, tap_id: int) -> TapStatus:
        compiled = self.core.compilation.states.get(tap_id)
        switches = tuple(sorted(compiled.switches)) if compiled else ()
        if self.cluster.store.leader is None:
            return TapStatus(PolicyState.PENDING, "no leader: waiting for one to be elected", switches)
        entry = self.cluster.store.status.get(str(tap_id))
        if entry is None or entry[0] != self.store.tap_revision(tap_id):
            return TapStatus(PolicyState.PENDING, "waiting for the leader to apply this version", switches)
        return TapStatus(PolicyState(entry[1]), entry[2], switches)

    # ---- what the API reads ---------------------------------------------------------

    @property
    def taps(self) -> dict[int, Tap]:
        return self.core.taps

    def view(self) -> NetworkView:
        return self.core.view()

    def sync_state(self, dpid: int) -> SyncState:
        rec = self.reconcilers.get(dpid)
        return rec.status.state if rec else SyncState.DISCONNECTED

    def sync_counters(self, dpid: int) -> tuple[int, int]:
        """(batches, rules) the reconciler has sent this switch since it connected."""
        rec = self.reconcilers.get(dpid)
        return (rec.status.batches, rec.status.rules_sent) if rec else (0, 0)

    def switch_syncs(self) -> dict[int, SwitchSync]:
        """Each switch's sync as the core judges policies by (made once per listing)."""
        return {dpid: SwitchSync(r.status.state, r.status.synced_generation, r.status.last_error)
                for dpid, r in self.reconcilers.items()}

    def tap_status(self, tap_id: int, syncs: dict[int, SwitchSync] | None = None) -> TapStatus:
        """The core's judgement; on a follower, the leader's as published."""
        if not self.leading:
            return self._follower_status(tap_id)
        st = self.core.tap_status(tap_id, self.switch_syncs() if syncs is None else syncs)
        spec = self.core.taps[tap_id].spec if tap_id in self.core.taps else None
        if st.state == PolicyState.ACTIVE and spec is not None and spec.tunnel and self.tunnels is not None:
            waiting = self.tunnels.waiting(st.switches, spec.monitor_ip)
            if waiting:  # its rules are in, but not yet the route to its collector
                return TapStatus(PolicyState.PENDING, f"setting up the tunnel to {spec.monitor_ip} on switch {waiting[0]:016x}",
                                 st.switches)
        return st

    def tap_paths(self, tap_id: int) -> dict[str, Any]:
        return self.core.tap_paths(tap_id)

    def dry_run(self, spec: TapSpec) -> tuple[TapState, dict[int, SwitchRules]]:
        """What the policy would install now, without storing or installing anything."""
        tap, comp = self.core.dry_run(spec)
        return comp.states[tap.id], comp.rules_of(tap.id)

    def tap_rules(self, tap_id: int) -> dict[int, SwitchRules]:
        """The flows and groups a policy takes part in, per switch, as compiled."""
        return self.core.compilation.rules_of(tap_id)

    async def tap_counters(self) -> dict[int, dict[str, int]]:
        """Per policy: packets and bytes that hit its tap rules, the copies made of them
        (each copied once to its monitor; a budgeted policy's after sampling and rate
        limit) and the copies its rate limit dropped.

        One flow-stats request per switch with tap rules, for vtap's tap rules only; one
        meter-stats request per switch with a rate-limited policy's meters."""
        stats: list[tuple[int, int, int, int]] = []
        meters: dict[tuple[int, int], tuple[int, int]] = {}
        metered = {d for d, _ in self.core.compilation.meter_monitors}
        for dpid in sorted(self.core.compilation.rules):
            dp = self.datapaths.get(dpid)
            if dp is None:
                continue
            try:
                replies = await dp.flow_stats(COOKIE_TAP, OWNER_MASK)
                if dpid in metered:
                    meters.update(_meter_drops(dpid, await dp.meter_stats()))
            except (ChannelClosed, asyncio.TimeoutError, OpenFlowError):
                continue
            stats += [(s.table_id, s.cookie, s.packet_count, s.byte_count) for s in replies
                      if s.table_id in (TABLE_TAP, TABLE_SEND)]
        return self.core.tap_counters(stats, meters)

    # ---- changes --------------------------------------------------------------------

    def changed(self, view: bool = True) -> None:
        """Something changed: recompile soon (bursts are coalesced). Policies and capture
        jobs are not part of the network view (`view=False`): the view, and what the
        compiler derived from it, stay.

        The wait grows with the last compile's duration, so that a stream of changes
        (thousands of policies posted one by one) is compiled in a few large batches
        rather than once per change, while a lone change is compiled after 1 ms.
        A change is a lone one — compiled after the short debounce — when the last compile
        took in a single change (a client waiting for each change to apply before the
        next) or after a quiet spell longer than the last compile: it does not wait for a
        long compile of the past (say, the whole set applied at once). A burst shows
        itself within one compile (it takes in several changes) and is coalesced again.
        """
        if view:
            self.core.invalidate()
        self.view_version += 1
        self._pending_changes += 1
        if self._stopping:
            return
        if self._gather_until:
            return  # compiled when the stored topology's switches are back (see start)
        if self._recompile_handle is None:
            quiet = time.perf_counter() - self._last_compile_end > self._last_compile_s
            lone = quiet or self._last_batch <= 1
            delay = self.debounce if lone else min(max(self.debounce, self._last_compile_s), 2.0)
            self._recompile_handle = asyncio.get_running_loop().call_later(delay, self._recompile)

    def _recompile(self) -> None:
        """Compile now: in place on the loop when the last compile allows it (a few
        policies changed: milliseconds), else the whole compile in the compiler's thread
        (0.5 s at 5,000 policies), the loop serving the switches meanwhile; changes that
        come during it make the next compile, which follows at once."""
        self._recompile_handle = None
        if self._compiling:
            self._compile_again = True
            return
        started = time.perf_counter()
        self._last_batch, self._pending_changes = self._pending_changes, 0
        # What the controller holds is long-lived and not cyclic garbage: millions of
        # objects with 10,000 policies, which every full collection would walk (pauses
        # of up to a second, several during a whole compile). Frozen before and after a
        # compile, the collector looks only at what is newer.
        gc.freeze()
        job = self.core.compile_start()
        if job.result is not None:
            self._compiled(job, job.result, started)
            return
        self._compiling = True
        future = asyncio.get_running_loop().run_in_executor(self._compiler, job.run)
        future.add_done_callback(partial(self._compiled_off_loop, job, started))

    def _compiled_off_loop(self, job: CompileJob, started: float, future: asyncio.Future) -> None:
        self._compiling = False
        if self._stopping or future.cancelled():
            return  # a controller that stops leaves the switches' rules as they are
        try:
            result = future.result()
        except Exception:
            log.exception("the whole compile failed; the switches keep their rules, the next change compiles anew")
            self.core.compile_failed()
            return
        self._compiled(job, result, started)
        if self._compile_again:
            self._compile_again = False
            self._recompile()

    def _compiled(self, job: CompileJob, result, started: float) -> None:
        """A compile's result handed to the switches' reconcilers (and the rest that
        follows a compile: tunnels, pinned hosts, probes, status)."""
        desired = self.core.compile_end(job, result)
        gc.freeze()
        view = self.core.view()
        for dpid, rec in self.reconcilers.items():
            if dpid not in desired:
                continue  # connected after the compile's snapshot: the compile its arrival asked for follows
            rec.set_desired(desired[dpid], self.core.generation)
            if rec.settling and not self._gather_until and not view.unknown_ports_of(dpid):
                # Every port of the switch has its role: discovery has had its chance
                # there, so what is not desired now is stale, not yet to be found.
                rec.end_settling()
        if self.tunnels is not None and self.leading:
            self.tunnels.want(tunnel_plan(self.core.view(), list(self.core.taps.values()), self.tunnel_sources))
        if self.leading:
            self._save_pinned()
            self._probe_due()
        self._status_due.set()
        self._last_compile_end = time.perf_counter()
        self._last_compile_s = self._last_compile_end - started
        if self._last_compile_s > 0.1:
            log.info("compiled %d policies for %d switches in %.2f s (%d changes%s)", len(self.core.taps), len(desired),
                     self._last_compile_s, self._last_batch, "" if job.result is not None else ", whole, off the loop")

    def _save_pinned(self) -> None:
        """A host a policy has just come to name is written down at once (a restart then
        knows where it is and forwards to it without waiting to hear from it again),
        not only once its counters show it active."""
        pinned = self.core.pinned_macs
        if pinned is self._saved_pins:
            return
        new = [self.core.hosts.hosts[m] for m in pinned - self._saved_pins if m in self.core.hosts.hosts]
        if new:
            self.store.save_hosts(new)
        self._saved_pins = pinned

    async def add_tap(self, spec: TapSpec) -> Tap:
        """Store, then apply (the store raises NameTaken and nothing changes)."""
        tap = await self.store.add_tap(spec)
        self.core.set_tap(tap)
        self.changed(view=False)
        return tap

    async def update_tap(self, tap_id: int, spec: TapSpec) -> Tap:
        tap = await self.store.update_tap(tap_id, spec)
        self.core.set_tap(tap)
        self.changed(view=False)
        return tap

    async def delete_tap(self, tap_id: int) -> None:
        await self.store.delete_tap(tap_id)
        self.core.remove_tap(tap_id)
        self.changed(view=False)

    def plan_apply(self, specs: list[TapSpec], *, prune: bool, compile_: bool) -> tuple[TapChanges, TapCompilation | None]:
        """What making the policies equal to `specs` would change, and (with `compile_`)
        the compilation of the resulting set, without storing or installing anything."""
        return self.core.plan_apply(specs, prune=prune, compile_=compile_)

    async def apply_taps(self, specs: list[TapSpec], *, prune: bool) -> TapChanges:
        """Make the policies equal to `specs` in one store transaction and one recompile:
        every switch then gets one bundle for the whole set."""
        changes = await self.store.replace_taps(specs, prune=prune)
        for tap in changes.added + [after for _, after in changes.changed]:
            self.core.set_tap(tap)
        for tap in changes.removed:
            self.core.remove_tap(tap.id)
        if changes.added or changes.changed or changes.removed:
            self.changed(view=False)
        return changes

    # ---- switch events (SwitchHandler) ---------------------------------------------

    def switch_connected(self, dp: Datapath) -> None:
        if not self._certificate_holds(dp):
            return
        old = self.datapaths.get(dp.dpid)
        if old is not None and old is not dp:
            # A second connection claiming a datapath id: the live one stays, whoever asks.
            task = asyncio.ensure_future(self._contest(old, dp))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        self._adopt(dp)

    def _certificate_holds(self, dp: Datapath) -> bool:
        """Over TLS, a datapath id is bound to the certificate it first connected with.

        One ovs-vswitchd holds one TLS configuration for all its bridges (`ovs-vsctl
        set-ssl`), so a certificate cannot name each bridge's dpid: instead the first
        certificate a dpid connects with is pinned (trust on first use, kept in the
        store), and a connection claiming that dpid with any other certificate is
        refused, even while the real switch is away. Only an admin unpins it
        (`DELETE /api/v1/devices/{dpid}/certificate`)."""
        if dp.certificate is None:
            return True
        pinned = self.store.pin_of(dp.dpid)
        if pinned is None:
            if self.leading:  # a cluster's leader pins for all (followers read the pins it publishes)
                self.store.save_pin(dp.dpid, dp.certificate)
                log.info("%r: certificate sha256:%s pinned", dp, dp.certificate)
            return True
        if pinned == dp.certificate:
            return True
        self.refused_connections += 1
        log.warning("refused %r from %s: its certificate sha256:%s is not the one pinned for this datapath id "
                    "(sha256:%s); if the switch really changed, an admin unpins it: DELETE /api/v1/devices/%016x/certificate",
                    dp, dp.peer, dp.certificate, pinned, dp.dpid)
        dp.writer.close()
        return False

    async def _contest(self, old: Datapath, new: Datapath) -> None:
        """Refuse `new` while `old` answers an echo (an error reply is an answer too);
        replace `old` only when it is dead. If `old` ended while the echo was out, the
        datapath id is free: `new`, if still open, takes it."""
        try:
            await old.request(echo_request(), timeout=ECHO_CONTEST_S)
            alive = True
        except OpenFlowError:
            alive = True
        except (ChannelClosed, asyncio.TimeoutError):
            alive = False
        holder = self.datapaths.get(old.dpid)
        if not new.closed.is_set() and (holder is None or (holder is old and not alive)):
            if holder is old:
                log.warning("%r connected again from %s; its previous connection is dead, replacing it", new, new.peer)
                old.writer.close()
                self._forget_switch(old)
            else:
                log.warning("%r connected again from %s; its previous connection ended meanwhile", new, new.peer)
            self._adopt(new)
            return
        self.refused_connections += 1
        log.warning("refused a second connection claiming %r from %s: %s", new, new.peer,
                    "it closed" if new.closed.is_set() else "the connected switch answers")
        new.writer.close()

    def _adopt(self, dp: Datapath) -> None:
        self.datapaths[dp.dpid] = dp
        self.core.switch_up(device_of(dp), time.monotonic())
        if self.cluster is not None:
            asyncio.ensure_future(self._take_role(dp))  # the reconciler starts once MASTER
        else:
            self._start_reconciler(dp, settle=True)
            self._send_lldp(dp)
        self.changed()

    def _start_reconciler(self, dp: Datapath, *, settle: bool) -> None:
        rec = SwitchReconciler(dp, settle_until=time.monotonic() + self.settle if settle else 0.0, may_write=self.may_write,
                               on_synced=self._status_due.set, on_applied=lambda: self._rules_in(dp.dpid),
                               on_refused=self._refused)
        self.reconcilers[dp.dpid] = rec
        rec.start()
        if self.core.remembered and self.core.remembered <= set(self.datapaths):
            # Every switch of the stored topology is back: the view is whole, no need to
            # wait for discovery before correcting the switches (stale rules included).
            self.core.remembered = set()
            for r in self.reconcilers.values():
                r.end_settling()
            self._gathered()

    def _rules_in(self, dpid: int) -> None:
        """A switch confirmed a batch of its rules (settling or not). The first time since
        it connected, its LLDP rule is in: an extra LLDP round soon lets its neighbours'
        frames reach it now, not a round later (links proven both ways, and its unknown
        ports' chance counted)."""
        if dpid in self.core.roles.synced or dpid not in self.datapaths:
            return
        self.core.switch_synced(dpid, time.monotonic())
        if self._lldp_burst is None and not self._stopping:
            self._lldp_burst = asyncio.get_running_loop().call_later(LLDP_BURST_S, self._burst)

    def _burst(self) -> None:
        self._lldp_burst = None
        if self.leading:
            for dp in list(self.datapaths.values()):
                self._send_lldp(dp)

    def _gathered(self) -> None:
        """The stored topology's switches are back, or the wait for them is over: compile."""
        if self._gather_until:
            self._gather_until = 0.0
            self.changed(view=False)

    def switch_disconnected(self, dp: Datapath) -> None:
        if self.datapaths.get(dp.dpid) is dp:
            log.info("%r disconnected", dp)
            self._forget_switch(dp)
            self.changed()

    def _forget_switch(self, dp: Datapath) -> None:
        self.datapaths.pop(dp.dpid, None)
        self.roles.pop(dp.dpid, None)
        self.core.switch_down(dp.dpid)
        rec = self.reconcilers.pop(dp.dpid, None)
        if rec is not None:
            asyncio.ensure_future(rec.stop())

    def port_status(self, dp: Datapath, msg: Any) -> None:
        if self.datapaths.get(dp.dpid) is not dp:
            return  # a connection not (or no longer) adopted says nothing
        port_no = msg.desc.port_no
        port = dp.ports.get(port_no)
        if port is not None:
            gone = self.core.port_changed(dp.dpid, port, time.monotonic())
        else:
            gone = self.core.port_deleted(dp.dpid, port_no)
        if gone:
            log.info("%r port %d down: links removed %s", dp, port_no, gone)
            self._save_links()
        if port is not None and port.up and self.leading:
            self._send_lldp(dp, [port_no])
        self.changed()

    def packet_in(self, dp: Datapath, msg: Any) -> None:
        if self.datapaths.get(dp.dpid) is not dp or not self.leading:
            return  # a follower's connection sees packet-ins only while its role request is on its way
        self.packet_ins += 1
        in_port = msg.match["in_port"]
        data = bytes(msg.data)
        if cookie_owner(msg.cookie) == Owner.TAP:  # only capture jobs' buckets send tap-rule packets up
            self.packet_ins_by_reason["capture"] = self.packet_ins_by_reason.get("capture", 0) + 1
            self._captured(dp.dpid, in_port, data, msg.total_len, msg.cookie)
            return
        try:
            eth = packet.Packet(data).get_protocol(ethernet.ethernet)
        except Exception:
            eth = None
        reason = packet_in_reason(eth, data)
        self.packet_ins_by_reason[reason] = self.packet_ins_by_reason.get(reason, 0) + 1
        if eth is None:
            return
        if eth.ethertype == ETH_TYPE_LLDP:
            self._lldp_in(dp, in_port, data)
            return
        outcome = self.core.frame_arrived(dp.dpid, in_port, data, time.time())
        if outcome.log:
            log.warning("%s", outcome.log)
        if outcome.learned is not None:
            host = outcome.learned
            log.info("host %s (%s) at %016x port %d", host.mac, ", ".join(host.ips), dp.dpid, in_port)
            # Only hosts that turn out active (their rules count packets) or that a policy
            # names are written down: a MAC flood must not fill the store. A cluster's
            # followers compile from what the leader publishes, so there every host the
            # per-port bound admitted is published.
            if self.core.is_pinned(host.mac) or self.cluster is not None:
                self.store.save_hosts([host])
        if outcome.changed:
            self.changed()
        for out in outcome.outs:
            self._packet_out(out.dpid, out.port, out.data)

    def _packet_out(self, dpid: int, port: int, data: bytes) -> None:
        target = self.datapaths.get(dpid)
        if target is not None:
            try:
                target.packet_out(port, data)
            except ChannelClosed:
                pass

    # ---- discovery ------------------------------------------------------------------

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

    def _send_lldp(self, dp: Datapath, ports: list[int] | None = None) -> None:
        for port in self.core.lldp_ports(dp.dpid):
            if ports is not None and port.port_no not in ports:
                continue
            try:
                dp.packet_out(port.port_no, self.core.lldp_frame(dp.dpid, port, time.monotonic()))
            except ChannelClosed:
                return

    async def _discovery_loop(self) -> None:
        """A round every `lldp_interval`: a new nonce, LLDP out of every switch's ports.

        A frame is believed with the nonce of the current round or the one before, and
        rounds are counted as the controller sends them, not by the clock: a round that
        comes late (the loop was busy, so frames of the last round may still wait in the
        switches' connections unread) keeps the last nonce instead of turning it, so a
        lagging controller never refuses its own frames as replayed."""
        due = time.monotonic() + self.lldp_interval
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            late = time.monotonic() - due
            due = time.monotonic() + self.lldp_interval
            if not self.leading:
                continue
            if late < self.lldp_interval / 2:
                self.core.new_lldp_round(secrets.token_bytes(NONCE_BYTES))
            else:
                self.lldp_rounds_held += 1
                log.warning("discovery round %.2f s late (the loop was busy): the last round's nonce stays", late)
            for dp in list(self.datapaths.values()):
                self._send_lldp(dp)
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

    # ---- probing for addresses ---------------------------------------------------------

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            if self.leading:
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

    # ---- host liveness ----------------------------------------------------------------

    async def _thaw_loop(self) -> None:
        """Frozen objects (see _recompile) are never collected, and some were cyclic
        garbage to be: a connection's protocol and transport, a task and its callbacks,
        alive when a compile froze them. Every THAW_S they are collected once, in one
        pause (under a second with 10,000 policies), so that they cannot pile up."""
        while True:
            await asyncio.sleep(THAW_S)
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            log.info("collected %d unreachable objects in %.2f s", found, time.perf_counter() - started)

    async def _host_liveness_loop(self) -> None:
        """Hosts talk through proactive rules, not through the controller, so their
        liveness is read from the packet counters of their classify rules."""
        interval = min(10.0, max(0.5, self.core.host_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            if self.leading:
                await self.check_hosts()

    async def check_hosts(self) -> None:
        now = time.time()
        refreshed = []
        for dpid, dp in list(self.datapaths.items()):
            try:
                replies = await dp.flow_stats(COOKIE_FORWARDING, 0xFFFFFFFFFFFFFFFF)
            except (ChannelClosed, asyncio.TimeoutError, OpenFlowError):
                continue
            counts = [(dict(s.match.items())["eth_src"], s.packet_count) for s in replies
                      if s.table_id == TABLE_CLASSIFY and s.priority == PRIO_KNOWN_HOST and "eth_src" in dict(s.match.items())]
            refreshed += self.core.host_counters(dpid, counts, now)
        if refreshed:
            self.store.save_hosts(refreshed)
        probe, gone = self.core.host_liveness(now)
        for ip in probe:
            self.probe(ip)
        if gone:
            log.info("hosts expired after %.0fs of silence: %s", self.core.host_timeout, ", ".join(gone))
            self.store.delete_hosts(gone)
            self.changed()

    async def _delivery_loop(self) -> None:
        while True:
            await asyncio.sleep(self.delivery_interval)
            if self.leading:
                await self.check_delivery()

    async def check_delivery(self) -> None:
        """Read the group counters of every switch holding tap or delivery groups (one
        request each), and let the core judge whether copies reach their monitors."""
        comp = self.core.compilation
        dpids = {d for d, _ in comp.sent_buckets} | {d for d, _ in comp.deliveries.values()}
        metered = {d for d, _ in comp.meter_monitors}
        counters: dict[int, list[GroupCounters]] = {}
        meters: dict[tuple[int, int], tuple[int, int]] = {}
        for dpid in sorted(dpids):
            dp = self.datapaths.get(dpid)
            if dp is None:
                continue
            try:
                replies = await dp.group_stats()
            except (ChannelClosed, asyncio.TimeoutError, OpenFlowError):
                continue
            counters[dpid] = [GroupCounters(s.group_id, tuple((b.packet_count, b.byte_count) for b in s.bucket_stats))
                              for s in replies if is_vtap_group(s.group_id)]
            if dpid in metered:
                try:
                    meters.update(_meter_drops(dpid, await dp.meter_stats()))
                except (ChannelClosed, asyncio.TimeoutError, OpenFlowError):
                    del counters[dpid]  # its sends would count without their drops
        if self.core.compilation is not comp:
            return  # recompiled meanwhile: the bucket layout read may not be the one compiled
        for tap_id in self.core.delivery_observe(time.time(), counters, meters):
            self._status_due.set()
            st = self.tap_status(tap_id)
            if st.state == PolicyState.DEGRADED:
                log.warning("policy %d degraded: %s", tap_id, st.reason)
            else:
                log.info("policy %d: copies reach its monitor again (%s)", tap_id, st.state)

    # ---- capture jobs -----------------------------------------------------------------

    def start_capture(self, spec: CaptureSpec, created_by: str) -> CaptureJob:
        """Start a job (CaptureLimit when too many run; KeyError for an unknown tap_id)."""
        if spec.tap_id is not None:
            match = MatchSpec(**self.core.taps[spec.tap_id].spec.match_fields())
        else:
            match = MatchSpec(**spec.match_fields())
        job = self.captures.start(spec, match, created_by, time.time())
        self.core.set_capture(CaptureTarget(job.id, match, spec.snaplen))
        log.info("capture job %d started by %s: %s", job.id, created_by, job.describe())
        self.changed(view=False)
        return job

    def capture_status(self, job: CaptureJob) -> tuple[CaptureState, str]:
        if job.finished:
            return job.state, job.reason
        st = self.core.capture_status(job.id, self.switch_syncs())
        if st.state == PolicyState.ACTIVE:
            return CaptureState.RUNNING, ""
        compiled = self.core.compilation.capture_states.get(job.id)
        if st.state == PolicyState.PENDING and (compiled is None or compiled.state == PolicyState.COMPILED):
            return CaptureState.STARTING, st.reason  # being compiled, or its rules on their way
        return CaptureState.PENDING, st.reason

    def delete_capture(self, job_id: int) -> bool:
        job = self.captures.delete(job_id, time.time())
        if job is None:
            return False
        self._end_capture(job_id)
        return True

    def _captured(self, dpid: int, in_port: int, data: bytes, total_len: int, cookie: int) -> None:
        now = time.time()
        for job_id in self.core.capture_jobs(cookie):
            if self.captures.packet(job_id, dpid, in_port, data, total_len, now):
                job = self.captures.jobs[job_id]
                self.captures.finish(job, CaptureState.DONE, f"{job.spec.count} packets captured", now)
                self._end_capture(job_id)

    def _end_capture(self, job_id: int) -> None:
        """The job's rules go with the next compile."""
        if job_id in self.core.captures:
            self.core.remove_capture(job_id)
            log.info("capture job %d ended", job_id)
            self.changed(view=False)

    async def _capture_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.time()
            for job in self.captures.expired(now):
                self.captures.finish(job, CaptureState.DONE, f"{job.spec.duration_s:g} s elapsed", now)
                self._end_capture(job.id)


def _meter_drops(dpid: int, replies: list[Any]) -> dict[tuple[int, int], tuple[int, int]]:
    """(dpid, meter) -> (packets, bytes) its drop band dropped, for vtap's policy meters."""
    return {(dpid, m.meter_id): (sum(b.packet_band_count for b in m.band_stats), sum(b.byte_band_count for b in m.band_stats))
            for m in replies if m.meter_id >> 24 == POLICY_METER_BASE >> 24}
