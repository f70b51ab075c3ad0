"""The in-place path: the last compilation changed for the few policies that changed
since, instead of a whole compile.

A policy change touches the regions its matches overlap at its tap switches, and the
recovery rules those regions want at the monitors' switches, nothing else: when the
view is the same object and the set of monitors stays, the last compilation's dicts
are changed in place and only those regions are redone, whatever the policies' kind
(plain, budgeted, tunnelled, rewrite, pooled). `tests/unit/test_incremental.py` checks
the result against whole compiles.

Separate because it is an optimisation beside the phases, not one of them: it reuses
what they made (`Last`, the switches' `RegionSwitch`es and `RecoverySwitch`es) and
must give exactly what they give.
"""

from __future__ import annotations

from collections.abc import Mapping

from vtap.compile.regions import Region
from vtap.compile.taps.buckets import RecoverySwitch, Static
from vtap.compile.taps.closed import Closed
from vtap.compile.taps.points import policy_points, policy_state
from vtap.compile.taps.state import Ctx, Last, Ready, TapCompilation, TapMemo
from vtap.compile.taps.switch import RegionSwitch
from vtap.model.capture import CaptureTarget
from vtap.model.policy import Tap
from vtap.model.rules import SwitchRules
from vtap.model.view import NetworkView
from vtap.model.state import PolicyStatus

# More changed policies than this at once: a whole compile (bulk applies). An in-place
# change costs ~0.7 ms a policy and grows faster than the count (the controller runs it
# on its event loop: 64 take ~50 ms); a whole compile ~0.1 ms a policy (the controller
# runs it in a thread of its own).
DELTA_MAX = 64


def in_place_candidate(view: NetworkView, captures: list[CaptureTarget], memo: TapMemo) -> bool:
    """Whether the last compile may be changed in place at all: the same view object,
    the same capture jobs, a last compile that allows it."""
    last = memo.last
    return last is not None and last.eligible and memo.token(view) == last.token and tuple(captures) == last.captures


def compile_delta(view: NetworkView, by_id: Mapping[int, Tap], captures: list[CaptureTarget], memo: TapMemo,
                  hint: set[int] | None) -> TapCompilation | None:
    """The last compilation changed in place for the policies that changed since, or
    None when only a whole compile can say:

    - another view, or other capture jobs: what every policy reads changed;
    - more than `DELTA_MAX` changed policies: a whole compile is cheaper then;
    - a last compile where some monitor got no copy VLAN id (ids depend on all monitors);
    - a monitor set that grows or shrinks: copy VLAN ids, delivery groups and cut group
      ids are per monitor, and the copy paths of every switch with them;
    - a touched tap switch or monitor's switch with errors, before or after (a closure
      too large, a budget's group or meter ids taken): an error sets the state of
      policies that did not change, by an order of switches and policies;
    - budget ids that meet after the change (the same).

    In place means the last compile's dicts are changed, not copied (copies of
    10,000-entry dicts at every change keep the garbage collector busy): the result is
    a new TapCompilation object around them, so that whoever holds the last one and
    checks `is` sees a new compile, and whoever reads the last one's dicts reads the
    new one's. A None part-way leaves those dicts part-changed and `memo.last` None, to
    be thrown away (the whole compile that follows makes them anew)."""
    last = memo.last
    if not in_place_candidate(view, captures, memo):
        return None
    changed = _changed(last, by_id, hint)
    if changed is None:
        return None
    old = last.comp
    comp = TapCompilation(old.rules, old.states, old.cookie_owners, old.monitor_tags, old.monitors, old.deliveries,
                          old.cut_deliveries, old.sent_buckets, old.meter_monitors, old.capture_states)
    vlan_before, monitors_before = set(last.vlan_use), set(last.monitor_use)
    memo.last = None  # until it is whole again
    edits: dict[int, dict[Region, tuple[set[int], set[int]]]] = {}  # dpid -> region -> (ids out, ids in)
    for i in changed:
        _redo_policy(view, memo, last, comp, i, by_id.get(i), edits)
    if last.vlan_use.keys() != vlan_before or last.monitor_use.keys() != monitors_before:
        return None
    ctx = Ctx(view, by_id, last.ctx.monitor_of, last.ctx.static, comp, last.ctx.forward, memo, last.ctx.budget,
              last.ctx.captures)
    touched: set[int] = set()
    recovery: dict[int, tuple[list, list]] = {}  # monitor's switch -> recovery entries (out, in)
    for d, regs in sorted(edits.items()):
        if not _redo_switch(ctx, last, d, regs, touched, recovery):
            return None
    for d, (out, into) in sorted(recovery.items()):
        if not _redo_recovery(comp, last, d, out, into, touched):
            return None
    _recount_cookies(comp, last, touched)
    memo.last = Last(last.token, last.taps, last.captures, comp, last.points, last.seen, last.vlan_use, last.monitor_use,
                     ctx, last.parts, last.recovery, last.cookie_dpids, last.recovery_dpids, True)
    return comp


