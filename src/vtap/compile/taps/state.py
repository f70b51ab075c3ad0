"""Not a phase: the compilation's state. What the compiler makes (`PolicyStatus` per
policy, the `TapCompilation`), what it keeps between compiles (`TapMemo`, the last
compile as `Last`), and the records the phases hand each other (`Ready`, `Shared`,
`Ctx`).

Separate because every phase reads or fills these, and the controller holds them: the
one module the others all import, importing none of them (but for type names).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vtap.compile.pipeline import COOKIE_COPY, REG_PORT, TABLE_TRUNCATE, is_forward_group
from vtap.compile.regions import Region
from vtap.model.network import Host
from vtap.model.policy import Tap
from vtap.model.rules import FlowRule, GroupAction, SetField, SwitchRules
from vtap.model.state import PolicyStatus
from vtap.model.view import NetworkView

if TYPE_CHECKING:
    from vtap.compile.taps.buckets import RecoverySwitch, Static
    from vtap.compile.taps.matches import Directed
    from vtap.compile.taps.switch import RegionSwitch
    from vtap.model.capture import CaptureTarget


@dataclass
class TapCompilation:
    """Everything the TAP layer wants in the switches, and what became of each policy."""

    rules: dict[int, SwitchRules] = field(default_factory=dict)
    states: dict[int, PolicyStatus] = field(default_factory=dict)
    cookie_owners: dict[int, frozenset[int]] = field(default_factory=dict)  # tap rule cookie -> tap ids (capture jobs: -id)
    monitor_tags: dict[str, int] = field(default_factory=dict)  # monitor MAC -> copy VLAN id
    monitors: dict[int, tuple[str, ...]] = field(default_factory=dict)  # tap id -> its monitors' MACs (a pool's: those seen)
    deliveries: dict[str, tuple[int, int]] = field(default_factory=dict)  # monitor MAC -> (dpid, delivery group id)
    cut_deliveries: dict[tuple[int, int], str] = field(default_factory=dict)  # (dpid, cut delivery group) -> monitor MAC
    # (dpid, tap or send group) -> monitor MAC per bucket (None: a budgeted copy, counted by its send group)
    sent_buckets: dict[tuple[int, int], tuple[str | None, ...]] = field(default_factory=dict)
    meter_monitors: dict[tuple[int, int], tuple[int, str]] = field(default_factory=dict)  # (dpid, meter) -> (tap id, monitor MAC)
    capture_states: dict[int, PolicyStatus] = field(default_factory=dict)  # capture job id -> where its rules go, or why none

    def rules_of(self, tap_id: int) -> dict[int, SwitchRules]:
        """The flows and groups a policy takes part in, per switch."""
        return self.rules_of_many({tap_id})

    def rules_of_many(self, tap_ids: set[int]) -> dict[int, SwitchRules]:
        """The flows and groups any of these policies takes part in, per switch: one pass
        over the rules for all of them (a dry run of thousands)."""
        out: dict[int, SwitchRules] = {}
        mine = {c for c, who in self.cookie_owners.items() if not tap_ids.isdisjoint(who)}
        macs = {m for i in tap_ids for m in self.monitors.get(i, ())}
        tags = {self.monitor_tags[m] for m in macs if m in self.monitor_tags}
        for dpid, rules in self.rules.items():
            flows = {f for f in rules.flows if f.cookie in mine}
            groups = {a.group_id for f in flows for a in (*f.actions, *f.write) if isinstance(a, GroupAction)}
            flows |= {f for f in rules.flows if f.cookie == COOKIE_COPY and _tag_of(f) in tags}
            groups |= {self.deliveries[m][1] for m in macs if m in self.deliveries and self.deliveries[m][0] == dpid}
            # Budgeted copies: send groups lead to cut groups, whose ports table 6 serves.
            by_id = {g.group_id: g for g in rules.groups}
            todo = list(groups)
            while todo:
                group = by_id.get(todo.pop())
                for b in group.buckets if group else ():
                    for a in b.actions:
                        if isinstance(a, GroupAction) and not is_forward_group(a.group_id) and a.group_id not in groups:
                            groups.add(a.group_id)
                            todo.append(a.group_id)
            cut_ports = {a.value for g in groups if g in by_id for b in by_id[g].buckets for a in b.actions
                         if isinstance(a, SetField) and a.field == REG_PORT}
            flows |= {f for f in rules.flows if f.table == TABLE_TRUNCATE and dict(f.match).get(REG_PORT) in cut_ports}

            if flows:
                out[dpid] = SwitchRules(frozenset(flows), frozenset(g for g in rules.groups if g.group_id in groups))
        return out


def _tag_of(flow: FlowRule) -> int | None:
    v = dict(flow.match).get("vlan_vid")
    return v & 0xFFF if isinstance(v, int) else None


@dataclass(frozen=True)
class Ready:
    """A policy that can be compiled: its monitor (or a pool member) and its tap points are
    known. `monitors`: by pool position, None where not seen yet (one for a single monitor)."""

    tap: Tap
    monitors: tuple[Host | None, ...]
    points: list[tuple[int, Directed]]

    @property
    def seen(self) -> list[Host]:
        return [h for h in self.monitors if h is not None]


class TapMemo:
    """What a compile learned that the next one may reuse: the expensive parts (address
    parsing, a region's rule and buckets, a switch's closure) keyed by everything they
    depend on, so that a change recomputes only the parts it touches — the policy's own
    matches, the regions and switches it is in — and the rest is looked up. Keys hold
    every input, so a compile with a memo gives exactly what a compile without one gives
    (`tests/unit/test_incremental.py` checks it on random sequences of changes).
    Entries not used by the latest compile are dropped, so it holds one network's worth."""

    def __init__(self) -> None:
        self._old: dict = {}
        self._new: dict = {}
        self._view: NetworkView | None = None
        self._token = 0
        # kind -> policy id -> (view token, spec, part): by kind, then id, not by (kind, id)
        # (a key tuple per policy and kind, 1.7 MiB at 10,000 policies).
        self._policies_old: dict[str, dict[int, tuple]] = {}
        self._policies_new: dict[str, dict[int, tuple]] = {}
        self.last: Last | None = None  # the latest compile, for the next one to change in place
        self.in_place = 0  # compiles that changed the last one in place
        self.desired: dict = {}  # dpid -> (base, TAP rules, meters, their union): compile_network's last

    def token(self, view: NetworkView) -> int:
        """A number for this view, new whenever the view is another one: parts that read
        the view (hosts, paths) are keyed by it, so a new view recomputes them. Another
        view object with the same value keeps the number (a switch that reconnects, links
        that LLDP proves again: the controller makes a new view object for each event,
        and at 100,000 policies each new number cost a whole compile of 20 s)."""
        if view is not self._view:
            if self._view is None or view != self._view:
                self._token += 1
            self._view = view
        return self._token

    def get(self, key, make):
        if key in self._new:
            return self._new[key]
        value = self._old[key] if key in self._old else make()
        self._new[key] = value
        return value

    def policy(self, kind: str, token: int, ident: int, spec, make):
        """`get` for one policy's parts: keyed by its id, kept with the spec and view token
        they were made from (a policy's spec is usually the very object of last time, so
        this avoids hashing every spec on every compile)."""
        new = self._policies_new.setdefault(kind, {})
        entry = new.get(ident) or self._policies_old.get(kind, {}).get(ident)
        if entry is None or entry[0] != token or not (entry[1] is spec or entry[1] == spec):
            entry = (token, spec, make())
        new[ident] = entry
        return entry[2]

    def done(self) -> None:
        self._old, self._new = self._new, {}
        self._policies_old, self._policies_new = self._policies_new, {}

    def keep(self) -> None:
        """After a compile that changed the last one in place: what it did not touch is
        still in use, so nothing is dropped (but the parts of removed policies)."""
        self._old.update(self._new)
        self._new = {}
        for kind, entries in self._policies_new.items():
            self._policies_old.setdefault(kind, {}).update(entries)
        self._policies_new = {}

    def put(self, key, value):
        """`value` under `key` for this compile (in place of what was there)."""
        self._new[key] = value
        return value

    def forget_policy(self, ident: int) -> None:
        for entries in (*self._policies_old.values(), *self._policies_new.values()):
            entries.pop(ident, None)


