"""Copy buckets: what a tap group's bucket does with a copy, per transport (a copy VLAN
tag and the forwarding group toward the monitor, a rewritten destination, a tunnel
port, a budgeted copy's resubmit, or the monitor's delivery group on its own switch);
the rewrite transport's recovery rules at the monitors' switches; and phase 6, the
copy VLAN paths every switch forwards tagged copies by.

Separate because this is where the transports differ: a tap switch's part
(compile/taps/switch.py) asks for a region's buckets and gets them with their stable
hash, and need not know how a copy travels.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from vtap.compile.budget import BudgetPart, bucket_policy, budget_part
from vtap.compile.forwarding import forward_groups
from vtap.compile.pipeline import (
    COOKIE_COPY,
    OFPVID_PRESENT,
    Owner,
    PRIO_COPY,
    PRIO_COPY_IN,
    PRIO_RECOVERY_BASE,
    TABLE_CLASSIFY,
    TABLE_COPY,
    TABLE_FORWARD,
    cookie,
    stable_hash,
)
from vtap.compile.regions import WIDTHS, Region, region, specificity
from vtap.compile.taps.closed import Closed
from vtap.compile.taps.matches import int_mac, mac_int, region_to_match
from vtap.compile.taps.points import monitor_ip
from vtap.compile.taps.state import Ctx, Shared, TapCompilation
from vtap.compile.tunnels import tunnel_bucket, tunnel_key, tunnel_kind
from vtap.model.network import Host
from vtap.model.policy import Tap, TapSpec
from vtap.model.rules import Action, Bucket, FlowRule, GroupAction, GroupRule, PopVlan, PushVlan, SetField
from vtap.model.state import PolicyState, PolicyStatus
from vtap.model.view import NetworkView

_Pairs = tuple[tuple[Bucket, str | None], ...]  # a region's buckets, each with the monitor it counts for
# A recovery entry: its match at the monitor's switch, the fields it restores, the monitor's MAC, the owners of its tap region.
Entry = tuple[Region, frozenset[SetField], str, frozenset[int]]


@dataclass(frozen=True)
class Static:
    """What a policy's buckets read from its spec: transport, IP version and monitor IP
    (a pool's: None; a tunnel's: its collector); for a tunnel also its port kind and key
    (None otherwise, so a tunnel's never equals another transport's). Part of memo keys:
    compared and hashed by value, field by field, as the tuple it replaces was."""

    transport: str
    ip_version: int | None
    monitor_ip: str | None
    kind: str | None = None
    key: int | None = None

    @classmethod
    def of(cls, tap: Tap, monitors: tuple[Host | None, ...]) -> Static:
        s = tap.spec
        if s.tunnel:
            return cls(s.transport, s.ip_version, s.monitor_ip, tunnel_kind(s), tunnel_key(tap))
        return cls(s.transport, s.ip_version, None if s.monitor_pool else monitor_ip(s, monitors[0]))

    @property
    def tunnel(self) -> bool:
        return self.kind is not None

    def target(self, monitors: tuple[Host | None, ...]) -> tuple:
        """What a bucket copies to: one monitor, a pool (by position; None: not seen), or a
        tunnel (its kind, collector and key: two keys to one collector are two copies)."""
        if self.tunnel:
            return ("tunnel", self.monitor_ip, self.kind, self.key)
        return tuple(h.mac if h is not None else None for h in monitors)


def shaped_pairs(ctx: Ctx, dpid: int, policy_ids: list[int], parts: dict[int, BudgetPart]) -> tuple[_Pairs, int]:
    """A region's buckets when one of its owners is budgeted, and their stable hash; the
    budgeted owners' parts at this switch are made into `parts` (once each)."""
    def groups() -> dict[int, GroupRule]:
        """The switch's forwarding groups, which every budgeted part there reads: made once per view."""
        return ctx.memo.get(("forward groups", ctx.memo.token(ctx.view), dpid),
                            lambda: forward_groups(ctx.view, dpid, ctx.forward))

    return _buckets_hashed(ctx.view, dpid, policy_ids, ctx.taps_by_id, ctx.monitor_of, ctx.comp, ctx.forward, ctx.budget,
                           parts, groups)