def _changed(last: Last, by_id: Mapping[int, Tap], hint: set[int] | None) -> list[int] | None:
    """The policies that changed since the last compile (`hint`: those that may have), or
    None when they are too many."""
    if hint is None:
        changed = [i for i, t in by_id.items() if last.taps.get(i) is not t] + [i for i in last.taps if i not in by_id]
    else:
        changed = [i for i in hint if last.taps.get(i) is not by_id.get(i)]
    return None if len(changed) > DELTA_MAX else changed


def _count(use: dict[str, int], macs, n: int) -> None:
    for m in macs:
        use[m] = use.get(m, 0) + n
        if not use[m]:
            del use[m]


def _redo_policy(view: NetworkView, memo: TapMemo, last: Last, comp: TapCompilation, i: int, tap: Tap | None,
                 edits: dict[int, dict[Region, tuple[set[int], set[int]]]]) -> None:
    """Policy `i` (`tap`: now; None: deleted) taken out of the last compile and put back
    as it is now (phases 1 and 3 for it alone); the regions it leaves and enters, per
    switch, noted in `edits`."""
    points, seen, budget = last.points, last.seen, last.ctx.budget
    static, monitor_of = last.ctx.static, last.ctx.monitor_of
    for d, reg in points.pop(i, ()):
        edits.setdefault(d, {}).setdefault(reg, (set(), set()))[0].add(i)
    _count(last.vlan_use, seen.pop(i, ()), -1)
    _count(last.monitor_use, comp.monitors.pop(i, ()), -1)
    for d in (comp.states, static, monitor_of, budget.targets, budget.tap_switches):
        d.pop(i, None)
    if tap is None:
        del last.taps[i]
        memo.forget_policy(i)
        return
    last.taps[i] = tap
    outcome = memo.policy("state", last.token, i, tap.spec, lambda: policy_state(view, tap, memo))
    if isinstance(outcome, PolicyStatus):
        comp.states[i] = outcome
        return
    r = Ready(tap, *outcome)
    macs = tuple(h.mac for h in r.seen)
    if tap.spec.transport == "vlan":
        seen[i] = macs
        _count(last.vlan_use, macs, 1)
    comp.monitors[i] = () if tap.spec.tunnel else macs  # a tunnel has no delivery group
    _count(last.monitor_use, comp.monitors[i], 1)
    regions, comp.states[i] = memo.policy("points", last.token, i, tap.spec, lambda: policy_points(view, r, memo))
    points[i] = tuple(dict.fromkeys(regions))
    for d, reg in points[i]:
        edits.setdefault(d, {}).setdefault(reg, (set(), set()))[1].add(i)
    if points[i]:
        budget.tap_switches[i] = len({d for d, _ in points[i]})
    static[i] = memo.policy("static", last.token, i, tap.spec, lambda: Static.of(tap, r.monitors))
    monitor_of[i], budget.targets[i] = r.monitors, static[i].target(r.monitors)


