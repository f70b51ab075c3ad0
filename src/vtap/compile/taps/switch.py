"""Phase 5, per tap switch: the disjoint regions of the matches tapped there, each a
table-1 rule applying a tap group (its buckets from compile/taps/buckets.py) and, for
capture jobs, sending the packet's first bytes to the controller; the budgeted policies'
rules (compile/budget.py); the tunnel endpoint rule. A switch's part is kept in the memo
by everything it reads, and a switch whose owners are all plain is kept region by region
(`PlainSwitch`), which the in-place path changes.

Separate because it is the heart of the compile and the part the in-place path
(compile/taps/inplace.py) redoes: everything here reads one switch's matches and
what `Ctx` holds, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vtap.compile.budget import BudgetPart, cut_group_ids
from vtap.compile.pipeline import (
    COOKIE_COPY,
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
from vtap.compile.regions import Region, RegionIndex, closure, owners, reclose, specificity
from vtap.compile.taps.buckets import Static, metered, recovery_entries, recovery_rules, shaped_pairs, unshaped_pairs
from vtap.compile.taps.matches import region_to_match
from vtap.compile.taps.state import Ctx, Shared, TapCompilation, TapMemo
from vtap.compile.tunnels import endpoint_rule
from vtap.model.capture import CaptureTarget
from vtap.model.network import Host
from vtap.model.policy import Tap, TapSpec
from vtap.model.rules import Action, Bucket, FlowRule, GroupAction, GroupRule, Meter, SetField, ToController
from vtap.model.state import PolicyState, PolicyStatus
from vtap.model.view import NetworkView


def regions_groups_recovery(
    view: NetworkView, per_switch: dict[int, dict[Region, set[int]]], taps_by_id: dict[int, Tap], comp: TapCompilation,
    groups: dict[int, set[GroupRule]], captures: dict[int, CaptureTarget], forward: dict[int, int], memo: TapMemo,
    members: dict[int, tuple[Host | None, ...]], meters: dict[int, set[Meter]],
) -> tuple[dict[int, set[FlowRule]], dict[int, SwitchPart | PlainSwitch], Ctx, bool]:
    """Phase 5: per tap switch, the disjoint regions of its policies' matches, each a
    table-1 rule applying a group with one bucket per monitor (or pool); budgeted
    policies' rules (compile/budget.py); the rewrite transport's recovery rules at the
    monitors' edge switches. Returns the flows, each switch's part, what the parts read,
    and whether there are recovery rules."""
    monitor_of = {tap_id: members[tap_id] for tap_id in comp.monitors}
    token = memo.token(view)
    static = {i: memo.policy("static", token, i, taps_by_id[i].spec, lambda i=i: Static.of(taps_by_id[i], monitor_of[i]))
              for i in monitor_of if i in taps_by_id}
    budget = Shared({i: static[i].target(monitor_of[i]) for i in static},
                    cut_group_ids(view, [m for macs in comp.monitors.values() for m in macs]),
                    {i: len({d for d, _ in r}) for i, r in _points_of(per_switch).items()})
    ctx = Ctx(view, taps_by_id, monitor_of, static, comp, forward, memo, budget)
    flows: dict[int, set[FlowRule]] = {}
    parts: dict[int, SwitchPart | PlainSwitch] = {}
    recovery: dict[int, list[tuple[Region, frozenset[SetField], str, frozenset[int]]]] = {}
    for dpid, matches in sorted(per_switch.items()):
        # Everything this switch's part reads: its matches and owners, and per owner what
        # its buckets depend on; the view through its token.
        owned = frozenset((r, frozenset(i)) for r, i in matches.items())
        ids = sorted({i for i_set in matches.values() for i in i_set})
        inputs = tuple(_owner_inputs(i, static, comp, taps_by_id, budget) if i > 0 else (i, captures[-i].snaplen) for i in ids)
        parts[dpid] = memo.get(("switch", token, dpid, owned, inputs), lambda dpid=dpid, matches=matches, owned=owned, ids=ids: (
            PlainSwitch.build(ctx, dpid, dict(owned)) if all(i > 0 and plain(taps_by_id[i].spec) for i in ids) else None)
            or _switch_part(ctx, dpid, matches, owned, captures))
        part = part_of(parts[dpid])
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
            comp.cookie_owners[c] = comp.cookie_owners.get(c, frozenset()) | owners_
        for monitor_dpid, entry in part.recovery:
            recovery.setdefault(monitor_dpid, []).append(entry)
    for (kind, mac), gid in budget.cut_ids.items():
        if kind == "deliver" and mac in comp.deliveries:
            comp.cut_deliveries[(comp.deliveries[mac][0], gid)] = mac
    recovery_rules(recovery, comp, flows)
    return flows, parts, ctx, bool(recovery)


def _points_of(per_switch: dict[int, dict[Region, set[int]]]) -> dict[int, list[tuple[int, Region]]]:
    out: dict[int, list[tuple[int, Region]]] = {}
    for dpid, matches in per_switch.items():
        for r, ids in matches.items():
            for i in ids:
                out.setdefault(i, []).append((dpid, r))
    return out


def _owner_inputs(i: int, static: dict[int, Static], comp: TapCompilation, taps_by_id: dict[int, Tap], budget: Shared) -> tuple:
    """A memo key of what one policy's buckets at a switch depend on (besides the view)."""
    macs = comp.monitors[i]
    base = (i, static[i], macs, tuple(comp.monitor_tags.get(m) for m in macs), tuple(comp.deliveries.get(m) for m in macs))
    spec = taps_by_id[i].spec
    if not spec.shaped:
        return base
    cuts = tuple(sorted(budget.cut_ids.items())) if spec.snaplen else ()
    return (*base, spec, budget.tap_switches.get(i, 1), cuts)