def unshaped_pairs(ctx: Ctx, dpid: int, policy_ids: list[int]) -> tuple[_Pairs, int]:
    """An unbudgeted region's buckets (with their monitors) and their stable hash, looked
    up by what they read."""
    # Keyed by the owners' inputs in id order, not their ids: which owner carries a shared
    # copy is the first of them, and the rest the buckets read is in the inputs; so the
    # many regions whose owners copy alike share one entry.
    inputs = tuple(_bucket_inputs(ctx.view, dpid, ctx.static[i], ctx.monitor_of[i][0], ctx.comp, ctx.forward)
                   for i in policy_ids)
    return ctx.memo.get(("buckets", dpid, inputs), lambda: _buckets_hashed(
        ctx.view, dpid, policy_ids, ctx.taps_by_id, ctx.monitor_of, ctx.comp, ctx.forward, ctx.budget, {}))


def _buckets(view: NetworkView, dpid: int, ids: list[int], taps_by_id: dict[int, Tap],
             monitor_of: dict[int, tuple[Host | None, ...]], comp: TapCompilation, forward: dict[int, int],
             budget: Shared, parts: dict[int, BudgetPart], switch_groups=None) -> _Pairs:
    """The tap group's buckets for a region owned by `ids`, each with the monitor it copies
    to (None for a budgeted copy: its send group counts it); budgeted copies last, since
    a meter on their way would drop whatever the datapath does after it. Budgeted owners'
    parts are made into `parts`, with the switch's forwarding groups (`switch_groups()`)."""
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
                    comp.monitor_tags, comp.deliveries, forward, budget.cut_ids, switch_groups(),
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
            ip = monitor_ip(owner.spec, monitor)
            if owner.spec.ip_version and ip:
                actions.append(SetField("ipv4_dst" if owner.spec.ip_version == 4 else "ipv6_dst", ip))
            buckets.append((Bucket((*actions, onward)), monitor.mac))
    # Metered copies last of all: an OVS meter drops the packet for what follows it.
    return tuple(sorted(buckets, key=lambda pair: (pair[1] is None, metered(pair[0], parts), _bucket_text(pair[0]))))


def _bucket_owner(ids, targets: dict[int, tuple], target: tuple) -> int:
    """Which policy carries the one copy a monitor (or pool, or tunnel) gets for a region:
    the oldest, with its transport and budget."""
    return min(i for i in ids if i > 0 and targets[i] == target)


def _bucket_inputs(view: NetworkView, dpid: int, static: Static, monitor: Host, comp: TapCompilation,
                   forward: dict[int, int]) -> tuple:
    """Everything `_buckets` reads about one unbudgeted policy at one switch (`static`: what
    it reads from the spec): a memo key."""
    reachable = monitor.dpid == dpid or view.tree_toward(monitor.dpid).get(dpid) is not None
    tunnel_port = view.devices[dpid].tunnel_ports().get(static.kind) if static.tunnel else None
    return (static, monitor.mac, monitor.dpid, reachable, forward.get(monitor.dpid), comp.monitor_tags.get(monitor.mac),
            comp.deliveries.get(monitor.mac), tunnel_port)


def _buckets_hashed(*args) -> tuple[_Pairs, int]:
    pairs = _buckets(*args)
    return pairs, _buckets_id(tuple(b for b, _ in pairs))


@functools.lru_cache(maxsize=16384)
def _buckets_id(buckets: tuple[Bucket, ...]) -> int:
    """The stable hash a tap group's id comes from (regions share a few bucket sets)."""
    return stable_hash(repr(buckets))


