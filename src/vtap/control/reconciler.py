"""Bring one switch to its desired rules, and keep it there.

The reconciler holds, per switch, the desired rule set (compiled) and what it
believes is installed. Installed state is read back from the switch (flow stats with
vtap's cookie, group descriptions in vtap's range) whenever it is unknown: on connect,
on reconnect, after an error. The difference goes out as one atomic bundle of flows and
groups closed by a barrier, with the meters outside it (OVS takes no meter changes in a
bundle): new and changed meters before the bundle, deleted ones after it, so no rule
ever points at a meter that is not there. Only then is the switch "in sync".

Right after a switch (re)connects, the controller's view may still lack links it will
discover within a few LLDP rounds. Until `settle_until`, the reconciler only adds
missing rules and removes nothing, so a restarting controller does not tear down
paths it merely has not rediscovered yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from vtap.compile.pipeline import VTAP_COOKIE, VTAP_COOKIE_MASK, is_vtap_group, is_vtap_meter
from vtap.model.state import SwitchSync, SyncState
from vtap.model.rules import FlowRule, GroupAction, GroupRule, Meter, SwitchRules
from vtap.openflow import translate
from vtap.openflow.channel import ChannelClosed, Datapath, OpenFlowError
from vtap.openflow.translate import ofp

log = logging.getLogger(__name__)

DIFF_OFF_LOOP = 4_000  # rules (desired and installed) beyond which a diff is made in a worker thread
_DIFFS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diff")  # that thread, one for every switch


@dataclass(frozen=True)
class RuleDiff:
    add_flows: tuple[FlowRule, ...] = ()
    modify_flows: tuple[FlowRule, ...] = ()
    delete_flows: tuple[FlowRule, ...] = ()
    add_groups: tuple[GroupRule, ...] = ()
    modify_groups: tuple[GroupRule, ...] = ()
    delete_groups: tuple[GroupRule, ...] = ()
    add_meters: tuple[Meter, ...] = ()
    modify_meters: tuple[Meter, ...] = ()
    delete_meters: tuple[Meter, ...] = ()

    def __len__(self) -> int:
        return sum(len(getattr(self, f)) for f in self.__dataclass_fields__)


def _flow_key(f: FlowRule):
    return f.key


def _group_key(g: GroupRule) -> int:
    return g.group_id


def _meter_key(m: Meter) -> int:
    return m.meter_id


def _flow_order(f: FlowRule):
    # A stable order for messages and logs; repr because match values of one field
    # may be a plain value in one rule and (value, mask) in another.
    return (f.table, -f.priority, repr(f.match))


def _split(want_items, have_items, key, order) -> tuple[tuple, tuple, tuple]:
    """(to add, to modify, to delete), each in a stable order, for items identified by `key`."""
    want = {key(x): x for x in want_items}
    have = {key(x): x for x in have_items}
    add = sorted((x for k, x in want.items() if k not in have), key=order)
    modify = sorted((x for k, x in want.items() if k in have and have[k] != x), key=order)
    delete = sorted((x for k, x in have.items() if k not in want), key=order)
    return tuple(add), tuple(modify), tuple(delete)


def diff(desired: SwitchRules, installed: SwitchRules, *, additive: bool = False) -> RuleDiff:
    """The minimal set of changes from `installed` to `desired` (pure, deterministic).

    Flows are keyed by (table, priority, match): a flow with the same key but other
    actions or cookie is modified in place rather than deleted and re-added, so its
    packets never miss a rule. Groups and meters are keyed by id. With `additive`,
    nothing is deleted or modified.
    """
    # Only what is in one set and not the other can differ (rules are values, and a
    # switch holds one rule per key): a few changes among thousands of rules cost little.
    flows = _split(desired.flows - installed.flows, installed.flows - desired.flows, _flow_key, _flow_order)
    groups = _split(desired.groups - installed.groups, installed.groups - desired.groups, _group_key, _group_key)
    meters = _split(desired.meters - installed.meters, installed.meters - desired.meters, _meter_key, _meter_key)
    if additive:
        return RuleDiff(add_flows=flows[0], add_groups=groups[0], add_meters=meters[0])
    return RuleDiff(*flows, *groups, *meters)


def meter_messages(changes: RuleDiff) -> tuple[list, list]:
    """Meter mods to send before the flow batch (adds, modifies) and after it (deletes).

    OVS does not take meter mods inside a bundle, so they go on their own, ordered so
    that a flow never points at a meter that does not exist.
    """
    before = [translate.meter_add(m) for m in changes.add_meters] + [translate.meter_modify(m) for m in changes.modify_meters]
    after = [translate.meter_delete(m.meter_id) for m in changes.delete_meters]
    return before, after


def _chained_last(groups: tuple[GroupRule, ...]) -> list[GroupRule]:
    """Groups that point at other groups (tap groups at delivery groups) after the rest."""
    return sorted(groups, key=lambda g: any(isinstance(a, GroupAction) for b in g.buckets for a in b.actions))


def messages(changes: RuleDiff) -> list:
    """OpenFlow messages in a safe order: groups exist before flows or other groups
    point at them, and stop being pointed at before they go."""
    return list(made_messages(changes))


def made_messages(changes: RuleDiff):
    """`messages(changes)`, each made when it is asked for: the channel asks as it sends
    them, and gives the loop back every `SEND_SLICE` of them (12,500 flows made at once
    held it most of a second, measured)."""
    translators = ((translate.group_add, _chained_last(changes.add_groups)),
                   (translate.group_modify, _chained_last(changes.modify_groups)),
                   (translate.flow_add, changes.add_flows),
                   (translate.flow_modify, changes.modify_flows),
                   (translate.flow_delete, changes.delete_flows),
                   (lambda g: translate.group_delete(g.group_id), list(reversed(_chained_last(changes.delete_groups)))))
    for make, rules in translators:
        for r in rules:
            yield make(r)


def _applied(installed: frozenset, add, modify, delete, key) -> frozenset:
    if not modify and not delete:
        return installed | frozenset(add)
    gone = {key(x) for x in modify + delete}
    return frozenset(x for x in installed if key(x) not in gone) | frozenset(add + modify)


def apply(installed: SwitchRules, changes: RuleDiff) -> SwitchRules:
    """What the switch holds after `changes` went in."""
    c = changes
    return SwitchRules(
        _applied(installed.flows, c.add_flows, c.modify_flows, c.delete_flows, _flow_key),
        _applied(installed.groups, c.add_groups, c.modify_groups, c.delete_groups, _group_key),
        _applied(installed.meters, c.add_meters, c.modify_meters, c.delete_meters, _meter_key),
    )


async def read_installed(dp: Datapath) -> SwitchRules:
    """vtap's own flows, groups and meters as the switch reports them now. The loop is
    given back after each reply's body (some 300 flows; read whole, 10,000 flows held it
    for a quarter of a second on a loaded machine, and the switches' echoes waited)."""
    flows = set()
    for body in await dp.flow_stats_raw(VTAP_COOKIE, VTAP_COOKIE_MASK):
        await asyncio.sleep(0)
        for rule, pos in translate.flows_from_stats_body(body):
            if rule is not None:
                flows.add(rule)
                continue
            stats = translate.parse_flow_stats(body, pos)  # not in a form vtap writes: os-ken says what it is
            try:
                flows.add(translate.flow_from_stats(stats))
            except translate.TranslationError as exc:
                # Ours by cookie, but not in a form we write: it is stale; delete by key.
                log.warning("%r: unreadable vtap flow (%s); it will be replaced", dp, exc)
                flows.add(FlowRule(stats.table_id, stats.priority, translate.match_from_of(stats.match), cookie=stats.cookie))
    meters = set()
    for config in await dp.meter_config():
        if is_vtap_meter(config.meter_id):
            try:
                meters.add(translate.meter_from_config(config))
            except translate.TranslationError:
                meters.add(Meter(config.meter_id, 0, 0))  # not ours in form: it will be replaced
    groups = set()
    for desc in await dp.group_desc():
        if is_vtap_group(desc.group_id):
            try:
                groups.add(translate.group_from_desc(desc))
            except translate.TranslationError:
                groups.add(GroupRule(desc.group_id, "all", ()))
    return SwitchRules(frozenset(flows), frozenset(groups), frozenset(meters))


