"""Phase 5, per tap switch: the disjoint regions of the matches tapped there, each a
table-1 rule applying a tap group (its buckets from compile/taps/buckets.py) and, for
capture jobs, sending the packet's first bytes to the controller; the budgeted policies'
rules (compile/budget.py); the tunnel endpoint rule. A switch is kept region by region
(`RegionSwitch`), in the memo by everything it reads, and the in-place path changes it.

Separate because it is the heart of the compile and the part the in-place path
(compile/taps/inplace.py) redoes: everything here reads one switch's matches and
what `Ctx` holds, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from vtap.compile.budget import SwitchBudgets, bucket_policy, cut_group_ids
from vtap.compile.pipeline import (
    GROUP_ID_MASK,
    METER_CAPTURE,
    Owner,
    PRIO_TAP_BASE,
    TABLE_FORWARD,
    TABLE_TAP,
    VTAP_GROUP_BASE,
    allocate_id,
    cookie,
    stable_hash,
)
from vtap.compile.regions import Region, closure, owners, specificity
from vtap.compile.taps.buckets import (
    RecoverySwitch,
    Static,
    metered,
    recovery_entries,
    recovery_switches,
    shaped_pairs,
    unshaped_pairs,
)
from vtap.compile.taps.closed import Closed
from vtap.compile.taps.matches import region_to_match
from vtap.compile.taps.state import Ctx, Shared, TapCompilation, TapMemo, once
from vtap.compile.tunnels import endpoint_rule
from vtap.model.capture import CaptureTarget
from vtap.model.network import Host
from vtap.model.policy import Tap
from vtap.model.rules import Action, Bucket, FlowRule, GroupAction, GroupRule, Meter, ToController
from vtap.model.state import PolicyState, PolicyStatus
from vtap.model.view import NetworkView


def regions_groups_recovery(
    view: NetworkView, per_switch: dict[int, dict[Region, set[int]]], taps_by_id: dict[int, Tap], comp: TapCompilation,
    groups: dict[int, set[GroupRule]], captures: dict[int, CaptureTarget], forward: dict[int, int], memo: TapMemo,
    members: dict[int, tuple[Host | None, ...]], meters: dict[int, set[Meter]],
) -> tuple[dict[int, set[FlowRule]], dict[int, RegionSwitch], Ctx, dict[int, RecoverySwitch]]:
    """Phase 5: per tap switch, the disjoint regions of its policies' matches, each a
    table-1 rule applying a group with one bucket per monitor (or pool); budgeted
    policies' rules (compile/budget.py); the rewrite transport's recovery rules at the
    monitors' edge switches. Returns the flows, each tap switch, what they read, and
    each monitor's switch's recovery rules."""
    monitor_of = {tap_id: members[tap_id] for tap_id in comp.monitors}
    token = memo.token(view)
    static = {i: memo.policy("static", token, i, taps_by_id[i].spec, lambda i=i: Static.of(taps_by_id[i], monitor_of[i]))
              for i in monitor_of if i in taps_by_id}
    budget = Shared({i: static[i].target(monitor_of[i]) for i in static},
                    cut_group_ids(view, [m for macs in comp.monitors.values() for m in macs]),
                    {i: len({d for d, _ in r}) for i, r in _points_of(per_switch).items()})
    ctx = Ctx(view, taps_by_id, monitor_of, static, comp, forward, memo, budget, captures)
    flows: dict[int, set[FlowRule]] = {}
    parts: dict[int, RegionSwitch] = {}
    recovery: dict[int, list] = {}
    made: dict = {}  # each set of owners, each monitors' tags and deliveries once, whichever switches they are at
    for dpid, matches in sorted(per_switch.items()):
        # Everything this switch's part reads: its matches and owners, and per owner what
        # its buckets depend on; the view through its token.
        owned = frozenset((r, once(made, frozenset(i))) for r, i in matches.items())
        ids = sorted({i for i_set in matches.values() for i in i_set})
        inputs = tuple(_owner_inputs(i, static, comp, taps_by_id, budget, made) if i > 0 else (i, captures[-i].snaplen)
                       for i in ids)
        key = ("switch", token, dpid, owned, inputs)
        parts[dpid] = memo.get(key, lambda dpid=dpid, owned=owned: RegionSwitch.build(ctx, dpid, owned))
        if parts[dpid].changed_in_place:  # the memo's key says what it held, not what it holds
            parts[dpid] = memo.put(key, RegionSwitch.build(ctx, dpid, owned))
        part = parts[dpid].part
        for i, state in part.errors.items():
            if i > 0:
                comp.states[i] = state
            else:
                comp.capture_states[-i] = state
        if part.flows:
            flows.setdefault(dpid, set()).update(part.flows)
        if part.groups:
            groups.setdefault(dpid, set()).update(part.groups)
        if part.meters:
            meters.setdefault(dpid, set()).update(part.meters)
        comp.sent_buckets.update(part.sent_buckets)
        comp.meter_monitors.update(part.meter_monitors)
        for c, owners_ in part.cookie_owners.items():
            had = comp.cookie_owners.get(c)
            comp.cookie_owners[c] = owners_ if had is None else had | owners_  # not a copy of each (216 bytes)
        for monitor_dpid, entry in parts[dpid].recovery_entries():
            recovery.setdefault(monitor_dpid, []).append(entry)
    for (kind, mac), gid in budget.cut_ids.items():
        if kind == "deliver" and mac in comp.deliveries:
            comp.cut_deliveries[(comp.deliveries[mac][0], gid)] = mac
    return flows, parts, ctx, recovery_switches(recovery, comp, flows)


def _points_of(per_switch: dict[int, dict[Region, set[int]]]) -> dict[int, list[tuple[int, Region]]]:
    out: dict[int, list[tuple[int, Region]]] = {}
    for dpid, matches in per_switch.items():
        for r, ids in matches.items():
            for i in ids:
                out.setdefault(i, []).append((dpid, r))
    return out


def _owner_inputs(i: int, static: dict[int, Static], comp: TapCompilation, taps_by_id: dict[int, Tap], budget: Shared,
                  made: dict) -> tuple:
    """A memo key of what one policy's buckets at a switch depend on (besides the view);
    its monitors' tags and deliveries made once for all the policies of those monitors."""
    macs = comp.monitors[i]
    base = (i, static[i], macs, once(made, tuple(comp.monitor_tags.get(m) for m in macs)),
            once(made, tuple(comp.deliveries.get(m) for m in macs)))
    spec = taps_by_id[i].spec
    if not spec.shaped:
        return base
    cuts = tuple(sorted(budget.cut_ids.items())) if spec.snaplen else ()
    return (*base, spec, budget.tap_switches.get(i, 1), cuts)


