"""The controller's async shell: switch connections in, every switch kept at its desired rules.

The decisions live in `ControlCore` (pure, given the time); this shell owns what has to
do with sockets, tasks, timers and the store. Every event only updates the core and
calls `changed()`; a debounced recompile then hands each switch's reconciler its new
desired rule set. Restart and reconnect need no special code: they are one more
reconcile.

`Controller` keeps the wiring, the event loop's tasks and the switch events; its other
parts are mixins of methods on its state, each in a module of its own: what the API
reads (`reads.py`: every figure it shows, so that no `api` module touches the core or
the compiler's types), who holds what
(`claims.py`: a cluster's role, certificate pins, the dpid contest), finding the network
(`discovering.py`: LLDP rounds, address probes), the periodic reads (`polling.py`:
host liveness, delivery), capture jobs (`capturing.py`).

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
import itertools
import ipaddress
import logging
import secrets
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vtap.compile.pipeline import Owner, cookie_owner
from vtap.compile.tunnels import tunnel_plan
from vtap.control.capture import CaptureBook
from vtap.control.capturing import CaptureJobs
from vtap.control.claims import LINK_GRACE_S, Claims
from vtap.control.coalescing import recompile_delay
from vtap.control.core import CompileInputs, CompileJob, ControlCore
from vtap.control.discovering import Discovering
from vtap.control.discovery import NONCE_BYTES, is_lldp
from vtap.control.looplag import LoopLag
from vtap.control import collector, memory, snapshot
from vtap.control.startup import Startup
from vtap.control.polling import THAW_S, Polling
from vtap.control.reads import Reads
from vtap.control.reconciler import SwitchReconciler
from vtap.control.relay import packet_in_reason
from vtap.control.tunnels import TunnelAgent
from vtap.model.policy import Tap, PolicyPlan, TapSpec
from vtap.openflow.channel import ChannelClosed, Datapath
from vtap.store.base import PolicyStore, StoredState, stored_state

if TYPE_CHECKING:
    from vtap.control.cluster import Cluster

log = logging.getLogger(__name__)

GATHER_S = 3.0  # how long a restart waits for the stored topology's switches before its first compile
GIVE_BACK_S = 5.0  # after a whole compile, when the reconcilers have dropped the old rules: free pages go back
WARM_UP_S = 1.0  # after the switches confirmed a compile reused from the last stop, the whole set is compiled again
WARM_UP_MAX_S = 10.0  # (after the reuse at the latest): sooner, its seconds of work delayed the confirmations
CORE_SLICE = 2_000  # policies of a bulk apply taken into the core between two turns of the loop
COMPILE_SWITCH_S = 0.0005  # how often the compile thread gives up the interpreter lock
LLDP_BURST_S = 0.05  # an extra LLDP round this long after a switch's rules are first in (syncs close together: one round)


class Controller(Reads, Claims, Discovering, Polling, CaptureJobs):
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
        stored: StoredState | None = None, startup: Startup | None = None,  # serve: the store read in a thread, the steps so far
    ):
        self.tunnels = tunnels
        self.tunnel_sources = tunnel_sources
        self.store = store
        self.cluster = cluster
        self.roles: dict[int, str] = {}  # dpid -> this instance's OpenFlow role there (cluster mode)
        self._status_due = asyncio.Event()  # the leader's policy states may have changed
        self.lldp_interval = lldp_interval
        self.settle = settle if settle is not None else 2.5 * lldp_interval
        self.delivery_interval = delivery_interval
        self.captures = CaptureBook(store.state_dir / "captures")
        self.core = ControlCore(link_lifetime=link_lifetime or 3.5 * lldp_interval, lldp_key=store.secret("lldp"),
                                edge_after=lldp_interval, host_timeout=host_timeout, packet_in_rate=packet_in_rate,
                                max_hosts_per_port=max_hosts_per_port)
        self.startup = startup or Startup()
        self.startup.reached("imported")
        self.core.new_lldp_round(secrets.token_bytes(NONCE_BYTES))
        # Links a previous run proved are taken as seen for a while, so that a restart
        # compiles the whole network as soon as its switches are back, without waiting
        # for LLDP to find every link again (they expire unless LLDP proves them).
        self.core.load(*(stored or stored_state(store)), time.monotonic(), LINK_GRACE_S)
        self._saved_links = self.core.links.links()
        self.startup.reached("store_loaded")
        self.packet_ins = 0
        self.packet_ins_by_reason: dict[str, int] = {}
        self.tool_counts: dict[int, dict] = {}  # policy -> its tool's sensor's last counts (vtap sensor)
        self.probes_sent = 0
        self.lldp_rounds_held = 0  # rounds that kept the last nonce because they came late
        self.loop_lag = LoopLag()
        self.datapaths: dict[int, Datapath] = {}
        self.refused_connections = 0
        self._background: set[asyncio.Future] = set()  # dpid contests, audit writes: kept referenced until done
        self.reconcilers: dict[int, SwitchReconciler] = {}
        self.started_at = time.time()
        self._init_changes(debounce)
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
            # Read in the compile thread while the switches come back; the first whole
            # compile, queued behind it, reuses it if its inputs are the same.
            self._snapshot = self._compiler.submit(collector.paused, partial(snapshot.load, self.store.state_dir,
                                                                              self._snapshot_key))
        self._tasks.append(asyncio.create_task(self._discovery_loop(), name="lldp"))
        self._tasks.append(asyncio.create_task(self.loop_lag.run(), name="loop-lag"))
        self._every("roles-and-probes", 0.1, self._roles_and_probes, leading=True)
        if self.core.host_timeout > 0:
            # Hosts talk through proactive rules, not through the controller: their
            # liveness is read from the packet counters of their classify rules.
            self._every("host-liveness", min(10.0, max(0.5, self.core.host_timeout / 4)), self.check_hosts, leading=True)
        if self.delivery_interval > 0:
            self._every("delivery", self.delivery_interval, self.check_delivery, leading=True)
        self._every("captures", 0.25, self._captures_due)
        self._every("gc-thaw", THAW_S, self._thaw)
        if self.tunnels is not None:
            self.tunnels.on_applied = self._status_due.set
            self.tunnels.start()
        if self.cluster is not None:
            self.cluster.on_role = self.role_changed
            self._tasks.append(asyncio.create_task(self._status_loop(), name="status"))

    def _every(self, name: str, interval: float, duty: Callable[[], Any], *, leading: bool = False) -> None:
        """Run `duty` (a function or a coroutine function) every `interval` seconds in a
        task of the controller's; with `leading`, only while this instance leads. The one
        shape of every periodic duty (its first run is one interval after the start)."""
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                if not leading or self.leading:
                    done = duty()
                    if asyncio.iscoroutine(done):
                        await done

        self._tasks.append(asyncio.create_task(loop(), name=name))

    async def quiesce(self) -> None:
        """The first part of a stop: nothing is compiled, sent or written down any more
        for what the switches' connections do, so that they can be closed before the
        rest of the stop (`stop`, which calls this too)."""
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
        if self._give_back is not None:
            self._give_back.cancel()
        for task in self._tasks:
            task.cancel()
        # Discovery among them: links that expire as the connections close are not
        # written down as gone (the next start takes the stored ones as its best guess).
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        await self.quiesce()
        # Written in a thread (0.1-0.2 s at 10,000 policies), while the loop stops the
        # rest and lets the API finish its requests: the stop takes the longer of the
        # two, not their sum.
        compiled = self._snapshot_to_save()
        saving = asyncio.ensure_future(asyncio.to_thread(snapshot.save, self.store.state_dir, self._snapshot_key,
                                                         *compiled)) if compiled else None
        self.captures.close(time.time())
        if self.tunnels is not None:
            await self.tunnels.stop()
        for rec in list(self.reconcilers.values()):
            await rec.stop()
        if saving is not None:
            await saving
        self._compiler.shutdown(wait=False, cancel_futures=True)

    # ---- changes --------------------------------------------------------------------

    def _init_changes(self, debounce: float) -> None:
        """The state of the changes and their compiles (the methods below): how soon a
        change is compiled, the view's version, what the last compile took in and how
        long it took, and the thread whole compiles run in."""
        self.debounce = debounce
        self._last_compile_s = 0.0
        self._last_change = 0.0  # perf_counter time
        self._pending_changes = 0  # changes since the last compile began
        self._last_batch = 0  # changes the last compile took in
        self.view_version = 0  # bumped on every change; the UI refetches the topology on it
        self._recompile_handle: asyncio.TimerHandle | None = None
        self._give_back: asyncio.TimerHandle | None = None  # memory.give_back, after a whole compile
        # Whole compiles run here, one at a time, off the loop that serves the switches.
        # The loop releases the interpreter lock at every system call and must win it back
        # from that thread each time: at Python's default switch interval (5 ms) a loop
        # busy with many sockets waited up to 250 ms for an echo; at 0.5 ms, under 100 ms.
        self._compiler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compile")
        sys.setswitchinterval(COMPILE_SWITCH_S)
        self._policy_turn = asyncio.Lock()  # writes of policies, store then core, one at a time
        self.compiling = False  # a whole compile is running in `_compiler`
        self._compile_again = False  # and changes came meanwhile
        self._snapshot: Future | None = None  # the last stop's compile, being read (a restart)
        self._snapshot_key = snapshot.key_from(self.store.secret("lldp"))
        self._reused: tuple[CompileInputs, dict] | None = None  # a compile reused from it, until checked

    def changed(self, view: bool = True) -> None:
        """Something changed: recompile soon (bursts are coalesced). Policies and capture
        jobs are not part of the network view (`view=False`): the view, and what the
        compiler derived from it, stay.

        How long a change waits is `coalescing.recompile_delay`: a lone change (the last
        compile took in one, or no change came for a while) after 1 ms, a burst (thousands
        of policies posted one by one) coalesced into a few large compiles.
        """
        if view:
            self.core.invalidate()
        self.view_version += 1
        self._pending_changes += 1
        if self._stopping:
            return
        if self._gather_until:
            return  # compiled when the stored topology's switches are back (see start)
        now = time.perf_counter()
        since, self._last_change = now - self._last_change, now
        if self._recompile_handle is None:
            delay = recompile_delay(self.debounce, self._last_compile_s, self._last_batch, since)
            self._recompile_handle = asyncio.get_running_loop().call_later(delay, self._recompile)

    def _recompile(self) -> None:
        """Compile now: in place on the loop when the last compile allows it (a few
        policies changed: milliseconds), else the whole compile in the compiler's thread
        (0.5 s at 5,000 policies), the loop serving the switches meanwhile; changes that
        come during it make the next compile, which follows at once."""
        self._recompile_handle = None
        if self.compiling:
            self._compile_again = True
            return
        started = time.perf_counter()
        self._last_batch, self._pending_changes = self._pending_changes, 0
        collector.freeze()  # and again after: the collector looks only at what is newer
        job = self.core.compile_start()
        if job.result is not None:
            self._compiled(job, job.result, started)
            return
        self.compiling = True
        future = asyncio.get_running_loop().run_in_executor(self._compiler, partial(collector.paused, partial(self._whole, job)))
        future.add_done_callback(partial(self._compiled_off_loop, job, started))

    def _whole(self, job: CompileJob) -> tuple[tuple, bool]:
        """In the compile thread: the whole compile, or the snapshot a clean stop left if
        it was made from the same inputs (control/snapshot.py). Whether it was reused."""
        pending, self._snapshot = self._snapshot, None
        if pending is not None:
            try:
                reused = snapshot.reusable(pending.result(), job.inputs)  # done: it was queued before this
            except Exception:
                log.exception("compile snapshot unreadable; compiling anew")
                reused = None
            if reused is not None:
                return reused, True
        return job.run(), False

    def _compiled_off_loop(self, job: CompileJob, started: float, future: asyncio.Future) -> None:
        self.compiling = False
        if self._stopping or future.cancelled():
            return  # a controller that stops leaves the switches' rules as they are
        try:
            result, reused = future.result()
        except Exception:
            log.exception("the whole compile failed; the switches keep their rules, the next change compiles anew")
            self.core.compile_failed()
            return
        if reused:
            # The memo the in-place path needs is empty: the whole set is compiled again
            # in the background once the switches have confirmed these rules (sooner if
            # a change comes), and checked against what was reused.
            log.info("first compile: the snapshot of the last stop (%d policies), its inputs unchanged", len(job.inputs.taps))
            self._reused = (job.inputs, result[0])
            asyncio.get_running_loop().call_later(WARM_UP_MAX_S, self._warm_up)
        elif self._reused is not None:
            self._check_reused(job.inputs, result[0])
        self._compiled(job, result, started, reused=reused)
        if self._compile_again:
            self._compile_again = False
            self._recompile()

    def _warm_up(self) -> None:
        if self._reused is not None and not self._stopping:
            self.changed(view=False)

    def _check_reused(self, inputs: CompileInputs, desired: dict) -> None:
        """The first fresh whole compile after a reused one: from the same inputs, it must
        have made the same rules (the fresh ones are in force either way)."""
        before, self._reused = self._reused, None
        if before[0].differs(inputs) is not None:
            log.info("the compile reused from the snapshot not checked: the inputs changed since")
        elif before[1] != desired:
            log.error("the compile reused from the snapshot differs from a fresh compile of the same inputs; "
                      "the fresh one is in force")
        else:
            log.info("the compile reused from the snapshot is the one a fresh compile makes")
        self.startup.reached("compile_checked")

    def _compiled(self, job: CompileJob, result, started: float, *, reused: bool = False) -> None:
        """A compile's result handed to the switches' reconcilers (and the rest that
        follows a compile: tunnels, pinned hosts, probes, status)."""
        desired = self.core.compile_end(job, result)
        self.startup.compiled(reused)
        collector.freeze()
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
        self._last_compile_s = time.perf_counter() - started
        if self._last_compile_s > 0.1:
            log.info("compiled %d policies for %d switches in %.2f s (%d changes%s)", len(self.core.taps), len(desired),
                     self._last_compile_s, self._last_batch, "" if job.result is not None else ", whole, off the loop")
        if job.result is None:  # a whole compile: once the old rules are dropped, their pages go back
            if self._give_back is not None:
                self._give_back.cancel()
            self._give_back = asyncio.get_running_loop().call_later(GIVE_BACK_S, memory.give_back)

    def _snapshot_to_save(self) -> tuple[CompileInputs, tuple] | None:
        """On the loop: the last compile and its inputs, for a restart to reuse
        (control/snapshot.py), or None (not leading, nothing compiled, or policies
        changed since). The policies are copied: the API may still change the core's own."""
        if self.core.last_compiled is None or not self.leading:
            return None
        if self.core.policies_changed():  # the last compile's inputs may hold them: not what it compiled
            log.info("compile snapshot not written: policies changed since the last compile")
            return None
        inputs, result = self.core.last_compiled
        return replace(inputs, taps=dict(inputs.taps)), result

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
        async with self._policy_turn:
            tap = await self.store.add_tap(spec)
            self.core.set_tap(tap)
        self.changed(view=False)
        return tap

    async def update_tap(self, tap_id: int, spec: TapSpec) -> Tap:
        async with self._policy_turn:
            tap = await self.store.update_tap(tap_id, spec)
            self.core.set_tap(tap)
        self.changed(view=False)
        return tap

    async def delete_tap(self, tap_id: int) -> None:
        async with self._policy_turn:
            await self.store.delete_tap(tap_id)
            self.core.remove_tap(tap_id)
        self.changed(view=False)

    async def apply_taps(self, specs: list[TapSpec], *, prune: bool) -> PolicyPlan:
        """Make the policies equal to `specs` in one store transaction and one recompile:
        every switch then gets one bundle for the whole set. Writes of policies go one at
        a time, each to the store and then the core: the store's bulk write and this
        core's update give the loop back (a worker thread, slices), and a write that
        came between them would leave the core unlike the store. For the same reason
        the two finish together even if the request that asked is cancelled."""
        return await asyncio.shield(asyncio.ensure_future(self._apply_taps(specs, prune)))

    async def _apply_taps(self, specs: list[TapSpec], prune: bool) -> PolicyPlan:
        async with self._policy_turn:
            changes = await self.store.replace_taps(specs, prune=prune)
            # Taken a slice at a time (100,000 at once held the loop 1.3 s): a compile that
            # starts meanwhile takes a part of them, and the one asked below all of them.
            steps = itertools.chain(((self.core.set_tap, tap) for tap in changes.added),
                                    ((self.core.set_tap, after) for _, after in changes.changed),
                                    ((self.core.remove_tap, tap.id) for tap in changes.removed))
            done = 0
            for done, (step, arg) in enumerate(steps, 1):
                step(arg)
                if done % CORE_SLICE == 0:
                    await asyncio.sleep(0)
            if done > CORE_SLICE:
                # The policies just taken in (made in the store's thread) live on: frozen,
                # each full collection until the next compile does not walk them (one
                # struck while a PUT of 100,000 made its audit records: 340 ms).
                collector.freeze()
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

    def _adopt(self, dp: Datapath) -> None:
        self.startup.reached("first_switch")
        self.datapaths[dp.dpid] = dp
        self.core.switch_up(dp.device(), time.monotonic())
        if self.cluster is not None:
            asyncio.ensure_future(self._take_role(dp))  # the reconciler starts once MASTER
        else:
            self._start_reconciler(dp, settle=True)
            self._send_lldp(dp)
        self.changed()

    def _start_reconciler(self, dp: Datapath, *, settle: bool) -> None:
        rec = SwitchReconciler(dp, settle_until=time.monotonic() + self.settle if settle else 0.0, may_write=self.may_write,
                               on_synced=self._synced, on_applied=lambda: self._rules_in(dp.dpid),
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

    def memory(self) -> dict | None:
        """The controller's memory by structure (`control/memory.py`), None unless traced."""
        return memory.traced()

    def _synced(self) -> None:
        """A switch confirmed its whole desired set: the policies' status may move, and
        once every switch holds a compiled set, the start is over (`startup`)."""
        self._status_due.set()
        steps = self.startup.steps
        if "first_compile" in steps and "rules_confirmed" not in steps and all(
                r.generation > 0 and r.status.synced_generation == r.generation for r in self.reconcilers.values()):
            self.startup.reached("rules_confirmed")
            if self._reused is not None:
                asyncio.get_running_loop().call_later(WARM_UP_S, self._warm_up)

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
            self.startup.reached("switches_back")
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
        if is_lldp(data):  # most of what a quiet network sends up: read as it is (discovery.py)
            self.packet_ins_by_reason["lldp"] = self.packet_ins_by_reason.get("lldp", 0) + 1
            self._lldp_in(dp, in_port, data)
            return
        reason = packet_in_reason(data)
        self.packet_ins_by_reason[reason] = self.packet_ins_by_reason.get(reason, 0) + 1
        if reason == "unparsable":
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
