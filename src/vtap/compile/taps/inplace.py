"""The in-place path: the last compilation changed for the few policies that changed
since, instead of a whole compile.

A policy change touches the regions its matches overlap at its tap switches, nothing
else: when the view is the same object and the set of monitors stays, the last
compilation's dicts are changed in place and only those regions are redone.
`tests/unit/test_incremental.py` checks the result against whole compiles.

Separate because it is an optimisation beside the phases, not one of them: it reuses
what they made (`Last`, the switches' `PlainSwitch`es) and must give exactly what they
give; only plain policies (VLAN transport, no budget) take it.
"""

from __future__ import annotations

from collections.abc import Mapping

from vtap.compile.regions import Region, RegionIndex
from vtap.compile.taps.buckets import Static
from vtap.compile.taps.points import policy_points, policy_state
from vtap.compile.taps.state import Ctx, Last, Ready, TapCompilation, TapMemo
from vtap.compile.taps.switch import PlainSwitch, part_of, plain
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
    None when only a whole compile can say: another view, other capture jobs, too many
    changes, a changed policy that is not plain, a monitor set that grows or shrinks
    (copy VLAN ids and delivery groups are per monitor), a switch part that cannot.

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
    ctx = Ctx(view, by_id, last.ctx.monitor_of, last.ctx.static, comp, last.ctx.forward, memo, last.ctx.budget)
    touched: set[int] = set()
    for d, regs in sorted(edits.items()):
        if not _redo_switch(ctx, last, d, regs, touched):
            return None
    _recount_cookies(comp, last.parts, last.cookie_dpids, touched)
    memo.last = Last(last.token, last.taps, last.captures, comp, last.points, last.seen, last.vlan_use, last.monitor_use,
                     ctx, last.parts, last.cookie_dpids, True)
    return comp


def _changed(last: Last, by_id: Mapping[int, Tap], hint: set[int] | None) -> list[int] | None:
    """The policies that changed since the last compile (`hint`: those that may have), or
    None when they are too many or one of them, before or after, is not plain."""
    if hint is None:
        changed = [i for i, t in by_id.items() if last.taps.get(i) is not t] + [i for i in last.taps if i not in by_id]
    else:
        changed = [i for i in hint if last.taps.get(i) is not by_id.get(i)]
    if len(changed) > DELTA_MAX or any(t is not None and not plain(t.spec) for i in changed
                                       for t in (last.taps.get(i), by_id.get(i))):
        return None
    return changed


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
    points, seen = last.points, last.seen
    static, monitor_of, targets = last.ctx.static, last.ctx.monitor_of, last.ctx.budget.targets
    for d, reg in points.pop(i, ()):
        edits.setdefault(d, {}).setdefault(reg, (set(), set()))[0].add(i)
    _count(last.vlan_use, seen.pop(i, ()), -1)
    _count(last.monitor_use, comp.monitors.pop(i, ()), -1)
    for d in (comp.states, static, monitor_of, targets):
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
    macs = seen[i] = tuple(h.mac for h in r.seen)
    _count(last.vlan_use, macs, 1)
    comp.monitors[i] = macs
    _count(last.monitor_use, macs, 1)
    regions, comp.states[i] = memo.policy("points", last.token, i, tap.spec, lambda: policy_points(view, r, memo))
    points[i] = tuple(dict.fromkeys(regions))
    for d, reg in points[i]:
        edits.setdefault(d, {}).setdefault(reg, (set(), set()))[1].add(i)
    static[i] = memo.policy("static", last.token, i, tap.spec, lambda: Static.of(tap, r.monitors))
    monitor_of[i], targets[i] = r.monitors, static[i].target(r.monitors)


def _redo_switch(ctx: Ctx, last: Last, d: int, regs: dict[Region, tuple[set[int], set[int]]], touched: set[int]) -> bool:
    """Switch `d`'s part with the owners of its regions `regs` changed, and the
    compilation's rules and counters' bookkeeping with it; the cookies whose owners may
    have changed added to `touched`. False when the part cannot be changed in place."""
    comp, parts, cookie_dpids = ctx.comp, last.parts, last.cookie_dpids
    before = parts.get(d) or PlainSwitch(d, {}, RegionIndex(), RegionIndex(), {}, {}, {})
    if not isinstance(before, PlainSwitch) or d not in comp.rules:
        return False
    changes = {}
    for r, (out, into) in regs.items():
        had = before.matches.get(r, frozenset())
        now = (had - out) | into
        if now != had or out & into:  # same owners, but one of them copies elsewhere now
            changes[r] = frozenset(now)
    after = before.update(ctx, changes) if changes else before
    if after is None:
        return False
    was, new = before.part, after.part
    rules = comp.rules[d]
    comp.rules[d] = SwitchRules((rules.flows - was.flows) | new.flows, (rules.groups - was.groups) | new.groups, rules.meters)
    for key in was.sent_buckets:
        del comp.sent_buckets[key]
    comp.sent_buckets.update(new.sent_buckets)
    for c in was.cookie_owners.keys() - new.cookie_owners.keys():
        cookie_dpids[c] = cookie_dpids[c] - {d}
    for c in new.cookie_owners.keys() - was.cookie_owners.keys():
        cookie_dpids[c] = cookie_dpids.get(c, frozenset()) | {d}
    touched.update(c for c, _ in was.cookie_owners.items() ^ new.cookie_owners.items())
    parts[d] = after
    return True


def _recount_cookies(comp: TapCompilation, parts: dict, cookie_dpids: dict[int, frozenset[int]], touched: set[int]) -> None:
    """The owners of each touched tap rule cookie, from the switches whose parts have it."""
    for c in touched:
        if cookie_dpids.get(c):
            comp.cookie_owners[c] = frozenset().union(*(part_of(parts[d]).cookie_owners[c] for d in cookie_dpids[c]))
        else:
            cookie_dpids.pop(c, None)
            comp.cookie_owners.pop(c, None)