@dataclass
class SwitchReconciler:
    dp: Datapath
    settle_until: float = 0.0
    desired: SwitchRules = field(default_factory=SwitchRules)
    installed: SwitchRules | None = None
    status: SwitchSync = field(default_factory=SwitchSync)
    retry_delay: float = 1.0
    generation: int = 0  # of the desired rule set
    may_write: Callable[[], bool] = lambda: True  # a cluster's fence: False once leadership is in doubt
    on_synced: Callable[[], None] = lambda: None  # told each time the switch is confirmed in sync
    on_applied: Callable[[], None] = lambda: None  # told after each batch the switch confirmed (settling or not)
    on_refused: Callable[[str], None] = lambda why: None  # told when the switch says we are not its master

    def __post_init__(self) -> None:
        self._dirty = asyncio.Event()
        self._kicked = asyncio.Event()  # ends a back-off wait early
        self._synced = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"reconcile-{self.dp.dpid:016x}")
        self._dirty.set()
        delay = self.settle_until - time.monotonic()
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._dirty.set)

    def kick(self) -> None:
        """Retry now rather than at the end of a back-off (and from the short delay again)."""
        self._kicked.set()
        self._dirty.set()

    @property
    def settling(self) -> bool:
        return self.settle_until > time.monotonic()

    def end_settling(self) -> None:
        """The view is whole: correct everything from the next pass on."""
        if self.settle_until > time.monotonic():
            self.settle_until = 0.0
            self._dirty.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def set_desired(self, desired: SwitchRules, generation: int = 0) -> None:
        self.generation = generation
        if desired is not self.desired and desired != self.desired:
            self.desired = desired
            self._synced.clear()
            self.status.state = SyncState.SYNCING
            self._dirty.set()
            return
        if desired is not self.desired:
            # Equal, but another object (a compile reused from the last stop, then made
            # afresh): kept, so that the next compile's compare is by identity again. The
            # old one stayed at first, and every later change compared 12,000 rules anew
            # (60-100 ms per change at 10,000 policies).
            if self.installed is self.desired:
                self.installed = desired
            self.desired = desired
            if self.status.state != SyncState.IN_SYNC:
                self._dirty.set()  # a pass under way confirms the object it began with: one more, a barrier
                return
        if self.status.state == SyncState.IN_SYNC:
            self.status.synced_generation = generation

    async def wait_synced(self, timeout: float) -> None:
        await asyncio.wait_for(self._synced.wait(), timeout)

    async def _run(self) -> None:
        delay = self.retry_delay
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            # A kick from here on (even during a pass that fails) cuts the back-off short.
            self._kicked.clear()
            started = time.perf_counter()
            try:
                await self._pass()
                delay = self.retry_delay
            except (OpenFlowError, asyncio.TimeoutError) as exc:
                self.status.state = SyncState.ERROR
                self.status.last_error = str(exc) or type(exc).__name__
                if isinstance(exc, OpenFlowError) and (exc.msg.type, exc.msg.code) == (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE):
                    self.on_refused(f"{self.dp!r} refused a write: this instance is not its master")
                log.warning("%r: reconcile failed (%s); re-reading the switch in %.0fs", self.dp, self.status.last_error, delay)
                self.installed = None
                try:
                    await asyncio.wait_for(self._kicked.wait(), delay)
                    delay = self.retry_delay  # kicked: what failed may have changed (a new role)
                except asyncio.TimeoutError:
                    delay = min(delay * 2, 30.0)
                self._dirty.set()
            except ChannelClosed:
                return
            finally:
                self.status.seconds += time.perf_counter() - started

    async def _pass(self) -> None:
        if self.installed is None:
            self.installed = await read_installed(self.dp)
        desired = self.desired
        # Before its first compile (generation 0: a restart gathering its switches, or a
        # compile still running in its thread) the empty desired set is no reason to
        # delete anything: such a pass only adds, whether or not settling has ended.
        additive = time.monotonic() < self.settle_until or self.generation == 0
        installed = self.installed
        if len(desired.flows) + len(installed.flows) > DIFF_OFF_LOOP:
            # Pure, on frozen sets: in a worker thread, where 12,500 rules against as many
            # read back (equal, other objects) held the loop 0.5-1.3 s. One such thread for
            # all switches: after a whole compile every switch diffs at once, and as many
            # threads as switches left the loop a tenth of the interpreter lock.
            changes = await asyncio.get_running_loop().run_in_executor(_DIFFS, partial(diff, desired, installed,
                                                                                       additive=additive))
        else:
            changes = diff(desired, installed, additive=additive)
        if changes and not self.may_write():
            log.error("%r: %d changes not sent: this instance may no longer lead", self.dp, len(changes))
            self.installed = None  # whoever leads now may change the switch: read it again
            # Try again: an instance that has just been elected may wait a moment for its
            # lease to be confirmed (one that stepped down stops its reconcilers instead).
            asyncio.get_running_loop().call_later(self.retry_delay, self._dirty.set)
            return
        if changes:
            before, after = meter_messages(changes)
            log.info("%r: sending %d changes%s", self.dp, len(changes), " (additive while settling)" if additive else "")
            log.debug("%r: %s", self.dp, changes)
            await self.dp.send_batch(before, atomic=False)
            # Made as they are sent, a slice between two turns of the loop, and let go
            # once written (the batch keeps their bytes): made all at once and kept until
            # the barrier, every switch's after a bulk change were alive together.
            await self.dp.send_batch(made_messages(changes))
            await self.dp.send_batch(after, atomic=False)
            # What the switch holds now is the desired set itself (when nothing was held
            # back): keeping that very object makes the next diff compare by identity.
            self.installed = desired if not additive else apply(installed, changes)
            self.status.batches += 1
            self.status.rules_sent += len(changes)
        else:
            await self.dp.barrier()
            if not additive:
                self.installed = desired  # equal: the same object from now on
        if self.generation > 0:  # a compiled set (not the empty one a restart holds before its first compile)
            self.on_applied()
        if not additive and desired is self.desired and not self._dirty.is_set():
            self.status.state = SyncState.IN_SYNC
            # What was synced is the current desired set, whatever generation named it.
            self.status.synced_generation = self.generation
            self.status.last_sync = time.time()
            self.status.last_error = None
            self._synced.set()
            self.on_synced()
