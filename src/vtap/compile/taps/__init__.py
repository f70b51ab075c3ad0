"""TAP compilation: policies + network view -> tap, copy and recovery rules per switch.

The successor of the seed's Algorithm 1. Where the seed taps at the destination's edge
switch, vtap taps where a packet *enters* the fabric from a host (table 0 sends only
host-originated frames to table 1; transit skips it). Every packet enters exactly
once, so it is copied exactly once per monitor, whatever its path and direction, and
a copy in transit is never copied again.

At the tap point a table-1 rule per region (see `regions`) applies a group of type
ALL, one bucket per monitor, then hands the original to forwarding untouched. A
bucket takes its copy to the monitor by one of six transports (`TapSpec.transport`):

- `vlan` (default): push an outer 802.1Q tag from a reserved range, one id per
  monitor; table 0 of every switch sends frames carrying it to table 3, which
  forwards them hop by hop toward the monitor's edge switch (through the forwarding
  groups of base forwarding, so copies fail over with the originals), where the tag
  is popped.
  Real traffic cannot be confused with a copy: hosts' frames with reserved ids are
  dropped at the edge, and a copy is recognised by its tag alone.
- `rewrite` (the seed's): set the copy's destination MAC (and IP) to the monitor's,
  let it travel as traffic to the monitor, and restore the original destination with
  a recovery rule at the monitor's edge switch. Ambiguous: real traffic from the
  tapped source to the monitor that matches the same fields is "restored" too.
- `gre`, `erspan`, `vxlan`, `geneve` (remote collectors, compile/tunnels.py): the
  copy, byte for byte, into a tunnel port of the tap switch, keyed by the policy; the
  outer packet crosses the fabric as ordinary traffic and is never copied again.

Copy budgets (cut, sampled, rate-limited, spread over a pool: compile/budget.py) take
the `vlan` transport: their bucket hands the copy to tables 4-6.

When the monitor hangs off the tap switch itself, the bucket hands the copy over there.

Capture jobs take part like policies whose monitor is the controller: their matches
join the regions (as negative owner ids), and a region they own gets one more action,
`controller(max_len, meter)`: the packet's first bytes go to the controller through the
capture meter, the original and its copies untouched. The region rule's cookie tells
the controller which jobs a packet-in belongs to.

Every copy reaches its monitor through the monitor's *delivery group* at its edge switch:
a fast-failover group with one bucket watching the monitor's port. Its bucket counter
counts the copies handed to a live port, the tap groups' buckets count the copies sent
toward the monitor, and the difference is what did not arrive (see control/delivery.py).

This package runs the compile's six phases in order (`compile_taps`, here), one module
per part, so that each can be read alone:

- state.py: what the phases fill and hand each other; the memo kept between compiles.
- matches.py: a policy's match as directed matches; a region as OXM fields.
- points.py: phases 1-4: which policies can be compiled, copy VLAN ids, tap points per
  switch (capture jobs' too), delivery groups.
- switch.py: phase 5 per tap switch: regions, their rules and tap groups, budgets.
- buckets.py: what a tap group's buckets do per transport; recovery rules; phase 6,
  the copy VLAN paths.
- closed.py: matches closed under intersection, kept region by region (tap and recovery
  rules alike), for switch.py, buckets.py and the in-place path.
- inplace.py: not a phase: the last compilation changed in place for a few policies.
"""

from __future__ import annotations

from collections.abc import Mapping

from vtap.compile.forwarding import forward_group_ids
from vtap.compile.regions import Region
from vtap.compile.taps.buckets import copy_paths
from vtap.compile.taps.inplace import compile_delta, in_place_candidate
from vtap.compile.taps.points import capture_points, copy_vlan_ids, delivery_groups, policy_states, tap_points_per_switch
from vtap.compile.taps.state import Last, TapCompilation, TapMemo, once
from vtap.compile.taps.switch import regions_groups_recovery
from vtap.model.capture import CaptureTarget
from vtap.model.policy import Tap
from vtap.model.rules import Meter, SwitchRules
from vtap.model.view import NetworkView
from vtap.model.state import PolicyStatus

