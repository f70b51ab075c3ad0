"""What the API reads: every figure it shows, asked of the controller.

Part of `Controller` (a mixin of its methods, on its state). The API imports nothing
from the core or the compiler (`tests/unit/test_layers.py`): what it shows comes from
here, as values or the core's own read-only records."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from vtap.compile.pipeline import (
    COOKIE_TAP,
    OWNER_MASK,
    TABLE_SEND,
    TABLE_TAP,
)

from vtap.control.core import Conflict
from vtap.control.delivery import MonitorDelivery
from vtap.control.polling import meter_drops
from vtap.control.reconciler import RuleDiff, diff, read_installed
from vtap.model.network import Link
from vtap.model.policy import Tap, PolicyPlan, TapSpec
from vtap.model.rules import SwitchRules
from vtap.model.state import PolicyState, PolicyStatus, SwitchSync, SwitchSyncs, SyncState
from vtap.model.view import NetworkView
from vtap.openflow.channel import ChannelClosed, OpenFlowError, ProtocolError

log = logging.getLogger(__name__)


class Reads:
    """The controller's answers to the API (see the module docstring)."""

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

    def sensor_report(self, mac: str, received_packets: int, received_bytes: int, policies: dict[int, dict],
                      now: float) -> None:
        """A tool's sensor says what reached the tool at monitor `mac` (totals since it started)."""
        self.core.delivery.report(mac, received_packets, received_bytes, now)
        for tap_id, counts in policies.items():
            self.tool_counts[tap_id] = {**counts, "monitor": mac, "reported_at": now}

    def switch_syncs(self) -> SwitchSyncs:
        """Each switch's sync now, as the core judges policies by."""
        return SwitchSyncs({dpid: r.status for dpid, r in self.reconcilers.items()})

    def tap_status(self, tap_id: int, syncs: dict[int, SwitchSync] | None = None) -> PolicyStatus:
        """The core's judgement; on a follower, the leader's as published."""
        if not self.leading:
            return self._follower_status(tap_id)
        st = self.core.tap_status(tap_id, self.switch_syncs() if syncs is None else syncs)
        tap = self.core.taps.get(tap_id) if self.tunnels is not None else None
        if tap is None or not tap.spec.tunnel:
            return st
        if (st.state == PolicyState.DEGRADED and "tunnel port on switch" in st.reason and self.tunnels.making_ports()):
            return PolicyStatus(PolicyState.PENDING, "making the tunnel ports: " + st.reason, st.switches)
        if st.state == PolicyState.ACTIVE:
            waiting = self.tunnels.waiting(sorted(st.switches), tap.spec.monitor_ip)
            if waiting:  # its rules are in, but not yet the route to its collector
                return PolicyStatus(PolicyState.PENDING,
                                    f"setting up the tunnel to {tap.spec.monitor_ip} on switch {waiting[0]:016x}", st.switches)
        return st

    async def drift(self, dpid: int) -> tuple[SwitchRules, RuleDiff] | None:
        """What a switch should hold, and what it would take to get there from what a
        fresh read-back finds in it now (empty once it holds exactly the compile): the
        check an operator, or the chaos soak, makes of the reconciler's word. None for a
        switch not connected."""
        rec = self.reconcilers.get(dpid)
        if rec is None:
            return None
        desired = rec.desired
        return desired, diff(desired, await read_installed(rec.dp))

    def not_ready(self) -> list[str]:
        """Why this instance should not be sent work now (empty: ready): the store away,
        no leader elected, a start still gathering its switches, or (where it leads) a
        switch that has not been in sync once since it connected, or whose last attempt
        failed. A switch taking the next change is still ready: every policy change makes
        its switches `syncing` for a moment, and a probe must not flap with them. Nor does
        discovery's progress count (`ports_unknown` says it). Proportional to the
        switches, never to the policies: probes ask every few seconds."""
        reasons = []
        if not self.store.reachable:
            reasons.append(f"the store does not answer: {self.store.last_error}")
        if self.cluster is not None and self.cluster.store.leader is None:
            reasons.append("no leader elected")
        if self._gather_until:
            reasons.append("starting: waiting for the switches it knew before compiling")
        if self.leading:
            for dpid in sorted(self.view().devices):
                rec = self.reconcilers.get(dpid)
                if rec is not None and rec.status.state == SyncState.ERROR:
                    reasons.append(f"switch {dpid:016x}: {rec.status.last_error}")
                elif rec is None or rec.status.last_sync is None:
                    reasons.append(f"switch {dpid:016x} has not been in sync since it connected")
        return reasons

    def tap_paths(self, tap_id: int) -> dict[str, Any]:
        return self.core.tap_paths(tap_id)

    def dry_run(self, spec: TapSpec) -> tuple[PolicyStatus, dict[int, SwitchRules]]:
        """What the policy would install now, without storing or installing anything."""
        tap, comp = self.core.dry_run(spec)
        return comp.states[tap.id], comp.rules_of(tap.id)

    def tap_rules(self, tap_id: int) -> dict[int, SwitchRules]:
        """The flows and groups a policy takes part in, per switch, as compiled."""
        return self.core.compilation.rules_of(tap_id)

    async def tap_counters(self) -> dict[int, Mapping[str, int]]:
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
                counted = await dp.flow_counters(COOKIE_TAP, OWNER_MASK)
                if dpid in metered:
                    meters.update(meter_drops(dpid, await dp.meter_stats()))
            except (ChannelClosed, asyncio.TimeoutError, OpenFlowError):
                continue
            except ProtocolError as exc:  # a reply that is not flow stats: this switch's counters are not known
                log.warning("%r: flow counters unreadable: %s", dp, exc)
                continue
            # Rules that counted nothing add nothing: not kept (most of them, at rest: a
            # tuple of four each, 2 MiB at 10,000 policies, once a second with the stream open).
            stats += [entry for entry in counted if entry[2] and entry[0] in (TABLE_TAP, TABLE_SEND)]
        # In steps, each followed by as long again for the loop's other work (as the API's
        # heavy slices are): at 100,000 policies the whole count is ~200 ms.
        steps = self.core.tap_counters_in_steps(stats, meters)
        while True:
            started = time.perf_counter()
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            await asyncio.sleep(time.perf_counter() - started)

    def plan_apply(self, specs: list[TapSpec], *, prune: bool, dry_run: bool) -> tuple[PolicyPlan, dict[int, SwitchRules]]:
        """What making the policies equal to `specs` would change, and (with `dry_run`)
        the rules the added and changed policies would take part in, per switch, from a
        whole compile of the resulting set; nothing stored or installed."""
        plan, comp = self.core.plan_apply(specs, prune=prune, compile_=dry_run)
        if comp is None:
            return plan, {}
        return plan, comp.rules_of_many({t.id for t in plan.added} | {after.id for _, after in plan.changed})

    def monitor_labels(self) -> dict[str, str]:
        """Each monitor's MAC -> how reasons and metrics name it (its IP where known)."""
        return self.core.monitor_labels()

    def monitors_of(self, tap_id: int) -> tuple[str, ...]:
        """The MACs a compiled policy's copies go to (none while it is not compiled)."""
        return tuple(self.core.compilation.monitors.get(tap_id, ()))

    def policies_of_monitor(self, mac: str) -> list[int]:
        """The compiled policies whose copies go to this monitor."""
        return sorted(i for i, macs in self.core.compilation.monitors.items() if mac in macs)

    def monitor_delivery(self, tap_id: int) -> MonitorDelivery | None:
        """The delivery that speaks for a policy (a pool's: its first failing member, else its first)."""
        return self.core.monitor_delivery(tap_id)

    def monitor_deliveries(self, tap_id: int) -> dict[str, MonitorDelivery]:
        """Each of a policy's monitors' delivery, by MAC."""
        return self.core.monitor_deliveries(tap_id)

    def deliveries(self) -> dict[str, MonitorDelivery]:
        """Every monitor's delivery ledger, by MAC."""
        return self.core.delivery.monitors

    def conflicts(self) -> dict[str, Conflict]:
        """Claims on addresses that policies pin, held: address -> the conflict."""
        return self.core.conflicts

    def lldp_refused(self) -> dict[str, int]:
        """LLDP frames refused, by why."""
        return dict(self.core.lldp_refused)

    def refused_macs(self) -> dict[tuple[int, int], int]:
        """MACs refused beyond the per-port bound, by (dpid, port)."""
        return self.core.hosts.refused

    def link_transit(self, link: Link) -> tuple[float, float] | None:
        """(last, least) LLDP transit time of a link in seconds, None before the first."""
        return self.core.transit.of(link)
