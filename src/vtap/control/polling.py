"""What the controller reads from the switches on a timer: whether hosts are alive (their
rules' counters), whether copies reach their monitors (the delivery groups' counters),
and the periodic collection of frozen objects.

Part of `Controller` (a mixin of its methods, on its state)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from vtap.compile.pipeline import (
    COOKIE_FORWARDING,
    POLICY_METER_BASE,
    PRIO_KNOWN_HOST,
    TABLE_CLASSIFY,
    is_vtap_group,
)
from vtap.control import memory
from vtap.control.delivery import GroupCounters
from vtap.model.state import PolicyState
from vtap.openflow.channel import ChannelClosed, OpenFlowError

log = logging.getLogger(__name__)

THAW_S = 600.0  # how often frozen objects are collected after all


class Polling:
    """The controller's periodic reads (see the module docstring)."""

    def _thaw(self) -> None:
        """Frozen objects (see _recompile) are never collected, and some were cyclic
        garbage to be: a connection's protocol and transport, a task and its callbacks,
        alive when a compile froze them. Every THAW_S they are collected once, in one
        pause (under a second with 10,000 policies), so that they cannot pile up."""
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        log.info("collected %d unreachable objects in %.2f s; %.1f MiB given back", found, time.perf_counter() - started,
                 memory.give_back())

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
                    meters.update(meter_drops(dpid, await dp.meter_stats()))
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

def meter_drops(dpid: int, replies: list[Any]) -> dict[tuple[int, int], tuple[int, int]]:
    """(dpid, meter) -> (packets, bytes) its drop band dropped, for vtap's policy meters."""
    return {(dpid, m.meter_id): (sum(b.packet_band_count for b in m.band_stats), sum(b.byte_band_count for b in m.band_stats))
            for m in replies if m.meter_id >> 24 == POLICY_METER_BASE >> 24}