@dataclass(frozen=True)
class SwitchPart:
    """What the compilation takes from one tap switch."""

    flows: frozenset[FlowRule] = frozenset()
    groups: frozenset[GroupRule] = frozenset()
    sent_buckets: dict = field(default_factory=dict)
    cookie_owners: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)  # owner id -> PolicyStatus (a closure too large, budget ids taken)
    meters: frozenset[Meter] = frozenset()
    meter_monitors: dict = field(default_factory=dict)


class _Region(NamedTuple):
    """What one region gives its switch, besides its table-1 rule: its tap group's
    buckets (with the monitor each counts for, and their stable hash), its capture
    jobs' controller action, whether a meter may drop its copies, the budgeted policies
    its buckets lead to, its recovery entries."""

    buckets: tuple[Bucket, ...]
    macs: tuple[str | None, ...]
    stable: int
    controller: ToController | None
    metered: bool
    budgets: tuple[int, ...]
    recovery: tuple


class _Group(NamedTuple):
    """A tap group: its rule (None until it has an id), how many regions apply it, the
    monitor each bucket counts for, the stable hash its id comes from."""

    rule: GroupRule | None
    regions: int
    macs: tuple[str | None, ...]
    stable: int


def _natural(stable: int) -> int:
    return VTAP_GROUP_BASE | (stable & GROUP_ID_MASK)