@dataclass(frozen=True)
class SwitchPart:
    """One tap switch's share of phase 5, reusable while its inputs stay the same."""

    flows: frozenset[FlowRule] = frozenset()
    groups: frozenset[GroupRule] = frozenset()
    sent_buckets: dict = field(default_factory=dict)
    cookie_owners: dict = field(default_factory=dict)
    recovery: tuple = ()  # (monitor's switch, recovery entry)
    errors: dict = field(default_factory=dict)  # owner id -> PolicyStatus (a closure too large, budget ids taken)
    meters: frozenset[Meter] = frozenset()
    meter_monitors: dict = field(default_factory=dict)


@dataclass
class _Making:
    """A switch's part as `_switch_part` makes it."""

    flows: set[FlowRule] = field(default_factory=set)
    groups: set[GroupRule] = field(default_factory=set)
    sent_buckets: dict = field(default_factory=dict)
    cookie_owners: dict[int, frozenset[int]] = field(default_factory=dict)
    group_ids: dict[tuple[Bucket, ...], int] = field(default_factory=dict)  # tap groups by their buckets
    meters: set[Meter] = field(default_factory=set)
    meter_monitors: dict = field(default_factory=dict)


def _switch_part(ctx: Ctx, dpid: int, matches: dict[Region, set[int]], owned: frozenset,
                 captures: dict[int, CaptureTarget]) -> SwitchPart:
    """One tap switch's share of phase 5, whatever its owners (see `PlainSwitch` for the
    common case, kept region by region)."""
    try:
        regions = ctx.memo.get(("closure", frozenset(matches)), lambda: closure(matches))
    except OverflowError as exc:
        return SwitchPart(errors={i: PolicyStatus(PolicyState.ERROR, str(exc)) for ids in matches.values() for i in ids})
    owner_map = ctx.memo.get(("owners", owned), lambda: owners(regions, matches))
    out = _Making()
    parts: dict[int, BudgetPart] = {}  # budgeted policies' parts at this switch, made once each
    for r in sorted(regions):
        _tap_rule(ctx, dpid, r, owner_map[r], captures, parts, out)
    recovery = recovery_entries(ctx, dpid, regions, owner_map)
    if any(ctx.static[i].tunnel for ids in owner_map.values() for i in ids if i > 0):
        rule = endpoint_rule(ctx.view.devices[dpid])  # tunnelled copies come back in on LOCAL
        if rule is not None:
            out.flows.add(rule)
    errors = _add_budgets(dpid, parts, out)
    return SwitchPart(frozenset(out.flows), frozenset(out.groups), out.sent_buckets, out.cookie_owners, tuple(recovery),
                      errors, frozenset(out.meters), out.meter_monitors)