__all__ = ["TapCompilation", "TapMemo", "PolicyStatus", "compile_taps", "in_place_candidate"]


def compile_taps(view: NetworkView, taps: list[Tap] | Mapping[int, Tap], captures: list[CaptureTarget] = (),
                 memo: TapMemo | None = None, changed: set[int] | None = None, *, whole: bool = True) -> TapCompilation | None:
    """All TAP (and capture) rules for the network (pure, deterministic), in six phases.
    With `memo` (kept by the caller between compiles), unchanged parts are reused, and a
    few changed policies change the last compilation in place; `changed` (the ids that
    may have changed since the last compile with this memo) spares looking for them.
    With `whole=False`, only the in-place path: None when only a whole compile can say
    (the caller then runs one, maybe off its event loop)."""
    by_id = taps if isinstance(taps, Mapping) else {t.id: t for t in taps}
    memo = memo or TapMemo()
    comp = compile_delta(view, by_id, captures, memo, changed)
    if comp is not None:
        memo.keep()
        memo.in_place += 1
        return comp
    if not whole:
        return None
    memo.last = None
    try:
        return _compile(view, list(by_id.values()), captures, memo)
    finally:
        memo.done()


def _compile(view: NetworkView, taps: list[Tap], captures: list[CaptureTarget], memo: TapMemo) -> TapCompilation:
    """The whole compile: the six phases in order (points.py 1-4, switch.py 5, buckets.py
    6), then the last compile kept in `memo` for the next one to change in place."""
    comp = TapCompilation()
    ready = policy_states(view, taps, comp, memo)
    comp.monitor_tags = copy_vlan_ids(ready)
    points: dict[int, tuple[tuple[int, Region], ...]] = {}
    per_switch = tap_points_per_switch(view, ready, comp, memo, points)
    capture_points(view, captures, comp, per_switch, memo)
    groups = delivery_groups(view, comp)
    forward = forward_group_ids(view)
    meters: dict[int, set[Meter]] = {}
    members = {r.tap.id: r.monitors for r in ready}
    flows, parts, ctx, recovery = regions_groups_recovery(view, per_switch, {r.tap.id: r.tap for r in ready}, comp, groups,
                                                          {c.id: c for c in captures}, forward, memo, members, meters)
    copy_paths(view, comp, flows, forward)
    for dpid in set(flows) | set(groups) | set(meters):
        comp.rules[dpid] = SwitchRules(frozenset(flows.get(dpid, ())), frozenset(groups.get(dpid, ())),
                                       frozenset(meters.get(dpid, ())))
    seen = {r.tap.id: tuple(h.mac for h in r.seen) for r in ready if r.tap.spec.transport == "vlan"}
    vlan_use = _use(seen.values())
    # Changed in place next time only where that is exactly what a whole compile gives:
    # every monitor with a copy VLAN id (the ids depend on all of them).
    eligible = len(vlan_use) == len(comp.monitor_tags)
    memo.last = Last(memo.token(view), {t.id: t for t in taps}, tuple(captures), comp, points, seen, vlan_use,
                     _use(comp.monitors.values()), ctx, parts, recovery,
                     _places({d: sw.part.cookie_owners for d, sw in parts.items()}),
                     _places({d: sw.cookies for d, sw in recovery.items()}), eligible)
    return comp


def _places(cookies_per_switch: dict[int, dict]) -> dict[int, frozenset[int]]:
    """Which switches have each cookie (a few sets of switches, each made once: most
    cookies are at the same two or three)."""
    out: dict[int, set[int]] = {}
    for dpid, cookies in cookies_per_switch.items():
        for c in cookies:
            out.setdefault(c, set()).add(dpid)
    made: dict[frozenset[int], frozenset[int]] = {}
    return {c: once(made, frozenset(d)) for c, d in out.items()}


def _use(mac_lists) -> dict[str, int]:
    """How many policies name each monitor."""
    out: dict[str, int] = {}
    for macs in mac_lists:
        for m in macs:
            out[m] = out.get(m, 0) + 1
    return out
