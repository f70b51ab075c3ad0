"""TAP compilation: policies + network view -> tap, copy and recovery rules per switch.

The successor of the seed's Algorithm 1. Where the seed taps at the destination's edge
switch, vtap taps where a packet *enters* the fabric from a host (table 0 sends only
host-originated frames to table 1; transit skips it). Every packet enters exactly
once, so it is copied exactly once per monitor, whatever its path and direction, and
a copy in transit is never copied again.

At the tap point a table-1 rule per region (see `regions`) applies a group of type
ALL, one bucket per monitor, then hands the original to forwarding untouched. A
bucket takes its copy to the monitor by one of two transports:

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
"""

from __future__ import annotations

import functools
import ipaddress
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from vtap.compile.budget import BudgetPart, budget_part, cut_group_ids, member_live
from vtap.compile.forwarding import forward_group_ids, forward_groups
from vtap.compile.tunnels import endpoint_rule, key_problem, tunnel_bucket, tunnel_key, tunnel_kind
from vtap.compile.pipeline import (
    COPY_VID_FIRST,
    COPY_VID_LAST,
    METER_CAPTURE,
    COOKIE_COPY,
    REG_PORT,
    TABLE_TRUNCATE,
    is_forward_group,
    DELIVERY_GROUP_BASE,
    GROUP_ID_MASK,
    OFPVID_PRESENT,
    PRIO_COPY,
    PRIO_COPY_IN,
    PRIO_RECOVERY_BASE,
    PRIO_TAP_BASE,
    TABLE_CLASSIFY,
    TABLE_COPY,
    TABLE_FORWARD,
    TABLE_TAP,
    VTAP_GROUP_BASE,
    Owner,
    cookie,
)
from vtap.compile.regions import WIDTHS, Region, RegionIndex, closure, owners, reclose, region, specificity
from vtap.model.capture import CaptureTarget
from vtap.model.network import Host, is_mac
from vtap.model.policy import MatchSpec, Tap, TapSpec, is_single_address
from vtap.model.state import PolicyState
from vtap.model.rules import (
    Action,
    Bucket,
    FlowRule,
    GroupAction,
    GroupRule,
    Output,
    PopVlan,
    PushVlan,
    SetField,
    Meter,
    SwitchRules,
    ToController,
)
from vtap.model.view import NetworkView

@dataclass(frozen=True)
class TapState:
    """What the compiler made of one policy, and the switches it concerns."""

    state: PolicyState
    reason: str = ""
    switches: frozenset[int] = frozenset()


@dataclass
class TapCompilation:
    """Everything the TAP layer wants in the switches, and what became of each policy."""

    rules: dict[int, SwitchRules] = field(default_factory=dict)
    states: dict[int, TapState] = field(default_factory=dict)
    cookie_owners: dict[int, frozenset[int]] = field(default_factory=dict)  # tap rule cookie -> tap ids (capture jobs: -id)
    monitor_tags: dict[str, int] = field(default_factory=dict)  # monitor MAC -> copy VLAN id
    monitors: dict[int, tuple[str, ...]] = field(default_factory=dict)  # tap id -> its monitors' MACs (a pool's: those seen)
    deliveries: dict[str, tuple[int, int]] = field(default_factory=dict)  # monitor MAC -> (dpid, delivery group id)
    cut_deliveries: dict[tuple[int, int], str] = field(default_factory=dict)  # (dpid, cut delivery group) -> monitor MAC
    # (dpid, tap or send group) -> monitor MAC per bucket (None: a budgeted copy, counted by its send group)
    sent_buckets: dict[tuple[int, int], tuple[str | None, ...]] = field(default_factory=dict)
    meter_monitors: dict[tuple[int, int], tuple[int, str]] = field(default_factory=dict)  # (dpid, meter) -> (tap id, monitor MAC)
    capture_states: dict[int, TapState] = field(default_factory=dict)  # capture job id -> where its rules go, or why none

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


def _mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def _int_mac(value: int) -> str:
    h = f"{value:012x}"
    return ":".join(h[i : i + 2] for i in range(0, 12, 2))


@functools.lru_cache(maxsize=65536)  # policies name the same few addresses over and over
def _ip_constraint(text: str) -> tuple[str, tuple[int, int]]:
    net = ipaddress.ip_network(text, strict=False)
    fam = "ipv4" if net.version == 4 else "ipv6"
    return fam, (int(net.network_address), net.prefixlen)


@dataclass(frozen=True)
class _Directed:
    """One direction of a policy: its match (without in_port) and the host it comes from."""

    tap_id: int
    constraints: tuple[tuple[str, tuple[int, int]], ...]
    source_mac: str | None
    source_ip: str | None


def _directed(ident: int, s: MatchSpec) -> list[_Directed]:
    out = []
    for e in s.directions():
        c: dict[str, tuple[int, int]] = {}
        if e.src_mac:
            c["eth_src"] = (_mac_int(e.src_mac), 48)
        if e.dst_mac:
            c["eth_dst"] = (_mac_int(e.dst_mac), 48)
        if s.ip_version:
            c["eth_type"] = (0x0800 if s.ip_version == 4 else 0x86DD, 16)
        for end, ip in (("src", e.src_ip), ("dst", e.dst_ip)):
            if ip:
                fam, value = _ip_constraint(ip)
                c[f"{fam}_{end}"] = value
        if s.ip_proto is not None:
            c["ip_proto"] = (s.ip_proto, 8)
        if s.vlan_id is not None:
            c["vlan_vid"] = (OFPVID_PRESENT | s.vlan_id, 13)
        if e.src_port is not None:
            c["l4_src"] = (e.src_port, 16)
        if e.dst_port is not None:
            c["l4_dst"] = (e.dst_port, 16)
        single_ip = e.src_ip if e.src_ip and is_single_address(e.src_ip) else None
        out.append(_Directed(ident, tuple(sorted(c.items())), e.src_mac, single_ip))
    return out


def _region_to_match(r: Region) -> tuple:
    """OXM fields for a region (l4 ports named after the protocol)."""
    proto = next((v for f, v, _ in r if f == "ip_proto"), None)
    l4 = {6: "tcp", 17: "udp", 132: "sctp"}.get(proto, "tcp")
    return tuple(sorted(_oxm_field(f, v, p, l4) for f, v, p in r))