class RegionSwitch:
    """One tap switch's share of phase 5, kept region by region, whatever its owners:
    plain, budgeted, tunnelled, rewrite and pooled policies, capture jobs.

    A region's rule, tap group, budgeted parts and recovery entries depend on its owners
    alone (and on what `Ctx` holds per owner), so a change of a few matches redoes only
    the regions they overlap (`Closed.change`) and gives what building the switch anew
    gives. What does not belong to one region is kept by count: tap groups are shared by
    the regions with the same buckets, budgeted parts by the regions whose buckets lead
    to them (`SwitchBudgets`), the tunnel endpoint rule by the tunnelled owners.

    Tap group ids are allotted as the whole compile allots them, in the order of each
    group's first region, each its stable hash probed upward past the ids taken: while
    no two groups' hashes meet, every group has its hash whatever the order, so a change
    allots only the new groups; when two meet, all are allotted again in order.

    A switch built with errors (a closure too large, budget ids taken) is not changed
    in place (`update` says None): errors set other policies' states."""

    def __init__(self, dpid: int) -> None:
        self.dpid = dpid
        self.closed = Closed.of({})
        self.regions: dict[Region, _Region] = {}  # regions with a rule, a budget or a recovery entry
        self.flows: dict[Region, FlowRule] = {}  # their table-1 rules (none: no copy, no capture)
        self.groups: dict[tuple[Bucket, ...], _Group] = {}
        self.naturals: dict[int, int] = {}  # a group's hash's id -> the groups with it
        self.crowded = False  # two groups' hashes met at the last allotment
        self.budgets = SwitchBudgets(dpid)
        # tap rule cookie -> its regions: one, but for a hash clash (a tuple: a set of one is 216 bytes)
        self.cookies: dict[int, tuple[Region, ...]] = {}
        self.owned: dict[int, int] = {}  # owner -> the matches it owns here
        self.tunnels: frozenset[int] = frozenset()  # owners that copy into a tunnel
        self.endpoint: FlowRule | None = None
        self.part = SwitchPart()
        self.recovery_change: tuple[list, list] = ([], [])  # the last update's recovery entries (dropped, added)
        self.cookie_change: dict[int, tuple] = {}  # the last part's cookies whose owners changed: (before, after), None: none
        # The last part's rules: flows dropped, added; groups dropped, added.
        self.rule_change: tuple[set, set, set, set] = (set(), set(), set(), set())
        self.changed_in_place = False  # by `update`: no longer what its key in the memo says (that rebuilds it)
        self._fresh: list[Region] = []  # since the last part was made
        self.sent: dict[tuple[int, int], tuple[str | None, ...]] = {}  # (dpid, tap group id) -> monitor per bucket
        self._added: list[FlowRule | GroupRule] = []
        self._dropped: list[FlowRule | GroupRule] = []
        self._touched: set[int] = set()  # cookies

    @classmethod
    def build(cls, ctx: Ctx, dpid: int, owned: frozenset[tuple[Region, frozenset[int]]]) -> RegionSwitch:
        """From scratch, from the switch's matches and their owners (as the switch's memo
        key holds them: the owners' key below is that same object, not a third copy)."""
        sw = cls(dpid)
        matches = dict(owned)
        try:
            regions = ctx.memo.get(("closure", frozenset(matches)), lambda: closure(matches))
        except OverflowError as exc:
            sw.part = SwitchPart(errors={i: PolicyStatus(PolicyState.ERROR, str(exc)) for ids in matches.values() for i in ids})
            return sw
        owner_map = ctx.memo.get(("owners", owned), lambda: owners(regions, matches))
        sw.closed = Closed.of(matches, regions, owner_map)
        sw._own(ctx, {r: (frozenset(), ids) for r, ids in matches.items()})
        for r in regions:
            sw._add(ctx, r)
        sw._finish(ctx, sw.budgets.admit())
        return sw

    def update(self, ctx: Ctx, changes: dict[Region, frozenset[int]]) -> RegionSwitch | None:
        """This switch, changed in place: the matches in `changes` given new owners
        (empty: gone), the policies among their owners maybe changed. None when that
        cannot be done in place (errors, before or after): then it may be left
        part-changed, to be thrown away (a whole compile follows).

        In place, not a copy: copying a switch's dozen dicts and indexes cost O(its
        regions) per change (10 ms with 12,500 regions, at 100,000 policies). The memo
        may hold it under a key that says what it held: marked, a whole compile that
        finds it there builds it anew (taking it out would hash that key: the owners of
        every region, 40 ms at 12,500)."""
        if self.part.errors:
            return None
        self.changed_in_place = True
        self.recovery_change = ([], [])
        before = {r: self.closed.matches.get(r, frozenset()) for r in changes}
        try:
            gone, fresh = self.closed.change(changes)
        except OverflowError:
            return None
        self._own(ctx, {r: (before[r], ids) for r, ids in changes.items()})
        for r in gone:
            self._drop(r)
        for r in fresh:
            self._add(ctx, r)
        errors = self.budgets.admit()
        if errors:
            return None
        self._finish(ctx, errors)
        return self

    def recovery_entries(self) -> list:
        """(monitor's switch, recovery entry) of every region."""
        return [e for kept in self.regions.values() for e in kept.recovery]

    def _own(self, ctx: Ctx, changes: dict[Region, tuple[frozenset[int], frozenset[int]]]) -> None:
        """The owners of the switch's matches counted again for matches whose owners went
        from the first set to the second; the tunnelled among them noted."""
        ids: set[int] = set()
        for old, new in changes.values():
            for i in old:
                self.owned[i] -= 1
                if not self.owned[i]:
                    del self.owned[i]
            for i in new:
                self.owned[i] = self.owned.get(i, 0) + 1
            ids |= old | new
        tunnelled = {i for i in ids if i > 0 and i in self.owned and ctx.static[i].tunnel}
        self.tunnels = (self.tunnels - ids) | tunnelled

    def _add(self, ctx: Ctx, r: Region) -> None:
        """Region `r` (its owners in `closed`) kept: its buckets, the rest; its rule made
        by `_finish`, once its group has an id."""
        ids = self.closed.owners[r]
        policy_ids = sorted(i for i in ids if i > 0)
        if any(ctx.taps_by_id[i].spec.shaped for i in policy_ids):
            pairs, stable = shaped_pairs(ctx, self.dpid, policy_ids, self.budgets.made)
        else:  # the common case, looked up by what it reads
            pairs, stable = unshaped_pairs(ctx, self.dpid, policy_ids)
        buckets = tuple(b for b, _ in pairs)
        jobs = [ctx.captures[-i].snaplen for i in ids if i < 0]
        # In the flow, not in a bucket: OVS filters an OpenFlow 1.3 controller's packet-ins
        # from groups (reason "group" is OpenFlow 1.4's).
        kept = _Region(buckets, tuple(mac for _, mac in pairs), stable, ToController(max(jobs), METER_CAPTURE) if jobs else None,
                       any(metered(b, self.budgets.made) for b in buckets),
                       tuple(i for i in map(bucket_policy, buckets) if i is not None), recovery_entries(ctx, self.dpid, r, ids))
        if not (buckets or kept.controller or kept.recovery):
            return
        self.regions[r] = kept
        self.recovery_change[1].extend(kept.recovery)
        for i in kept.budgets:
            self.budgets.hold(i)
        if buckets:
            group = self.groups.get(buckets)
            if group is None:
                self.groups[buckets] = _Group(None, 1, kept.macs, stable)
                self.naturals[_natural(stable)] = self.naturals.get(_natural(stable), 0) + 1
            else:
                self.groups[buckets] = group._replace(regions=group.regions + 1)
        self._fresh.append(r)

    def _drop(self, r: Region) -> None:
        kept = self.regions.pop(r, None)
        if kept is None:
            return
        self.recovery_change[0].extend(kept.recovery)
        for i in kept.budgets:
            self.budgets.release(i)
        if kept.buckets:
            group = self.groups[kept.buckets]
            if group.regions > 1:
                self.groups[kept.buckets] = group._replace(regions=group.regions - 1)
            else:
                del self.groups[kept.buckets]
                self._unset_group(group.rule)
                n = self.naturals.pop(_natural(group.stable))
                if n > 1:
                    self.naturals[_natural(group.stable)] = n - 1
        if r in self.flows:
            self._unset_flow(r)

    def _allot(self) -> set[tuple[Bucket, ...]]:
        """Ids for the groups without one (all of them again while two groups' hashes
        meet, or met before: a probed id goes back to the hash); returns the groups that
        had an id and have another now."""
        crowded, self.crowded = self.crowded, len(self.naturals) < len(self.groups)
        if not (crowded or self.crowded):
            ids = {b: _natural(g.stable) for b, g in self.groups.items() if g.rule is None}
        else:
            first: dict[tuple[Bucket, ...], Region] = {}
            for r, kept in self.regions.items():
                if kept.buckets and (kept.buckets not in first or r < first[kept.buckets]):
                    first[kept.buckets] = r
            ids, taken = {}, set()
            for b in sorted(first, key=first.__getitem__):
                ids[b] = allocate_id(VTAP_GROUP_BASE, GROUP_ID_MASK, self.groups[b].stable, taken)
                taken.add(ids[b])
        new = {b: gid for b, gid in ids.items() if self.groups[b].rule is None or self.groups[b].rule.group_id != gid}
        moved = {b for b in new if self.groups[b].rule is not None}
        for b in moved:  # all out before any in: two groups may swap ids
            self._unset_group(self.groups[b].rule)
        for b, gid in new.items():
            group = self.groups[b] = self.groups[b]._replace(rule=GroupRule(gid, "all", b))
            self.sent[(self.dpid, gid)] = group.macs
            self._added.append(group.rule)
        return moved

    def _unset_group(self, rule: GroupRule) -> None:
        del self.sent[(self.dpid, rule.group_id)]
        self._dropped.append(rule)

    def _finish(self, ctx: Ctx, errors: dict[int, PolicyStatus]) -> None:
        """The rules of the regions kept since the last part, and the part, from the
        last one and what changed since."""
        moved = self._allot()
        fresh = set(self._fresh)
        again = [r for r, kept in self.regions.items() if kept.buckets in moved and r not in fresh] if moved else []
        for r in again:
            self._unset_flow(r)
        for r in [*self._fresh, *again]:
            self._set_flow(ctx, r)
        endpoint = endpoint_rule(ctx.view.devices[self.dpid]) if self.tunnels else None  # tunnelled copies come back on LOCAL
        if endpoint != self.endpoint:
            self._dropped += [self.endpoint] if self.endpoint else []
            self._added += [endpoint] if endpoint else []
            self.endpoint = endpoint
        dropped, added, touched = self.budgets.take()
        # Changed in place (the last part's dict too: whoever compares parts reads
        # `cookie_change`), not copied: a copy is O(the switch's cookies) per change.
        cookie_owners = self.part.cookie_owners
        self.cookie_change = {}
        for c in self._touched | touched:
            regions = self.cookies.get(c, ())
            # A cookie is mostly one region's: its owners, the very set, not a copy.
            who = self.closed.owners[regions[0]] if len(regions) == 1 else frozenset().union(
                *(self.closed.owners[r] for r in regions))
            if c in self.budgets.cookies:
                who |= {self.budgets.cookies[c]}
            had = cookie_owners.get(c)
            if who:
                cookie_owners[c] = who
            else:
                cookie_owners.pop(c, None)
            if cookie_owners.get(c) != had:
                self.cookie_change[c] = (had, cookie_owners.get(c))
        out, into = self._dropped + dropped, self._added + added
        self.rule_change = flows_out, flows_in, groups_out, groups_in = (
            {f for f in out if isinstance(f, FlowRule)}, {f for f in into if isinstance(f, FlowRule)},
            {g for g in out if isinstance(g, GroupRule)}, {g for g in into if isinstance(g, GroupRule)})
        self.part = SwitchPart(
            (self.part.flows - flows_out) | flows_in, (self.part.groups - groups_out) | groups_in,
            self.sent | self.budgets.sent, cookie_owners, errors, frozenset(self.budgets.meters.values()),
            dict(self.budgets.meter_monitors))
        self._fresh, self._added, self._dropped, self._touched = [], [], [], set()

    def _set_flow(self, ctx: Ctx, r: Region) -> None:
        """Region `r`'s table-1 rule: its tap group applied (after the original when a
        meter may drop the copy: a meter drops the packet for every action after it, in
        OVS's datapath), its capture jobs' controller action."""
        kept = self.regions[r]
        actions: list[Action] = []
        write: tuple[Action, ...] = ()
        if kept.buckets:
            group = GroupAction(self.groups[kept.buckets].rule.group_id)
            if kept.metered:
                write = (group,)
            else:
                actions.append(group)
        if kept.controller:
            actions.append(kept.controller)
        if not actions and not write:
            return
        tap_cookie, priority, region_match = _rule_of(ctx.memo, r)
        flow = self.flows[r] = FlowRule(TABLE_TAP, priority, region_match, tuple(actions), TABLE_FORWARD, tap_cookie, write=write)
        regions = self.cookies.get(tap_cookie, ())
        if r not in regions:
            self.cookies[tap_cookie] = (*regions, r)
        self._added.append(flow)
        self._touched.add(tap_cookie)

    def _unset_flow(self, r: Region) -> None:
        flow = self.flows.pop(r)
        left = tuple(x for x in self.cookies[flow.cookie] if x != r)
        if left:
            self.cookies[flow.cookie] = left
        else:
            del self.cookies[flow.cookie]
        self._dropped.append(flow)
        self._touched.add(flow.cookie)


def _rule_of(memo: TapMemo, r: Region) -> tuple[int, int, tuple]:
    """A tap region's cookie, priority and match."""
    return memo.get(("rule", r), lambda: (cookie(Owner.TAP, stable_hash(repr(r))), PRIO_TAP_BASE + specificity(r),
                                          region_to_match(r)))