@functools.lru_cache(maxsize=16384)
def _bucket_text(bucket: Bucket) -> str:
    return repr(bucket)


def metered(bucket: Bucket, parts: dict[int, BudgetPart]) -> bool:
    """Whether `bucket` is a budgeted policy's whose copies go through a meter."""
    part = parts.get(bucket_policy(bucket))
    return part is not None and part.bucket == bucket and bool(part.meters)


def recovery_entries(ctx: Ctx, dpid: int, r: Region, ids: frozenset[int]) -> tuple[tuple[int, Entry], ...]:
    """The rewrite transport's recovery entries for tap region `r` of switch `dpid`, owned
    by `ids`, each as (monitor's switch, entry): one per monitor the copy travels to as
    traffic, from the policy that carries it."""
    out = []
    for tap_id in sorted(i for i in ids if i > 0):
        tap, monitor = ctx.taps_by_id[tap_id], ctx.monitor_of[tap_id][0]
        if (tap.spec.transport != "rewrite" or monitor.dpid == dpid
                or _bucket_owner(ids, ctx.budget.targets, ctx.budget.targets[tap_id]) != tap_id):
            continue
        rr, restore = _recovery(r, tap.spec, monitor)
        out.append((monitor.dpid, (rr, restore, monitor.mac, frozenset(ids))))
    return tuple(out)


def _recovery(r: Region, spec: TapSpec, monitor: Host) -> tuple[Region, frozenset[SetField]]:
    """The seed's recovery rule for one tap region: the match of its copies at the
    monitor's edge (addressed to the monitor) and the fields that give them their original
    destination back. Only fields the region pins exactly can be restored."""
    d = {f: (v, p) for f, v, p in r if f != "in_port"}
    restore: list[SetField] = []
    if "eth_dst" in d and d["eth_dst"][1] == 48:
        restore.append(SetField("eth_dst", int_mac(d["eth_dst"][0])))
    d["eth_dst"] = (mac_int(monitor.mac), 48)
    version = spec.ip_version
    if version:
        fam = "ipv4" if version == 4 else "ipv6"
        key = f"{fam}_dst"
        if key in d and d[key][1] == WIDTHS[key]:
            cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            restore.append(SetField(key, str(cls(d[key][0]))))
        ip = monitor_ip(spec, monitor)
        if ip:
            d[key] = (int(ipaddress.ip_address(ip)), WIDTHS[key])
    return region(d), frozenset(restore)


def recovery_switches(wanted: dict[int, list[Entry]], comp: TapCompilation,
                      flows: dict[int, set[FlowRule]]) -> dict[int, RecoverySwitch]:
    """Each monitor's switch's recovery rules, from the entries the tap switches want
    there: added to `flows` and to the compilation (their owners; errors, when too many)."""
    out = {}
    for dpid, entries in sorted(wanted.items()):
        sw = out[dpid] = RecoverySwitch.build(comp, dpid, entries)
        comp.states.update(sw.errors)
        if sw.rules:
            flows.setdefault(dpid, set()).update(flow for flow, _ in sw.rules.values())
        for c in sw.cookies:
            comp.cookie_owners[c] = comp.cookie_owners.get(c, frozenset()) | sw.cookie_owners(c)
    return out