@functools.lru_cache(maxsize=65536)  # policies name the same few addresses, ports and protocols
def _oxm_field(f: str, v: int, p: int, l4: str) -> tuple[str, object]:
    width = WIDTHS[f]
    if f in ("eth_src", "eth_dst"):
        val = _int_mac(v) if p == width else (_int_mac(v), _int_mac(((1 << p) - 1) << (width - p)))
    elif f.startswith("ipv4") or f.startswith("ipv6"):
        version = 4 if f.startswith("ipv4") else 6
        val = _ip_text(version, v) if p == width else (_ip_text(version, v), _ip_text(version, ((1 << p) - 1) << (width - p)))
    else:
        val = v
    return f.replace("l4", l4), val


@functools.lru_cache(maxsize=65536)
def _ip_text(version: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


@functools.lru_cache(maxsize=16384)
def _buckets_id(buckets: tuple[Bucket, ...]) -> int:
    """The stable hash a tap group's id comes from (regions share a few bucket sets)."""
    return _stable_id(repr(buckets))


@functools.lru_cache(maxsize=16384)
def _bucket_text(bucket: Bucket) -> str:
    return repr(bucket)


def _stable_id(text: str) -> int:
    return zlib.crc32(text.encode())


@dataclass(frozen=True)
class _Ready:
    """A policy that can be compiled: its monitor (or a pool member) and its tap points are
    known. `monitors`: by pool position, None where not seen yet (one for a single monitor)."""

    tap: Tap
    monitors: tuple[Host | None, ...]
    points: list[tuple[int, _Directed]]

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
        self._policies_old: dict = {}
        self._policies_new: dict = {}
        self.last: _Last | None = None  # the latest compile, for the next one to change in place
        self.in_place = 0  # compiles that changed the last one in place
        self.desired: dict = {}  # dpid -> (base, TAP rules, meters, their union): compile_network's last

    def token(self, view: NetworkView) -> int:
        """A number for this view object, new whenever the view is another one: parts that
        read the view (hosts, paths) are keyed by it, so a new view recomputes them."""
        if view is not self._view:
            self._view, self._token = view, self._token + 1
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
        key = (kind, ident)
        entry = self._policies_new.get(key) or self._policies_old.get(key)
        if entry is None or entry[0] != token or not (entry[1] is spec or entry[1] == spec):
            entry = (token, spec, make())
        self._policies_new[key] = entry
        return entry[2]

    def done(self) -> None:
        self._old, self._new = self._new, {}
        self._policies_old, self._policies_new = self._policies_new, {}

    def keep(self) -> None:
        """After a compile that changed the last one in place: what it did not touch is
        still in use, so nothing is dropped (but the parts of removed policies)."""
        self._old.update(self._new)
        self._new = {}
        self._policies_old.update(self._policies_new)
        self._policies_new = {}

    def forget_policy(self, ident: int) -> None:
        for kind in ("state", "points", "static"):
            self._policies_old.pop((kind, ident), None)
            self._policies_new.pop((kind, ident), None)


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
    comp = _compile_delta(view, by_id, captures, memo, changed)
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
    comp = TapCompilation()
    ready = _policy_states(view, taps, comp, memo)
    comp.monitor_tags = _copy_vlan_ids(ready)
    points: dict[int, tuple[tuple[int, Region], ...]] = {}
    per_switch = _tap_points_per_switch(view, ready, comp, memo, points)
    _capture_points(view, captures, comp, per_switch, memo)
    groups = _delivery_groups(view, comp)
    forward = forward_group_ids(view)
    meters: dict[int, set[Meter]] = {}
    members = {r.tap.id: r.monitors for r in ready}
    flows, parts, ctx, recovered = _regions_groups_recovery(view, per_switch, {r.tap.id: r.tap for r in ready}, comp, groups,
                                                            {c.id: c for c in captures}, forward, memo, members, meters)
    _copy_paths(view, comp, flows, forward)
    for dpid in set(flows) | set(groups) | set(meters):
        comp.rules[dpid] = SwitchRules(frozenset(flows.get(dpid, ())), frozenset(groups.get(dpid, ())),
                                       frozenset(meters.get(dpid, ())))
    seen = {r.tap.id: tuple(h.mac for h in r.seen) for r in ready if r.tap.spec.transport == "vlan"}
    vlan_use = _use(seen.values())
    cookie_dpids: dict[int, set[int]] = {}
    for dpid, part in parts.items():
        for c in _part_of(part).cookie_owners:
            cookie_dpids.setdefault(c, set()).add(dpid)
    # Changed in place next time only where that is exactly what a whole compile gives:
    # no recovery rules (global per monitor), every monitor with a copy VLAN id.
    eligible = not recovered and bool(comp.monitor_tags) and len(vlan_use) == len(comp.monitor_tags)
    memo.last = _Last(memo.token(view), {t.id: t for t in taps}, tuple(captures), comp, points, seen, vlan_use,
                      _use(comp.monitors.values()), ctx, parts, {c: frozenset(d) for c, d in cookie_dpids.items()}, eligible)
    return comp


def _use(mac_lists) -> dict[str, int]:
    """How many policies name each monitor."""
    out: dict[str, int] = {}
    for macs in mac_lists:
        for m in macs:
            out[m] = out.get(m, 0) + 1
    return out


def _policy_states(view: NetworkView, taps: list[Tap], comp: TapCompilation, memo: TapMemo) -> list[_Ready]:
    """Phase 1: which policies can be compiled now; the others get their state and reason."""
    ready = []
    token = memo.token(view)
    for tap in sorted(taps, key=lambda t: t.id):
        outcome = memo.policy("state", token, tap.id, tap.spec, lambda tap=tap: _policy_state(view, tap, memo))
        if isinstance(outcome, TapState):
            comp.states[tap.id] = outcome
        else:
            ready.append(_Ready(tap, *outcome))
    return ready


def _policy_state(view: NetworkView, tap: Tap, memo: TapMemo) -> TapState | tuple[tuple[Host | None, ...], list[tuple[int, _Directed]]]:
    """One policy's phase 1: why it cannot be compiled, or its monitors and tap points."""
    if not tap.spec.enabled:
        return TapState(PolicyState.DISABLED)
    if tap.spec.monitor_pool:
        monitors = tuple(_resolve_member(view, m) for m in tap.spec.monitor_pool)
        if not any(monitors):
            return TapState(PolicyState.PENDING, "no monitor of the pool seen on the network yet")
    elif tap.spec.tunnel:
        problem = key_problem(tap)
        if problem:
            return TapState(PolicyState.ERROR, problem)
        hop = _resolve_member(view, tap.spec.monitor_mac or tap.spec.monitor_ip)  # the collector, or its gateway
        if hop is None:
            what = f"gateway {tap.spec.monitor_mac}" if tap.spec.monitor_mac else f"collector {tap.spec.monitor_ip}"
            return TapState(PolicyState.PENDING, f"{what} not yet seen on the network")
        monitors = (hop,)
    else:
        monitor = _resolve_monitor(view, tap.spec)
        if monitor is None:
            return TapState(PolicyState.PENDING, "monitor not yet seen on the network")
        if tap.spec.transport == "rewrite":
            problem = _rewrite_problem(tap.spec, monitor)
            if problem:
                return TapState(PolicyState.ERROR, problem)
        monitors = (monitor,)
    points, state, reason = _tap_points(view, tap.id, tap.spec, memo)
    if reason:
        return TapState(state, reason)
    return monitors, points


def _copy_vlan_ids(ready: list[_Ready]) -> dict[str, int]:
    """Phase 2: one copy VLAN id per monitor of a vlan-transport policy, by MAC order."""
    macs = sorted({h.mac for r in ready if r.tap.spec.transport == "vlan" for h in r.seen})
    return {mac: COPY_VID_FIRST + i for i, mac in enumerate(macs) if COPY_VID_FIRST + i <= COPY_VID_LAST}


def _tap_points_per_switch(view: NetworkView, ready: list[_Ready], comp: TapCompilation, memo: TapMemo,
                           points: dict[int, tuple[tuple[int, Region], ...]]) -> dict[int, dict[Region, set[int]]]:
    """Phase 3: the directed matches each switch taps, {dpid: {region with in_port: tap ids}};
    the policies' states (compiled, or degraded where the monitor is unreachable)."""
    per_switch: dict[int, dict[Region, set[int]]] = {}
    token = memo.token(view)
    for r in ready:
        tap = r.tap
        if tap.spec.transport == "vlan" and any(h.mac not in comp.monitor_tags for h in r.seen):
            comp.states[tap.id] = TapState(PolicyState.ERROR, "no copy VLAN id left: too many monitors")
            continue
        comp.monitors[tap.id] = () if tap.spec.tunnel else tuple(h.mac for h in r.seen)  # a tunnel has no delivery group
        regions, state = memo.policy("points", token, tap.id, tap.spec, lambda r=r: _policy_points(view, r, memo))
        points[tap.id] = tuple(dict.fromkeys(regions))
        for dpid, reg in regions:
            per_switch.setdefault(dpid, {}).setdefault(reg, set()).add(tap.id)
        comp.states[tap.id] = state
    return per_switch


def _policy_points(view: NetworkView, r: _Ready, memo: TapMemo) -> tuple[list[tuple[int, Region]], TapState]:
    """One policy's phase 3: its regions per tap switch, and its state."""
    tap = r.tap
    pooled = tap.spec.monitor_pool is not None

    def reachable(d: int) -> list[Host]:
        if pooled:
            return [h for h in r.seen if member_live(view, d, h)]
        h = r.monitors[0]
        return [h] if d == h.dpid or view.path(d, h.dpid) is not None else []

    if tap.spec.tunnel:  # a tunnel starts at a tunnel port of the tap switch
        kind = tunnel_kind(tap.spec)
        portless = sorted({d for d, _ in r.points if kind not in view.devices[d].tunnel_ports()})
        if portless:
            reason = (f"no {kind} tunnel port on switch " + ", ".join(f"{d:016x}" for d in portless)
                      + " (vtap serve --tunnels local makes them)")
            return [], TapState(PolicyState.DEGRADED, reason, frozenset())
    unreachable = [d for d, _ in r.points if not reachable(d)]
    concerned: set[int] = set()
    regions = []
    for dpid, directed in r.points:
        if dpid in unreachable:
            continue
        regions.append((dpid, _region_at(view, directed, memo)))
        concerned.add(dpid)
        for h in reachable(dpid):
            concerned.update(view.path(dpid, h.dpid) or ())
    contested = [view.conflicts[a] for h in r.seen for a in _identities(tap.spec, h) if a in view.conflicts]
    if unreachable:
        what = "no monitor of the pool reachable" if pooled else "no path to the monitor"
        reason = what + " from " + ", ".join(f"{d:016x}" for d in unreachable)
        return regions, TapState(PolicyState.DEGRADED, reason, frozenset(concerned))
    down = [tap.spec.monitor_pool[i] for i, h in enumerate(r.monitors)
            if pooled and not any(member_live(view, d, h) for d, _ in r.points)]
    if down:
        reason = "pool monitors down or not seen (their flows go to the others): " + ", ".join(down)
        return regions, TapState(PolicyState.DEGRADED, reason, frozenset(concerned))
    if contested:
        return regions, TapState(PolicyState.DEGRADED, "identity conflict: " + "; ".join(contested), frozenset(concerned))
    return regions, TapState(PolicyState.COMPILED, "", frozenset(concerned))


def _region_at(view: NetworkView, directed: _Directed, memo: TapMemo) -> Region:
    host = view.host_named(directed.source_mac, directed.source_ip)
    port = host.port if host is not None else None

    def make() -> Region:
        c = dict(directed.constraints)
        if port is not None:
            c["in_port"] = (port, 32)
        return region(c)

    return memo.get(("region", directed.constraints, port), make)


def _capture_points(view: NetworkView, captures: list[CaptureTarget], comp: TapCompilation,
                    per_switch: dict[int, dict[Region, set[int]]], memo: TapMemo) -> None:
    """Phase 3b: capture jobs' matches at their tap points, owned by -job id."""
    for c in sorted(captures, key=lambda c: c.id):
        points, state, reason = _tap_points(view, -c.id, c.match, memo)
        if reason:
            comp.capture_states[c.id] = TapState(state, reason)
            continue
        for dpid, directed in points:
            per_switch.setdefault(dpid, {}).setdefault(_region_at(view, directed, memo), set()).add(-c.id)
        comp.capture_states[c.id] = TapState(PolicyState.COMPILED, "", frozenset(d for d, _ in points))


def _delivery_groups(view: NetworkView, comp: TapCompilation) -> dict[int, set[GroupRule]]:
    """Phase 4: one fast-failover group per monitor at its edge switch, its one bucket
    watching the monitor's port: copies reach the monitor only through it."""
    groups: dict[int, set[GroupRule]] = {}
    for mac in sorted({m for macs in comp.monitors.values() for m in macs}):
        monitor = view.hosts[mac]
        taken = {g.group_id for g in groups.get(monitor.dpid, ())}
        gid = DELIVERY_GROUP_BASE | (_stable_id("delivery " + mac) & GROUP_ID_MASK)
        while gid in taken:
            gid = DELIVERY_GROUP_BASE | ((gid + 1) & GROUP_ID_MASK)
        comp.deliveries[mac] = (monitor.dpid, gid)
        groups.setdefault(monitor.dpid, set()).add(GroupRule(gid, "ff", (Bucket((Output(monitor.port),), monitor.port),)))
    return groups


def _regions_groups_recovery(
    view: NetworkView, per_switch: dict[int, dict[Region, set[int]]], taps_by_id: dict[int, Tap], comp: TapCompilation,
    groups: dict[int, set[GroupRule]], captures: dict[int, CaptureTarget], forward: dict[int, int], memo: TapMemo,
    members: dict[int, tuple[Host | None, ...]], meters: dict[int, set[Meter]],
) -> tuple[dict[int, set[FlowRule]], dict[int, _SwitchPart | _PlainSwitch], _Ctx, bool]:
    """Phase 5: per tap switch, the disjoint regions of its policies' matches, each a
    table-1 rule applying a group with one bucket per monitor (or pool); budgeted
    policies' rules (compile/budget.py); the rewrite transport's recovery rules at the
    monitors' edge switches. Returns the flows, each switch's part, what the parts read,
    and whether there are recovery rules."""
    monitor_of = {tap_id: members[tap_id] for tap_id in comp.monitors}
    token = memo.token(view)
    static = {i: memo.policy("static", token, i, taps_by_id[i].spec, lambda i=i: _static(taps_by_id[i], monitor_of[i]))
              for i in monitor_of if i in taps_by_id}
    budget = _Shared({i: _target(static[i], monitor_of[i]) for i in static}, cut_group_ids(view, [m for macs in comp.monitors.values() for m in macs]),
                            {i: len({d for d, _ in r}) for i, r in _points_of(per_switch).items()})
    ctx = _Ctx(view, taps_by_id, monitor_of, static, comp, forward, memo, budget)
    flows: dict[int, set[FlowRule]] = {}
    parts: dict[int, _SwitchPart | _PlainSwitch] = {}
    recovery: dict[int, list[tuple[Region, frozenset[SetField], str, frozenset[int]]]] = {}
    for dpid, matches in sorted(per_switch.items()):
        # Everything this switch's part reads: its matches and owners, and per owner what
        # its buckets depend on; the view through its token.
        owned = frozenset((r, frozenset(i)) for r, i in matches.items())
        ids = sorted({i for i_set in matches.values() for i in i_set})
        inputs = tuple(_owner_inputs(i, static, comp, taps_by_id, budget) if i > 0 else (i, captures[-i].snaplen) for i in ids)
        parts[dpid] = memo.get(("switch", token, dpid, owned, inputs), lambda dpid=dpid, matches=matches, owned=owned, ids=ids: (
            _PlainSwitch.build(ctx, dpid, dict(owned)) if all(i > 0 and _plain(taps_by_id[i].spec) for i in ids) else None)
            or _switch_part(ctx, dpid, matches, owned, captures))
        part = _part_of(parts[dpid])
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
    _recovery_rules(recovery, comp, flows)
    return flows, parts, ctx, bool(recovery)


@dataclass(frozen=True)
class _Shared:
    """What every switch's part reads besides the view and its owners' inputs: the cut
    groups' ids and tap switch counts (compile/budget.py), each policy's copy target."""

    targets: dict[int, tuple]
    cut_ids: dict[tuple[str, object], int]
    tap_switches: dict[int, int]  # tap id -> how many switches tap it


def _points_of(per_switch: dict[int, dict[Region, set[int]]]) -> dict[int, list[tuple[int, Region]]]:
    out: dict[int, list[tuple[int, Region]]] = {}
    for dpid, matches in per_switch.items():
        for r, ids in matches.items():
            for i in ids:
                out.setdefault(i, []).append((dpid, r))
    return out


def _owner_inputs(i: int, static: dict, comp: TapCompilation, taps_by_id: dict[int, Tap], budget: _Shared) -> tuple:
    """A memo key of what one policy's buckets at a switch depend on (besides the view)."""
    macs = comp.monitors[i]
    base = (i, static[i], macs, tuple(comp.monitor_tags.get(m) for m in macs), tuple(comp.deliveries.get(m) for m in macs))
    spec = taps_by_id[i].spec
    if not spec.shaped:
        return base
    cuts = tuple(sorted(budget.cut_ids.items())) if spec.snaplen else ()
    return (*base, spec, budget.tap_switches.get(i, 1), cuts)


@dataclass(frozen=True)
class _SwitchPart:
    """One tap switch's share of phase 5, reusable while its inputs stay the same."""

    flows: frozenset[FlowRule] = frozenset()
    groups: frozenset[GroupRule] = frozenset()
    sent_buckets: dict = field(default_factory=dict)
    cookie_owners: dict = field(default_factory=dict)
    recovery: tuple = ()  # (monitor's switch, recovery entry)
    errors: dict = field(default_factory=dict)  # owner id -> TapState (a closure too large)
    meters: frozenset[Meter] = frozenset()
    meter_monitors: dict = field(default_factory=dict)


def _switch_part(ctx: _Ctx, dpid: int, matches: dict[Region, set[int]], owned: frozenset,
                 captures: dict[int, CaptureTarget]) -> _SwitchPart:
    """One tap switch's share of phase 5, whatever its owners (see `_PlainSwitch` for the
    common case, kept region by region)."""
    view, taps_by_id, monitor_of, static, comp = ctx.view, ctx.taps_by_id, ctx.monitor_of, ctx.static, ctx.comp
    forward, memo, budget = ctx.forward, ctx.memo, ctx.budget
    try:
        regions = memo.get(("closure", frozenset(matches)), lambda: closure(matches))
    except OverflowError as exc:
        return _SwitchPart(errors={i: TapState(PolicyState.ERROR, str(exc)) for ids in matches.values() for i in ids})
    owner_map = memo.get(("owners", owned), lambda: owners(regions, matches))
    flows: set[FlowRule] = set()
    groups: set[GroupRule] = set()
    sent_buckets: dict = {}
    cookie_owners: dict[int, frozenset[int]] = {}
    recovery: list = []
    group_ids: dict[tuple[Bucket, ...], int] = {}
    parts: dict[int, BudgetPart] = {}  # budgeted policies' parts at this switch, made once each
    for r in sorted(regions):
        ids = owner_map[r]
        policy_ids = sorted(i for i in ids if i > 0)
        if any(taps_by_id[i].spec.shaped for i in policy_ids):
            pairs = _buckets(view, dpid, policy_ids, taps_by_id, monitor_of, comp, forward, budget, parts)
            stable = _buckets_id(tuple(b for b, _ in pairs))
        else:  # the common case, looked up by what it reads
            pairs, stable = _unshaped_pairs(ctx, dpid, policy_ids)
        actions: list[Action] = []
        write: tuple[Action, ...] = ()
        if pairs:
            buckets = tuple(b for b, _ in pairs)
            gid = group_ids.get(buckets)
            if gid is None:
                gid = _allocate_group(stable, set(group_ids.values()))
                group_ids[buckets] = gid
                groups.add(GroupRule(gid, "all", buckets))
                sent_buckets[(dpid, gid)] = tuple(mac for _, mac in pairs)
            if any(_metered(b, parts) for b in buckets):
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
            continue
        tap_cookie, priority, region_match = _rule_of(memo, r)
        cookie_owners[tap_cookie] = cookie_owners.get(tap_cookie, frozenset()) | ids
        flows.add(FlowRule(TABLE_TAP, priority, region_match, tuple(actions), TABLE_FORWARD, tap_cookie, write=write))
    for r in sorted(regions):
        ids = owner_map[r]
        for tap_id in sorted(i for i in ids if i > 0):
            tap, monitor = taps_by_id[tap_id], monitor_of[tap_id][0]
            if (tap.spec.transport != "rewrite" or monitor.dpid == dpid
                    or _bucket_owner(ids, budget.targets, budget.targets[tap_id]) != tap_id):
                continue
            rr, restore = _recovery(r, tap.spec, monitor)
            recovery.append((monitor.dpid, (rr, restore, monitor.mac, frozenset(ids))))
    if any(len(static[i]) > 3 for ids in owner_map.values() for i in ids if i > 0):
        rule = endpoint_rule(view.devices[dpid])  # tunnelled copies come back in on LOCAL
        if rule is not None:
            flows.add(rule)
    meters: set[Meter] = set()
    meter_monitors: dict = {}
    errors: dict[int, TapState] = {}
    for tap_id, part in sorted(parts.items()):
        # Ids derive from the policy id (send groups from its low 17 bits, meters 20): two
        # policies far apart in age may meet. The younger one gets none of its rules (its
        # bucket then resubmits to no rule: no copy) and an error.
        clash = ({g.group_id for g in part.groups} & {g.group_id for g in groups if g not in part.groups}
                 or {m.meter_id for m in part.meters} & {m.meter_id for m in meters})
        if clash:
            errors[tap_id] = TapState(PolicyState.ERROR, f"its budget's group or meter ids are taken at switch {dpid:016x} "
                                                         "by an older policy: re-create it for a new id")
            continue
        flows |= part.flows
        groups |= part.groups
        meters |= part.meters
        sent_buckets.update(part.sent_buckets)
        meter_monitors.update(part.meter_monitors)
        for f in part.flows:
            if f.cookie != COOKIE_COPY:
                cookie_owners[f.cookie] = cookie_owners.get(f.cookie, frozenset()) | {tap_id}
    return _SwitchPart(frozenset(flows), frozenset(groups), sent_buckets, cookie_owners, tuple(recovery), errors,
                       frozenset(meters), meter_monitors)


def _metered(bucket: Bucket, parts: dict[int, BudgetPart]) -> bool:
    return any(p.bucket == bucket and p.meters for p in parts.values())


def _copy_paths(view: NetworkView, comp: TapCompilation, flows: dict[int, set[FlowRule]], forward: dict[int, int]) -> None:
    """Phase 6 (vlan transport): copies arriving on an inter-switch port go to table 3 and
    hop by hop to their monitor, untagged at its switch and handed to its delivery group.
    (From any other port a reserved id is dropped by base forwarding.)"""
    if not comp.monitor_tags:
        return
    for dpid in sorted(view.devices):
        f = flows.setdefault(dpid, set())
        link_ports = sorted(view.link_ports.get(dpid, ()))
        for mac, vid in sorted(comp.monitor_tags.items()):
            monitor = view.hosts[mac]
            if dpid == monitor.dpid:
                actions: tuple[Action, ...] = (PopVlan(), GroupAction(comp.deliveries[mac][1]))
            else:
                if view.tree_toward(monitor.dpid).get(dpid) is None:
                    continue
                actions = (GroupAction(forward[monitor.dpid]),)
            vlan = (("vlan_vid", OFPVID_PRESENT | vid),)
            for port in link_ports:
                f.add(FlowRule(TABLE_CLASSIFY, PRIO_COPY_IN, (("in_port", port), *vlan), (), TABLE_COPY, COOKIE_COPY))
            f.add(FlowRule(TABLE_COPY, PRIO_COPY, vlan, actions, None, COOKIE_COPY))


def _identities(spec: TapSpec, monitor: Host) -> list[str]:
    """Every address the policy names, and its monitor's MAC: what a claim may contest."""
    named = [spec.src_mac, spec.src_ip, spec.dst_mac, spec.dst_ip, spec.monitor_mac, spec.monitor_ip, monitor.mac]
    return [a for a in dict.fromkeys(named) if a]


def _resolve_monitor(view: NetworkView, spec: TapSpec) -> Host | None:
    host = view.hosts.get(spec.monitor_mac) if spec.monitor_mac else view.host_by_ip(spec.monitor_ip)
    if host is None or host.dpid not in view.devices:
        return None
    if spec.monitor_mac and spec.monitor_ip and spec.monitor_ip not in host.ips and host.ips:
        return None
    return host


def _resolve_member(view: NetworkView, address: str) -> Host | None:
    """A pool member (MAC or IP) as seen on a connected switch, else None."""
    host = view.hosts.get(address) if is_mac(address) else view.host_by_ip(address)
    return host if host is not None and host.dpid in view.devices else None


def _rewrite_problem(spec: TapSpec, monitor: Host) -> str | None:
    if spec.ip_version and _monitor_ip(spec, monitor) is None:
        return f"transport rewrite needs the monitor's IPv{spec.ip_version} address; none known"
    return None


def _monitor_ip(spec: TapSpec, monitor: Host) -> str | None:
    if spec.monitor_ip:
        return spec.monitor_ip
    for ip in monitor.ips:
        if ipaddress.ip_address(ip).version == spec.ip_version:
            return ip
    return None


def _tap_points(view: NetworkView, ident: int, spec: MatchSpec, memo: TapMemo) -> tuple[list[tuple[int, _Directed]], PolicyState | None, str]:
    """(switch, directed match) pairs where the matched packets enter the fabric;
    else the state and reason why there are none."""
    points = []
    for d in memo.get(("directed", ident, spec), lambda: _directed(ident, spec)):
        if d.source_mac or d.source_ip:
            host = view.host_named(d.source_mac, d.source_ip)
            if host is None:
                return [], PolicyState.PENDING, f"source host {d.source_mac or d.source_ip} not yet seen on the network"
            if host.dpid not in view.devices:
                return [], PolicyState.DEGRADED, f"source host's switch {host.dpid:016x} is not connected"
            points.append((host.dpid, d))
        else:
            points.extend((dpid, d) for dpid in sorted(view.devices) if view.edge_ports(dpid))
    return points, None, ""


def _static(tap: Tap, monitors: tuple[Host | None, ...]) -> tuple:
    """What a policy's buckets read from its spec: transport, IP version and monitor IP;
    for a tunnel also its port kind and key."""
    s = tap.spec
    if s.tunnel:
        return (s.transport, s.ip_version, s.monitor_ip, tunnel_kind(s), tunnel_key(tap))
    return (s.transport, s.ip_version, None if s.monitor_pool else _monitor_ip(s, monitors[0]))


def _target(static: tuple, monitors: tuple[Host | None, ...]) -> tuple:
    """What a bucket copies to: one monitor, a pool (by position; None: not seen), or a
    tunnel (its kind, collector and key: two keys to one collector are two copies)."""
    if len(static) > 3:
        return ("tunnel", *static[2:])
    return tuple(h.mac if h is not None else None for h in monitors)


def _bucket_owner(ids, targets: dict[int, tuple], target: tuple) -> int:
    """Which policy carries the one copy a monitor (or pool, or tunnel) gets for a region:
    the oldest, with its transport and budget."""
    return min(i for i in ids if i > 0 and targets[i] == target)


def _buckets(view: NetworkView, dpid: int, ids: list[int], taps_by_id: dict[int, Tap],
             monitor_of: dict[int, tuple[Host | None, ...]], comp: TapCompilation, forward: dict[int, int],
             budget: _Shared, parts: dict[int, BudgetPart]) -> tuple[tuple[Bucket, str | None], ...]:
    """The tap group's buckets for a region owned by `ids`, each with the monitor it copies
    to (None for a budgeted copy: its send group counts it); budgeted copies last, since
    a meter on their way would drop whatever the datapath does after it."""
    buckets: list[tuple[Bucket, str | None]] = []
    seen: set[tuple[str | None, ...]] = set()
    for tap_id in ids:
        target = budget.targets[tap_id]
        if target in seen:
            continue  # one copy per monitor (or pool), however many policies name it
        seen.add(target)
        owner = taps_by_id[_bucket_owner(ids, budget.targets, target)]
        if owner.spec.shaped:
            if owner.id not in parts:
                parts[owner.id] = budget_part(
                    view, dpid, owner.id, owner.spec, monitor_of[owner.id], budget.tap_switches.get(owner.id, 1),
                    comp.monitor_tags, comp.deliveries, forward, budget.cut_ids, forward_groups(view, dpid, forward),
                    pooled=owner.spec.monitor_pool is not None)
            if parts[owner.id].bucket is not None:
                buckets.append((parts[owner.id].bucket, None))
            continue
        if owner.spec.tunnel:  # not counted by delivery accounting: the outer packet is plain traffic
            port = view.devices[dpid].tunnel_ports().get(tunnel_kind(owner.spec))
            hop = monitor_of[owner.id][0]
            if port is not None and (hop.dpid == dpid or view.tree_toward(hop.dpid).get(dpid) is not None):
                buckets.append((tunnel_bucket(owner.spec, tunnel_key(owner), port, dpid), None))
            continue
        monitor = monitor_of[tap_id][0]
        if monitor.dpid == dpid:
            buckets.append((Bucket((GroupAction(comp.deliveries[monitor.mac][1]),)), monitor.mac))
            continue
        if view.tree_toward(monitor.dpid).get(dpid) is None:
            continue
        onward = GroupAction(forward[monitor.dpid])  # the next hop, or its alternate when its port is down
        if owner.spec.transport == "vlan":
            tag = SetField("vlan_vid", OFPVID_PRESENT | comp.monitor_tags[monitor.mac])
            buckets.append((Bucket((PushVlan(0x8100), tag, onward)), monitor.mac))
        else:
            actions: list[Action] = [SetField("eth_dst", monitor.mac)]
            ip = _monitor_ip(owner.spec, monitor)
            if owner.spec.ip_version and ip:
                actions.append(SetField("ipv4_dst" if owner.spec.ip_version == 4 else "ipv6_dst", ip))
            buckets.append((Bucket((*actions, onward)), monitor.mac))
    # Metered copies last of all: an OVS meter drops the packet for what follows it.
    return tuple(sorted(buckets, key=lambda pair: (pair[1] is None, _metered(pair[0], parts), _bucket_text(pair[0]))))


def _recovery(r: Region, spec: TapSpec, monitor: Host) -> tuple[Region, frozenset[SetField]]:
    """The seed's recovery rule for one tap region: the match of its copies at the
    monitor's edge (addressed to the monitor) and the fields that give them their original
    destination back. Only fields the region pins exactly can be restored."""
    d = {f: (v, p) for f, v, p in r if f != "in_port"}
    restore: list[SetField] = []
    if "eth_dst" in d and d["eth_dst"][1] == 48:
        restore.append(SetField("eth_dst", _int_mac(d["eth_dst"][0])))
    d["eth_dst"] = (_mac_int(monitor.mac), 48)
    version = spec.ip_version
    if version:
        fam = "ipv4" if version == 4 else "ipv6"
        key = f"{fam}_dst"
        if key in d and d[key][1] == WIDTHS[key]:
            cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            restore.append(SetField(key, str(cls(d[key][0]))))
        ip = _monitor_ip(spec, monitor)
        if ip:
            d[key] = (int(ipaddress.ip_address(ip)), WIDTHS[key])
    return region(d), frozenset(restore)


def _recovery_rules(wanted: dict[int, list[tuple[Region, frozenset[SetField], str, frozenset[int]]]],
                    comp: TapCompilation, flows: dict[int, set[FlowRule]]) -> None:
    """The recovery rules of each monitor's edge switch, made unambiguous.

    Recovery matches lose the tap point's `in_port` and have their destination replaced
    by the monitor's, so matches from different regions, policies and switches meet at
    the monitor's switch and may coincide or overlap. They are closed under intersection,
    as tap regions are: each region restores only the fields that every recovery
    containing it agrees on, so no copy is ever "restored" to a destination that one of
    the policies it matches did not have (a copy they disagree about keeps the monitor's
    address)."""
    for dpid, entries in sorted(wanted.items()):
        matches: dict[Region, set[int]] = {}
        for i, (rr, _, _, _) in enumerate(entries):
            matches.setdefault(rr, set()).add(i)
        try:
            regions = closure(matches)
        except OverflowError as exc:
            for _, _, _, ids in entries:
                for tap_id in ids:
                    comp.states[tap_id] = TapState(PolicyState.ERROR, str(exc))
            continue
        for r, idx in owners(regions, matches).items():
            restore = frozenset.intersection(*(entries[i][1] for i in idx))
            delivery = comp.deliveries[entries[min(idx)][2]][1]  # one monitor per region: its MAC is pinned
            ids = frozenset().union(*(entries[i][3] for i in idx))
            rule = FlowRule(TABLE_FORWARD, PRIO_RECOVERY_BASE + specificity(r), _region_to_match(r),
                            (*sorted(restore, key=lambda a: a.field), GroupAction(delivery)), None,
                            cookie(Owner.TAP, _stable_id(repr(r))))
            comp.cookie_owners[rule.cookie] = comp.cookie_owners.get(rule.cookie, frozenset()) | ids
            flows.setdefault(dpid, set()).add(rule)


def _bucket_inputs(view: NetworkView, dpid: int, static: tuple, monitor: Host, comp: TapCompilation,
                   forward: dict[int, int]) -> tuple:
    """Everything `_buckets` reads about one unbudgeted policy at one switch (`static`: its
    transport, IP version and monitor IP): a memo key."""
    reachable = monitor.dpid == dpid or view.tree_toward(monitor.dpid).get(dpid) is not None
    tunnel_port = view.devices[dpid].tunnel_ports().get(static[3]) if len(static) > 3 else None
    return (*static, monitor.mac, monitor.dpid, reachable, forward.get(monitor.dpid), comp.monitor_tags.get(monitor.mac),
            comp.deliveries.get(monitor.mac), tunnel_port)


def _buckets_hashed(*args) -> tuple[tuple[tuple[Bucket, str | None], ...], int]:
    pairs = _buckets(*args)
    return pairs, _buckets_id(tuple(b for b, _ in pairs))


def _allocate_group(stable: int, taken: set[int]) -> int:
    """A tap group's id from its buckets' stable hash, probing past ids taken on the switch."""
    gid = VTAP_GROUP_BASE | (stable & GROUP_ID_MASK)
    while gid in taken:
        gid = VTAP_GROUP_BASE | ((gid + 1) & GROUP_ID_MASK)
    return gid


# ---- changing the last compile in place ---------------------------------------------------
#
# A policy change touches the regions its matches overlap at its tap switches, nothing
# else: when the view is the same object and the set of monitors stays, the last
# compilation's dicts are changed in place and only those regions are redone.
# `tests/unit/test_incremental.py` checks the result against whole compiles.

# More changed policies than this at once: a whole compile (bulk applies). An in-place
# change costs ~0.7 ms a policy and grows faster than the count (the controller runs it
# on its event loop: 64 take ~50 ms); a whole compile ~0.1 ms a policy (the controller
# runs it in a thread of its own).
DELTA_MAX = 64


@dataclass(frozen=True)
class _Ctx:
    """What phase 5 reads, besides a switch's matches."""

    view: NetworkView
    taps_by_id: dict[int, Tap]
    monitor_of: dict[int, tuple[Host | None, ...]]
    static: dict[int, tuple]
    comp: TapCompilation
    forward: dict[int, int]
    memo: TapMemo
    budget: _Shared


@dataclass(frozen=True)
class _Last:
    """A compile as the next one may change it."""

    token: int
    taps: dict[int, Tap]
    captures: tuple
    comp: TapCompilation
    points: dict[int, tuple[tuple[int, Region], ...]]  # compiled policy -> its (tap switch, region)s
    seen: dict[int, tuple[str, ...]]  # ready vlan-transport policy -> its monitors seen
    vlan_use: dict[str, int]  # monitor -> policies copying to it over VLAN (those have ids)
    monitor_use: dict[str, int]  # monitor -> compiled policies naming it (those have delivery groups)
    ctx: _Ctx
    parts: dict[int, _SwitchPart | _PlainSwitch]
    cookie_dpids: dict[int, frozenset[int]]  # tap rule cookie -> switches whose part has it
    eligible: bool


def _part_of(part: _SwitchPart | _PlainSwitch) -> _SwitchPart:
    return part.part if isinstance(part, _PlainSwitch) else part


def _plain(spec: TapSpec) -> bool:
    """Copies over the VLAN transport, unbudgeted: a region's rule depends on its owners alone."""
    return spec.transport == "vlan" and not spec.shaped


def _rule_of(memo: TapMemo, r: Region) -> tuple[int, int, tuple]:
    """A tap region's cookie, priority and match."""
    return memo.get(("rule", r), lambda: (cookie(Owner.TAP, _stable_id(repr(r))), PRIO_TAP_BASE + specificity(r),
                                          _region_to_match(r)))


def _unshaped_pairs(ctx: _Ctx, dpid: int, policy_ids: list[int]) -> tuple[tuple[tuple[Bucket, str | None], ...], int]:
    """An unbudgeted region's buckets (with their monitors) and their stable hash, looked
    up by what they read."""
    # Keyed by the owners' inputs in id order, not their ids: which owner carries a shared
    # copy is the first of them, and the rest the buckets read is in the inputs; so the
    # many regions whose owners copy alike share one entry.
    inputs = tuple(_bucket_inputs(ctx.view, dpid, ctx.static[i], ctx.monitor_of[i][0], ctx.comp, ctx.forward)
                   for i in policy_ids)
    return ctx.memo.get(("buckets", dpid, inputs), lambda: _buckets_hashed(
        ctx.view, dpid, policy_ids, ctx.taps_by_id, ctx.monitor_of, ctx.comp, ctx.forward, ctx.budget, {}))


@dataclass
class _PlainSwitch:
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
    part: _SwitchPart = field(default_factory=_SwitchPart)
    cookies: dict[int, frozenset[Region]] = field(default_factory=dict)  # tap rule cookie -> its regions (one, but for a clash)
    _added: list[FlowRule] = field(default_factory=list)  # since the last part was made
    _dropped: list[FlowRule] = field(default_factory=list)
    _touched: set[int] = field(default_factory=set)  # cookies

    @classmethod
    def build(cls, ctx: _Ctx, dpid: int, matches: dict[Region, frozenset[int]]) -> _PlainSwitch | None:
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

    def update(self, ctx: _Ctx, changes: dict[Region, frozenset[int]]) -> _PlainSwitch | None:
        """A copy with the matches in `changes` given new owners (empty: gone); None
        when that cannot be done in place (a group id taken, too many regions)."""
        if not self.natural:
            return None
        sw = _PlainSwitch(self.dpid, dict(self.matches), self.match_index.copy(), self.region_index.copy(),
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

    def _add_rule(self, ctx: _Ctx, r: Region) -> bool:
        pairs, stable = _unshaped_pairs(ctx, self.dpid, sorted(self.owners[r]))
        if not pairs:
            return True
        buckets = tuple(b for b, _ in pairs)
        entry = self.groups.get(buckets)
        if entry is None:
            gid = _allocate_group(stable, {g.group_id for g, _, _ in self.groups.values()})
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
        self.part = _SwitchPart((self.part.flows - frozenset(self._dropped)) | frozenset(self._added),
                                frozenset(g for g, _, _ in self.groups.values()),
                                {(self.dpid, g.group_id): macs for g, _, macs in self.groups.values()}, cookie_owners)
        self._added, self._dropped, self._touched = [], [], set()


def in_place_candidate(view: NetworkView, captures: list[CaptureTarget], memo: TapMemo) -> bool:
    """Whether the last compile may be changed in place at all: the same view object,
    the same capture jobs, a last compile that allows it."""
    last = memo.last
    return last is not None and last.eligible and memo.token(view) == last.token and tuple(captures) == last.captures


def _compile_delta(view: NetworkView, by_id: Mapping[int, Tap], captures: list[CaptureTarget], memo: TapMemo,
                   hint: set[int] | None) -> TapCompilation | None:
    """The last compilation changed in place for the policies that changed since, or
    None when only a whole compile can say: another view, other capture jobs, too many
    changes, a changed policy that is not plain, a monitor set that grows or shrinks
    (copy VLAN ids and delivery groups are per monitor), a switch part that cannot.

    In place means the last compile's dicts are changed, not copied (copies of
    10,000-entry dicts at every change keep the garbage collector busy): the result is
    a new TapCompilation object around them, so that whoever holds the last one and
    checks `is` sees a new compile, and a None part-way leaves `memo.last` to be thrown
    away (the whole compile that follows makes it again)."""
    last = memo.last
    if not in_place_candidate(view, captures, memo):
        return None
    if hint is None:
        changed = [i for i, t in by_id.items() if last.taps.get(i) is not t] + [i for i in last.taps if i not in by_id]
    else:
        changed = [i for i in hint if last.taps.get(i) is not by_id.get(i)]
    if len(changed) > DELTA_MAX or any(t is not None and not _plain(t.spec) for i in changed
                                       for t in (last.taps.get(i), by_id.get(i))):
        return None
    old, token, ctx = last.comp, last.token, last.ctx
    comp = TapCompilation(old.rules, old.states, old.cookie_owners, old.monitor_tags, old.monitors, old.deliveries,
                          old.cut_deliveries, old.sent_buckets, old.meter_monitors, old.capture_states)
    points, seen, vlan_use, monitor_use = last.points, last.seen, last.vlan_use, last.monitor_use
    vlan_before, monitors_before = set(vlan_use), set(monitor_use)
    static, monitor_of, targets = ctx.static, ctx.monitor_of, ctx.budget.targets
    memo.last = None  # until it is whole again
    edits: dict[int, dict[Region, tuple[set[int], set[int]]]] = {}  # dpid -> region -> (ids out, ids in)

    def count(use: dict[str, int], macs, n: int) -> None:
        for m in macs:
            use[m] = use.get(m, 0) + n
            if not use[m]:
                del use[m]

    for i in changed:
        for d, r in points.pop(i, ()):
            edits.setdefault(d, {}).setdefault(r, (set(), set()))[0].add(i)
        count(vlan_use, seen.pop(i, ()), -1)
        count(monitor_use, comp.monitors.pop(i, ()), -1)
        for d in (comp.states, static, monitor_of, targets):
            d.pop(i, None)
        tap = by_id.get(i)
        if tap is None:
            del last.taps[i]
            memo.forget_policy(i)
            continue
        last.taps[i] = tap
        outcome = memo.policy("state", token, i, tap.spec, lambda tap=tap: _policy_state(view, tap, memo))
        if isinstance(outcome, TapState):
            comp.states[i] = outcome
            continue
        r = _Ready(tap, *outcome)
        macs = seen[i] = tuple(h.mac for h in r.seen)
        count(vlan_use, macs, 1)
        comp.monitors[i] = macs
        count(monitor_use, macs, 1)
        regions, comp.states[i] = memo.policy("points", token, i, tap.spec, lambda r=r: _policy_points(view, r, memo))
        points[i] = tuple(dict.fromkeys(regions))
        for d, reg in points[i]:
            edits.setdefault(d, {}).setdefault(reg, (set(), set()))[1].add(i)
        static[i] = memo.policy("static", token, i, tap.spec, lambda tap=tap, r=r: _static(tap, r.monitors))
        monitor_of[i], targets[i] = r.monitors, _target(static[i], r.monitors)
    if vlan_use.keys() != vlan_before or monitor_use.keys() != monitors_before:
        return None
    ctx = _Ctx(view, by_id, monitor_of, static, comp, ctx.forward, memo, ctx.budget)
    parts, cookie_dpids = last.parts, last.cookie_dpids
    touched: set[int] = set()
    for d, regs in sorted(edits.items()):
        before = parts.get(d) or _PlainSwitch(d, {}, RegionIndex(), RegionIndex(), {}, {}, {})
        if not isinstance(before, _PlainSwitch) or d not in old.rules:
            return None
        changes = {}
        for r, (out, into) in regs.items():
            had = before.matches.get(r, frozenset())
            now = (had - out) | into
            if now != had or out & into:  # same owners, but one of them copies elsewhere now
                changes[r] = frozenset(now)
        after = before.update(ctx, changes) if changes else before
        if after is None:
            return None
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
    for c in touched:
        if cookie_dpids.get(c):
            comp.cookie_owners[c] = frozenset().union(*(_part_of(parts[d]).cookie_owners[c] for d in cookie_dpids[c]))
        else:
            cookie_dpids.pop(c, None)
            comp.cookie_owners.pop(c, None)
    memo.last = _Last(token, last.taps, last.captures, comp, points, seen, vlan_use, monitor_use, ctx, parts, cookie_dpids, True)
    return comp