def _redo_switch(ctx: Ctx, last: Last, d: int, regs: dict[Region, tuple[set[int], set[int]]], touched: set[int],
                 recovery: dict[int, tuple[list, list]]) -> bool:
    """Tap switch `d` with the owners of its matches `regs` changed, and the
    compilation's rules and counters' bookkeeping with it; the cookies whose owners may
    have changed added to `touched`, the recovery entries its regions dropped and added
    to `recovery`. False when the switch cannot be changed in place."""
    comp, parts, cookie_dpids = ctx.comp, last.parts, last.cookie_dpids
    before = parts.get(d) or RegionSwitch(d)
    changes = {}
    for r, (out, into) in regs.items():
        had = before.closed.matches.get(r, frozenset())
        now = (had - out) | into
        if now != had or out & into:  # same owners, but one of them copies elsewhere now
            changes[r] = frozenset(now)
    if not changes:
        return True
    was = before.part
    after = before.update(ctx, changes)
    if after is None:
        return False
    new = after.part
    # What changed, not the switch's whole sets: O(the change), not O(its rules).
    _change_rules(comp, d, *after.rule_change, was.meters, new.meters)
    for key in was.sent_buckets.keys() - new.sent_buckets.keys():
        del comp.sent_buckets[key]
    comp.sent_buckets.update(new.sent_buckets)
    for key in was.meter_monitors.keys() - new.meter_monitors.keys():
        del comp.meter_monitors[key]
    comp.meter_monitors.update(new.meter_monitors)
    _move_changed_cookies(cookie_dpids, d, after.cookie_change, touched)
    for m, entry in after.recovery_change[0]:
        recovery.setdefault(m, ([], []))[0].append(entry)
    for m, entry in after.recovery_change[1]:
        recovery.setdefault(m, ([], []))[1].append(entry)
    parts[d] = after
    return True


def _redo_recovery(comp: TapCompilation, last: Last, d: int, out: list, into: list, touched: set[int]) -> bool:
    """Monitor's switch `d`'s recovery rules with the entries `out` gone and `into`
    come; False when they cannot be changed in place."""
    sw = last.recovery.get(d)
    if sw is None:
        sw = last.recovery[d] = RecoverySwitch(d, {}, Closed.of({}), {})
    before = dict(sw.cookies)
    change = sw.update(comp, out, into)
    if change is None:
        return False
    dropped, added, cookies = change
    _change_rules(comp, d, frozenset(dropped), frozenset(added))
    _move_cookies(last.recovery_dpids, d, before, sw.cookies, touched)
    touched |= cookies
    if not sw.count:
        del last.recovery[d]
    return True


def _change_rules(comp: TapCompilation, d: int, flows_out=frozenset(), flows_in=frozenset(), groups_out=frozenset(),
                  groups_in=frozenset(), meters_out=frozenset(), meters_in=frozenset()) -> None:
    """Switch `d`'s rules with these taken out and put in. Every switch has an entry
    while there are copy VLAN ids (copy paths on every switch), else only one with rules,
    as the whole compile makes them."""
    rules = comp.rules.get(d, SwitchRules())
    rules = SwitchRules((rules.flows - flows_out) | flows_in, (rules.groups - groups_out) | groups_in,
                        (rules.meters - meters_out) | meters_in)
    if rules.flows or rules.groups or rules.meters or comp.monitor_tags:
        comp.rules[d] = rules
    else:
        comp.rules.pop(d, None)


def _move_cookies(places: dict[int, frozenset[int]], d: int, was: Mapping[int, frozenset], now: Mapping[int, frozenset],
                  touched: set[int]) -> None:
    """Switch `d` taken out of the places of the cookies it no longer has, put in those of
    the cookies it has anew; the cookies whose owners may have changed added to `touched`."""
    changed = {c: (was.get(c), now.get(c)) for c in was.keys() | now.keys() if was.get(c) != now.get(c)}
    _move_changed_cookies(places, d, changed, touched)


def _move_changed_cookies(places: dict[int, frozenset[int]], d: int, changed: Mapping[int, tuple], touched: set[int]) -> None:
    """As `_move_cookies`, from the cookies whose owners changed at switch `d`: cookie ->
    (owners before, after), None where it had or has none."""
    for c, (had, has) in changed.items():
        if has is None:
            places[c] = places[c] - {d}
        elif had is None:
            places[c] = places.get(c, frozenset()) | {d}
        touched.add(c)


def _recount_cookies(comp: TapCompilation, last: Last, touched: set[int]) -> None:
    """The owners of each touched cookie, from the tap switches and monitors' switches
    that have it."""
    for c in touched:
        owners = [last.parts[d].part.cookie_owners[c] for d in last.cookie_dpids.get(c, ())]
        owners += [last.recovery[d].cookie_owners(c) for d in last.recovery_dpids.get(c, ())]
        if owners:
            comp.cookie_owners[c] = frozenset().union(*owners)
        else:
            comp.cookie_owners.pop(c, None)
        for places in (last.cookie_dpids, last.recovery_dpids):
            if c in places and not places[c]:
                del places[c]