def once(made: dict, value):
    """`value`, or the equal one put in `made` before: one object for all of them."""
    return made.setdefault(value, value)


@dataclass(frozen=True)
class Shared:
    """What every switch's part reads besides the view and its owners' inputs: the cut
    groups' ids and tap switch counts (compile/budget.py), each policy's copy target."""

    targets: dict[int, tuple]
    cut_ids: dict[tuple[str, object], int]
    tap_switches: dict[int, int]  # tap id -> how many switches tap it


@dataclass(frozen=True, eq=False)
class Ctx:
    """What phase 5 reads, besides a switch's matches.

    It reaches the memo through a weak reference: the memo keeps the last compile and
    its Ctx (`Last`) for the next, and a strong one back made every memo a reference
    cycle that only the collector frees. Frozen with the rest after a compile, a
    throwaway memo's (a dry run's, a bulk apply's plan: a whole compile each) stayed
    until the next thaw, minutes later."""

    view: NetworkView
    taps_by_id: dict[int, Tap]
    monitor_of: dict[int, tuple[Host | None, ...]]
    static: dict[int, Static]
    comp: TapCompilation
    forward: dict[int, int]
    memo: TapMemo
    budget: Shared
    captures: dict[int, CaptureTarget]

    def __post_init__(self) -> None:
        object.__setattr__(self, "memo", weakref.proxy(self.memo))


@dataclass(frozen=True)
class Last:
    """A compile as the next one may change it."""

    token: int
    taps: dict[int, Tap]
    captures: tuple
    comp: TapCompilation
    points: dict[int, tuple[tuple[int, Region], ...]]  # compiled policy -> its (tap switch, region)s
    seen: dict[int, tuple[str, ...]]  # ready vlan-transport policy -> its monitors seen
    vlan_use: dict[str, int]  # monitor -> policies copying to it over VLAN (those have ids)
    monitor_use: dict[str, int]  # monitor -> compiled policies naming it (those have delivery groups)
    ctx: Ctx
    parts: dict[int, RegionSwitch]  # tap switches
    recovery: dict[int, RecoverySwitch]  # monitors' switches
    cookie_dpids: dict[int, frozenset[int]]  # tap rule cookie -> tap switches whose part has it
    recovery_dpids: dict[int, frozenset[int]]  # recovery rule cookie -> monitors' switches with it
    eligible: bool