class RecoverySwitch:
    """The recovery rules of one monitor's edge switch, made unambiguous, and kept region
    by region for the in-place path.

    Recovery matches lose the tap point's `in_port` and have their destination replaced
    by the monitor's, so matches from different regions, policies and switches meet at
    the monitor's switch and may coincide or overlap. They are closed under intersection,
    as tap regions are: each region restores only the fields that every recovery
    containing it agrees on, so no copy is ever "restored" to a destination that one of
    the policies it matches did not have (a copy they disagree about keeps the monitor's
    address). A region's rule depends on the entries containing it alone, and entries
    come and go with the tap regions that want them (counted: several may want one)."""

    def __init__(self, dpid: int, count: dict[Entry, int], closed: Closed | None, errors: dict[int, PolicyStatus]) -> None:
        self.dpid = dpid
        self.count = count
        self.closed = closed  # None: too many regions (`errors` says so to every owner)
        self.errors = errors
        self.rules: dict[Region, tuple[FlowRule, frozenset[int]]] = {}  # region -> its rule and the policies it serves
        self.cookies: dict[int, frozenset[Region]] = {}

    @classmethod
    def build(cls, comp: TapCompilation, dpid: int, entries: list[Entry]) -> RecoverySwitch:
        count: dict[Entry, int] = {}
        for e in entries:
            count[e] = count.get(e, 0) + 1
        matches: dict[Region, set[Entry]] = {}
        for e in count:
            matches.setdefault(e[0], set()).add(e)
        try:
            closed = Closed.of({m: frozenset(es) for m, es in matches.items()})
        except OverflowError as exc:
            return cls(dpid, count, None, {i: PolicyStatus(PolicyState.ERROR, str(exc)) for e in count for i in e[3]})
        sw = cls(dpid, count, closed, {})
        for r in closed.owners:
            sw._add(comp, r)
        return sw

    def update(self, comp: TapCompilation, out: list[Entry],
               into: list[Entry]) -> tuple[list[FlowRule], list[FlowRule], set[int]] | None:
        """The entries `out` no longer wanted, `into` wanted anew (changed in place);
        returns the flows dropped and added and the cookies whose owners may have
        changed, or None when the regions become too many (or were)."""
        if self.closed is None:
            return None
        near: dict[Region, set[Entry]] = {}
        for e, n in [(e, -1) for e in out] + [(e, 1) for e in into]:
            self.count[e] = self.count.get(e, 0) + n
            if not self.count[e]:
                del self.count[e]
            near.setdefault(e[0], set()).add(e)
        changes = {}
        for m, es in near.items():
            had = self.closed.matches.get(m, frozenset())
            now = frozenset(e for e in had | es if e in self.count)
            if now != had:
                changes[m] = now
        dropped: list[FlowRule] = []
        added: list[FlowRule] = []
        touched: set[int] = set()
        if not changes:
            return dropped, added, touched
        try:
            gone, fresh = self.closed.change(changes)
        except OverflowError:
            return None
        for r in gone:
            flow, _ = self.rules.pop(r)
            dropped.append(flow)
            touched.add(flow.cookie)
            self.cookies[flow.cookie] -= {r}
            if not self.cookies[flow.cookie]:
                del self.cookies[flow.cookie]
        for r in fresh:
            added.append(self._add(comp, r))
            touched.add(added[-1].cookie)
        return dropped, added, touched

    def cookie_owners(self, c: int) -> frozenset[int]:
        return frozenset().union(*(self.rules[r][1] for r in self.cookies.get(c, ())))

    def _add(self, comp: TapCompilation, r: Region) -> FlowRule:
        """Region `r`'s rule, from the entries containing it (all to one monitor: its MAC is pinned)."""
        entries = self.closed.owners[r]
        restore = frozenset.intersection(*(e[1] for e in entries))
        delivery = comp.deliveries[min(e[2] for e in entries)][1]
        rule = FlowRule(TABLE_FORWARD, PRIO_RECOVERY_BASE + specificity(r), region_to_match(r),
                        (*sorted(restore, key=lambda a: a.field), GroupAction(delivery)), None,
                        cookie(Owner.TAP, stable_hash(repr(r))))
        self.rules[r] = (rule, frozenset().union(*(e[3] for e in entries)))
        self.cookies[rule.cookie] = self.cookies.get(rule.cookie, frozenset()) | {r}
        return rule


def copy_paths(view: NetworkView, comp: TapCompilation, flows: dict[int, set[FlowRule]], forward: dict[int, int]) -> None:
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