def _tap_rule(ctx: Ctx, dpid: int, r: Region, ids: frozenset[int], captures: dict[int, CaptureTarget],
              parts: dict[int, BudgetPart], out: _Making) -> None:
    """Region `r`'s table-1 rule, owned by `ids`: its tap group (shared with the regions
    that have the same buckets) and its capture jobs' controller action, if any."""
    policy_ids = sorted(i for i in ids if i > 0)
    if any(ctx.taps_by_id[i].spec.shaped for i in policy_ids):
        pairs, stable = shaped_pairs(ctx, dpid, policy_ids, parts)
    else:  # the common case, looked up by what it reads
        pairs, stable = unshaped_pairs(ctx, dpid, policy_ids)
    actions: list[Action] = []
    write: tuple[Action, ...] = ()
    if pairs:
        buckets = tuple(b for b, _ in pairs)
        gid = out.group_ids.get(buckets)
        if gid is None:
            gid = allocate_id(VTAP_GROUP_BASE, GROUP_ID_MASK, stable, set(out.group_ids.values()))
            out.group_ids[buckets] = gid
            out.groups.add(GroupRule(gid, "all", buckets))
            out.sent_buckets[(dpid, gid)] = tuple(mac for _, mac in pairs)
        if any(metered(b, parts) for b in buckets):
            # Copies that may meet a meter leave after the original: a meter drops
            # the packet for every action after it, in OVS's datapath.
            write = (GroupAction(gid),)
        else:
            actions.append(GroupAction(gid))
    jobs = [captures[-i] for i in ids if i < 0]
    if jobs:
        # In the flow, not in a bucket: OVS filters an OpenFlow 1.3 controller's
        # packet-ins from groups (reason "group" is OpenFlow 1.4's).
        actions.append(ToController(max(j.snaplen for j in jobs), METER_CAPTURE))
    if not actions and not write:
        return
    tap_cookie, priority, region_match = _rule_of(ctx.memo, r)
    out.cookie_owners[tap_cookie] = out.cookie_owners.get(tap_cookie, frozenset()) | ids
    out.flows.add(FlowRule(TABLE_TAP, priority, region_match, tuple(actions), TABLE_FORWARD, tap_cookie, write=write))


def _add_budgets(dpid: int, parts: dict[int, BudgetPart], out: _Making) -> dict[int, PolicyStatus]:
    """The budgeted policies' rules, groups and meters at this switch, added to `out`;
    returns the errors of those whose ids are taken."""
    errors: dict[int, PolicyStatus] = {}
    for tap_id, part in sorted(parts.items()):
        # Ids derive from the policy id (send groups from its low 17 bits, meters 20): two
        # policies far apart in age may meet. The younger one gets none of its rules (its
        # bucket then resubmits to no rule: no copy) and an error.
        clash = ({g.group_id for g in part.groups} & {g.group_id for g in out.groups if g not in part.groups}
                 or {m.meter_id for m in part.meters} & {m.meter_id for m in out.meters})
        if clash:
            errors[tap_id] = PolicyStatus(PolicyState.ERROR, f"its budget's group or meter ids are taken at switch {dpid:016x} "
                                                         "by an older policy: re-create it for a new id")
            continue
        out.flows |= part.flows
        out.groups |= part.groups
        out.meters |= part.meters
        out.sent_buckets.update(part.sent_buckets)
        out.meter_monitors.update(part.meter_monitors)
        for f in part.flows:
            if f.cookie != COOKIE_COPY:
                out.cookie_owners[f.cookie] = out.cookie_owners.get(f.cookie, frozenset()) | {tap_id}
    return errors


def part_of(part: SwitchPart | PlainSwitch) -> SwitchPart:
    return part.part if isinstance(part, PlainSwitch) else part


def plain(spec: TapSpec) -> bool:
    """Copies over the VLAN transport, unbudgeted: a region's rule depends on its owners alone."""
    return spec.transport == "vlan" and not spec.shaped


def _rule_of(memo: TapMemo, r: Region) -> tuple[int, int, tuple]:
    """A tap region's cookie, priority and match."""
    return memo.get(("rule", r), lambda: (cookie(Owner.TAP, stable_hash(repr(r))), PRIO_TAP_BASE + specificity(r),
                                          region_to_match(r)))


@dataclass
class PlainSwitch:
    """A tap switch whose owners are all plain policies, kept region by region: what
    `_switch_part` makes of the same matches, and changed by redoing only the regions a
    change overlaps (`regions.reclose`). Tap groups are shared by regions with the same
    buckets; while every group has the id its buckets hash to, no id depends on the
    order regions come in, so adding one in place gives what a whole compile gives."""

    dpid: int
    matches: dict[Region, frozenset[int]]
    match_index: RegionIndex
    region_index: RegionIndex
    owners: dict[Region, frozenset[int]]
    rules: dict[Region, tuple[FlowRule, tuple[Bucket, ...]]]  # regions with a rule, and its group's buckets
    groups: dict[tuple[Bucket, ...], tuple[GroupRule, int, tuple[str | None, ...]]]  # -> (group, regions, monitors)
    natural: bool = True
    part: SwitchPart = field(default_factory=SwitchPart)
    cookies: dict[int, frozenset[Region]] = field(default_factory=dict)  # tap rule cookie -> its regions (one, but for a clash)
    _added: list[FlowRule] = field(default_factory=list)  # since the last part was made
    _dropped: list[FlowRule] = field(default_factory=list)
    _touched: set[int] = field(default_factory=set)  # cookies

    @classmethod
    def build(cls, ctx: Ctx, dpid: int, matches: dict[Region, frozenset[int]]) -> PlainSwitch | None:
        """From scratch; None when the regions are too many (the generic part says so)."""
        try:
            regions = ctx.memo.get(("closure", frozenset(matches)), lambda: closure(matches))
        except OverflowError:
            return None
        owner_map = ctx.memo.get(("owners", frozenset(matches.items())), lambda: owners(regions, matches))
        sw = cls(dpid, dict(matches), RegionIndex(matches), RegionIndex(regions), dict(owner_map), {}, {})
        for r in sorted(regions):  # the order `_switch_part` allots group ids in
            sw._add_rule(ctx, r)
        sw._finish()
        return sw

    def update(self, ctx: Ctx, changes: dict[Region, frozenset[int]]) -> PlainSwitch | None:
        """A copy with the matches in `changes` given new owners (empty: gone); None
        when that cannot be done in place (a group id taken, too many regions)."""
        if not self.natural:
            return None
        sw = PlainSwitch(self.dpid, dict(self.matches), self.match_index.copy(), self.region_index.copy(),
                         dict(self.owners), dict(self.rules), dict(self.groups), part=self.part, cookies=dict(self.cookies))
        for r, ids in changes.items():
            if ids:
                if r not in sw.matches:
                    sw.match_index.add(r)
                sw.matches[r] = ids
            elif r in sw.matches:
                del sw.matches[r]
                sw.match_index.remove(r)
        try:
            # The copy's region index is the old one until the loop below: asked first, it
            # keeps the projections it builds for the next change.
            gone, fresh = reclose(sw.region_index, sw.matches, sw.match_index, changes)
        except OverflowError:
            return None
        for r in gone:
            del sw.owners[r]
            sw.region_index.remove(r)
            if r in sw.rules:
                sw._drop_rule(r)
        for r, ids in fresh.items():
            sw.owners[r] = ids
            sw.region_index.add(r)
        if len(sw.owners) > 200_000:
            return None
        for r in sorted(fresh):
            if not sw._add_rule(ctx, r):
                return None
        sw._finish()
        return sw

    def _add_rule(self, ctx: Ctx, r: Region) -> bool:
        pairs, stable = unshaped_pairs(ctx, self.dpid, sorted(self.owners[r]))
        if not pairs:
            return True
        buckets = tuple(b for b, _ in pairs)
        entry = self.groups.get(buckets)
        if entry is None:
            gid = allocate_id(VTAP_GROUP_BASE, GROUP_ID_MASK, stable, {g.group_id for g, _, _ in self.groups.values()})
            if gid != VTAP_GROUP_BASE | (stable & GROUP_ID_MASK):
                self.natural = False
                if self.rules:  # in place: the id would depend on the order of changes
                    return False
            entry = (GroupRule(gid, "all", buckets), 0, tuple(mac for _, mac in pairs))
        self.groups[buckets] = (entry[0], entry[1] + 1, entry[2])
        tap_cookie, priority, match = _rule_of(ctx.memo, r)
        flow = FlowRule(TABLE_TAP, priority, match, (GroupAction(entry[0].group_id),), TABLE_FORWARD, tap_cookie)
        self.rules[r] = (flow, buckets)
        self.cookies[tap_cookie] = self.cookies.get(tap_cookie, frozenset()) | {r}
        self._added.append(flow)
        self._touched.add(tap_cookie)
        return True

    def _drop_rule(self, r: Region) -> None:
        flow, buckets = self.rules.pop(r)
        group, n, macs = self.groups[buckets]
        if n == 1:
            del self.groups[buckets]
        else:
            self.groups[buckets] = (group, n - 1, macs)
        left = self.cookies[flow.cookie] - {r}
        if left:
            self.cookies[flow.cookie] = left
        else:
            del self.cookies[flow.cookie]
        self._dropped.append(flow)
        self._touched.add(flow.cookie)

    def _finish(self) -> None:
        """The part, from the last one and what changed since."""
        cookie_owners = dict(self.part.cookie_owners)
        for c in self._touched:
            if c in self.cookies:
                cookie_owners[c] = frozenset().union(*(self.owners[r] for r in self.cookies[c]))
            else:
                cookie_owners.pop(c, None)
        self.part = SwitchPart((self.part.flows - frozenset(self._dropped)) | frozenset(self._added),
                               frozenset(g for g, _, _ in self.groups.values()),
                               {(self.dpid, g.group_id): macs for g, _, macs in self.groups.values()}, cookie_owners)
        self._added, self._dropped, self._touched = [], [], set()
