"""Copy budgets: a policy's copies cut to a snap length, sampled by flow, rate-limited, or
spread over a pool of monitors (TapSpec's `snaplen`, `sample`, `rate_limit_pps`,
`monitor_pool`). Pure: the compiler (compile/taps/buckets.py) calls it per tap switch and policy.

A budgeted policy's bucket in a tap group does not carry the copy itself: it writes the
policy's id into a register and resubmits to table 4 (a group bucket is an action set in
Open vSwitch: it cannot hash or truncate). There, and in table 5, per tap switch:

- table 4 (shape) hashes the flow with OVS's `multipath`, `symmetric_l3l4+udp`: IP
  addresses, protocol and TCP/UDP/SCTP ports, symmetric, so a flow's two directions get
  the same value wherever they are tapped. Sampling keeps hash mod N == 0 (`modulo_n`);
  a pool picks member i by highest random weight over the pool's positions (`hrw`), so a
  member coming or going moves no other member's flows. Flows of a member that is down
  (its port, or no path from this switch) get a second hash over the live members.
- table 5 (send) matches the hashes: a flow sampled out meets no rule (a resubmit that
  finds none does nothing); the others go through the policy's meter for that monitor
  (an OpenFlow meter dropping beyond the rate: copies only, never the original, as the
  tap rule then writes its group to the action set, run after forwarding) to a send
  group, whose one bucket counts what is sent and carries the copy on as an unbudgeted
  one goes (copy VLAN tag and forwarding group, or the monitor's delivery group).
- a cut copy leaves through the same fast-failover choice, made by a cut group whose
  buckets name their port in a register and resubmit to table 6 (truncate), where
  `output(port=P,max_len=N)` sends its first N bytes: OVS truncates only from a flow's
  actions, and it cuts the packet as it entered (its datapath truncates before it pushes
  the copy VLAN tag, which the monitor's switch pops again).

Rate limits are per policy: the rate is split evenly over the policy's tap switches and
live monitors (one meter each), so that the copies never exceed it; with uneven load the
total may stay below it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vtap.compile.pipeline import (
    BUDGET_ID_MASK,
    COOKIE_COPY,
    CUT_GROUP_BASE,
    OFPVID_PRESENT,
    Owner,
    POLICY_METER_BASE,
    POLICY_METER_MASK,
    PRIO_BUDGET,
    REG_CUT,
    REG_HASH,
    REG_PORT,
    REG_SHAPE,
    REG_SPARE,
    SEND_GROUP_BASE,
    TABLE_SEND,
    TABLE_SHAPE,
    TABLE_TRUNCATE,
    allocate_id,
    cookie,
    stable_hash,
)
from vtap.model.network import Host
from vtap.model.policy import TapSpec
from vtap.model.rules import (
    Action,
    Bucket,
    FlowRule,
    GroupAction,
    GroupRule,
    Meter,
    Multipath,
    OutputTrunc,
    PushVlan,
    Resubmit,
    SetField,
    match,
)
from vtap.model.state import PolicyState, PolicyStatus
from vtap.model.view import NetworkView

BASIS_SAMPLE = 0x5A3  # different bases: sampling and pool choice are independent hashes
BASIS_POOL = 0x7B1
BASIS_SPARE = 0x2C9


@dataclass(frozen=True, slots=True)
class BudgetPart:
    """What one budgeted policy needs at one tap switch (tuples: a switch keeps the parts
    in use, thousands of them)."""

    bucket: Bucket | None  # the tap group's bucket (None: no live monitor reachable from here)
    flows: tuple[FlowRule, ...] = ()
    groups: tuple[GroupRule, ...] = ()
    meters: tuple[Meter, ...] = ()
    sent_buckets: tuple = ()  # ((dpid, send group), (monitor MAC,)) pairs
    meter_monitors: tuple = ()  # ((dpid, meter id), (tap id, monitor MAC)) pairs


class SwitchBudgets:
    """The budgeted policies' parts at one tap switch, as its regions use them: a part is
    the switch's while some region's tap group has its bucket (`hold`, `release`), and is
    made once per policy and change of the switch (`made`, filled by
    compile/taps/buckets.py, emptied by `admit`: a part in use is kept in `used`). Parts
    may share rules (a cut copy's truncation flows, the cut groups, the odd send group),
    counted by the parts that have them; a part whose group or meter ids another part
    holds is not admitted (`admit`: the younger policy gets an error, as ids are the
    policy's own). What changed since `take` was last called is noted for the switch's
    rules."""

    def __init__(self, dpid: int) -> None:
        self.dpid = dpid
        self.made: dict[int, BudgetPart] = {}
        self.used: dict[int, tuple[BudgetPart, int, bool]] = {}  # policy -> (its part, regions holding it, admitted)
        self.shared: dict[FlowRule, int] = {}  # truncation flows (the others are the policy's own) -> parts with it
        self.groups: dict[int, tuple[GroupRule, int]] = {}  # group id -> (group, parts that have it)
        self.meters: dict[int, Meter] = {}
        self.sent: dict = {}  # (dpid, send group) -> (monitor MAC,)
        self.meter_monitors: dict = {}
        self.cookies: dict[int, int] = {}  # a part's flows' cookie (the policy's own) -> the policy
        self._fresh: list[int] = []  # policies held since `admit`
        self._added: list[FlowRule | GroupRule] = []
        self._dropped: list[FlowRule | GroupRule] = []
        self._touched: set[int] = set()

    def copy(self) -> SwitchBudgets:
        other = SwitchBudgets(self.dpid)
        for name in ("used", "shared", "groups", "meters", "sent", "meter_monitors", "cookies"):
            setattr(other, name, dict(getattr(self, name)))
        return other

    def hold(self, tap_id: int) -> None:
        """One more region's tap group has the policy's bucket (its part is in `made`)."""
        if tap_id in self.used:
            part, n, admitted = self.used[tap_id]
            self.used[tap_id] = (part, n + 1, admitted)
        else:
            self.used[tap_id] = (self.made[tap_id], 1, False)
            self._fresh.append(tap_id)

    def release(self, tap_id: int) -> None:
        """One fewer: with none left, the part's rules go."""
        part, n, admitted = self.used.pop(tap_id)
        if n > 1:
            self.used[tap_id] = (part, n - 1, admitted)
        elif admitted:
            self._remove(tap_id, part)

    def admit(self) -> dict[int, PolicyStatus]:
        """The parts held anew since the last call, their rules added, oldest policy first;
        the errors of those whose ids are taken (their rules left out: their bucket then
        resubmits to no rule, so no copy)."""
        errors: dict[int, PolicyStatus] = {}
        for tap_id in sorted(self._fresh):
            part, n, _ = self.used[tap_id]
            # Ids derive from the policy id (send groups from its low 17 bits, meters 20):
            # two policies far apart in age may meet.
            if (any(g.group_id in self.groups and self.groups[g.group_id][0] != g for g in part.groups)
                    or any(m.meter_id in self.meters for m in part.meters)):
                errors[tap_id] = PolicyStatus(PolicyState.ERROR, f"its budget's group or meter ids are taken at switch "
                                                         f"{self.dpid:016x} by an older policy: re-create it for a new id")
                continue
            self.used[tap_id] = (part, n, True)
            self._put(tap_id, part)
        self._fresh, self.made = [], {}
        return errors

    def take(self) -> tuple[list[FlowRule | GroupRule], list[FlowRule | GroupRule], set[int]]:
        """The flows and groups dropped and added, and the cookies touched, since the last call."""
        out = self._dropped, self._added, self._touched
        self._dropped, self._added, self._touched = [], [], set()
        return out

    def _put(self, tap_id: int, part: BudgetPart) -> None:
        for f in part.flows:
            n = self.shared.get(f, 0) if f.cookie == COOKIE_COPY else 0
            if not n:
                self._added.append(f)
            if f.cookie == COOKIE_COPY:
                self.shared[f] = n + 1
        for g in part.groups:
            n = self.groups.get(g.group_id, (g, 0))[1]
            if not n:
                self._added.append(g)
            self.groups[g.group_id] = (g, n + 1)
        self.meters.update((m.meter_id, m) for m in part.meters)
        self.sent.update(part.sent_buckets)
        self.meter_monitors.update(part.meter_monitors)
        for c in {f.cookie for f in part.flows if f.cookie != COOKIE_COPY}:
            self.cookies[c] = tap_id
            self._touched.add(c)

    def _remove(self, tap_id: int, part: BudgetPart) -> None:
        for f in part.flows:
            n = self.shared.pop(f) if f.cookie == COOKIE_COPY else 1
            if n > 1:
                self.shared[f] = n - 1
            else:
                self._dropped.append(f)
        for g in part.groups:
            n = self.groups.pop(g.group_id)[1]
            if n > 1:
                self.groups[g.group_id] = (g, n - 1)
            else:
                self._dropped.append(g)
        for m in part.meters:
            del self.meters[m.meter_id]
        for key, _ in part.sent_buckets:
            if key[1] not in self.groups:
                del self.sent[key]
        for key, _ in part.meter_monitors:
            del self.meter_monitors[key]
        for c in {f.cookie for f in part.flows if f.cookie != COOKIE_COPY}:
            del self.cookies[c]
            self._touched.add(c)


def member_live(view: NetworkView, dpid: int, host: Host | None) -> bool:
    """A monitor a copy from `dpid` can reach now: seen, its switch connected, its port up."""
    if host is None or host.dpid not in view.devices:
        return False
    port = view.devices[host.dpid].port(host.port)
    if port is None or not port.up:
        return False
    return host.dpid == dpid or view.tree_toward(host.dpid).get(dpid) is not None


def cut_group_ids(view: NetworkView, monitors: list[str]) -> dict[tuple[str, object], int]:
    """Ids of the cut groups, the same on every switch: ("forward", destination dpid) and
    ("deliver", monitor MAC)."""
    keys = [("forward", d) for d in sorted(view.devices)] + [("deliver", m) for m in sorted(set(monitors))]
    ids: dict[tuple[str, object], int] = {}
    taken: set[int] = set()
    for key in keys:
        ids[key] = allocate_id(CUT_GROUP_BASE, BUDGET_ID_MASK, stable_hash(repr(key)), taken)
        taken.add(ids[key])
    return ids


def send_group_id(tap_id: int, member: int) -> int:
    return SEND_GROUP_BASE | ((tap_id << 4 | member) & BUDGET_ID_MASK)


def meter_id(tap_id: int, member: int) -> int:
    return POLICY_METER_BASE | ((tap_id << 4 | member) & POLICY_METER_MASK)


def budget_part(view: NetworkView, dpid: int, tap_id: int, spec: TapSpec, members: tuple[Host | None, ...],
                tap_switches: int, monitor_tags: dict[str, int], deliveries: dict[str, tuple[int, int]],
                forward: dict[int, int], cut_ids: dict[tuple[str, object], int],
                forward_groups: dict[int, GroupRule], pooled: bool) -> BudgetPart:
    """The tap-group bucket, rules, groups and meters of budgeted policy `tap_id` at tap
    switch `dpid`; `members` are its monitors by pool position (None: not seen yet),
    `forward_groups` this switch's forwarding groups by destination switch. A pool's member
    counts while its port is up; a single monitor, like an unbudgeted one's, while a path
    leads to it (its delivery group drops what a down port cannot take)."""
    if pooled:
        live = [i for i, h in enumerate(members) if member_live(view, dpid, h)]
    else:
        h = members[0]
        live = [0] if h.dpid == dpid or view.tree_toward(h.dpid).get(dpid) is not None else []
    if not live:
        return BudgetPart(None)
    tap_cookie = cookie(Owner.TAP, tap_id)
    hashed = len(members) > 1  # a pool of one needs no hash to choose
    dead = [i for i in range(len(members)) if i not in live]
    hashes: list[Action] = []
    if spec.sample > 1:
        hashes.append(Multipath("modulo_n", BASIS_SAMPLE, spec.sample, REG_HASH, 0, 16))
    if hashed:
        hashes.append(Multipath("hrw", BASIS_POOL, len(members), REG_HASH, 16, 16))
    if dead and len(live) > 1:
        hashes.append(Multipath("hrw", BASIS_SPARE, len(live), REG_SPARE, 0, 16))
    flows = {FlowRule(TABLE_SHAPE, PRIO_BUDGET, ((REG_SHAPE, tap_id),), (*hashes, Resubmit(TABLE_SEND)), None, tap_cookie)}
    rate = math.ceil(spec.rate_limit_pps / (tap_switches * len(live))) if spec.rate_limit_pps else None
    groups: set[GroupRule] = set()
    meters: set[Meter] = set()
    sent: dict = {}
    metered: dict = {}
    cut_ports: set[tuple[int, int]] = set()  # (port, snap length) table 6 must send
    for i in live:
        host = members[i]
        gid = send_group_id(tap_id, i)
        actions, ports, cut = _carry(dpid, host, spec, monitor_tags, deliveries, forward, cut_ids, forward_groups)
        cut_ports.update((p, cut) for p in ports)
        groups.add(GroupRule(gid, "all", (Bucket(actions),)))
        sent[(dpid, gid)] = (host.mac,)
        meter = None
        if rate:
            meter = meter_id(tap_id, i)
            meters.add(Meter(meter, rate, max(1, rate // 10)))
            metered[(dpid, meter)] = (tap_id, host.mac)
        # This member's own flows, and (when some are down) its share of theirs.
        for pool_value, spare in [(i, None)] + [(j, live.index(i)) for j in dead]:
            m = _send_match(tap_id, spec, hashed, pool_value, spare if len(live) > 1 else None)
            flows.add(FlowRule(TABLE_SEND, PRIO_BUDGET, m, (GroupAction(gid),), None, tap_cookie, meter))
    for cut_key in {k for k in cut_ids if _uses(k, dpid, members, live, spec)}:
        groups.add(_cut_group(cut_ids[cut_key], cut_key, members, forward_groups))
    for port, cut in sorted(cut_ports):
        flows.add(FlowRule(TABLE_TRUNCATE, PRIO_BUDGET, match(**{REG_CUT: cut, REG_PORT: port}), (OutputTrunc(port, cut),),
                           None, COOKIE_COPY))
    return BudgetPart(shape_bucket(tap_id), tuple(flows), tuple(groups), tuple(meters), tuple(sent.items()),
                      tuple(metered.items()))


def shape_bucket(tap_id: int) -> Bucket:
    """A budgeted policy's bucket in a tap group: its id in a register, on to table 4."""
    return Bucket((SetField(REG_SHAPE, tap_id), Resubmit(TABLE_SHAPE)))


def bucket_policy(bucket: Bucket) -> int | None:
    """The budgeted policy whose `shape_bucket` this is, else None: which policy's part a
    tap group's bucket leads to, without looking through them all."""
    first = bucket.actions[0] if bucket.actions else None
    if isinstance(first, SetField) and first.field == REG_SHAPE and bucket == shape_bucket(first.value):
        return first.value
    return None


def _send_match(tap_id: int, spec: TapSpec, hashed: bool, pool_value: int, spare: int | None) -> tuple:
    """Table 5's match for the flows pool member `pool_value` takes: the policy's shape,
    the sampling hash's zero, the member's position; and, for the flows of a member that
    is down, the spare hash's choice of this member (`spare`: its place among the live)."""
    m = [(REG_SHAPE, tap_id)]
    value = mask = 0
    if spec.sample > 1:
        mask |= 0xFFFF
    if hashed:
        value, mask = value | pool_value << 16, mask | 0xFFFF0000
    if mask:  # a switch reports an all-ones mask as an exact match
        m.append((REG_HASH, value if mask == 0xFFFFFFFF else (value, mask)))
    if spare is not None:
        m.append((REG_SPARE, (spare, 0xFFFF)))
    return tuple(sorted(m))


def _uses(key: tuple[str, object], dpid: int, members, live: list[int], spec: TapSpec) -> bool:
    """Whether this policy's cut copies at `dpid` go through cut group `key`."""
    if not spec.snaplen:
        return False
    kind, what = key
    hosts = [members[i] for i in live]
    if kind == "deliver":
        return any(h.mac == what and h.dpid == dpid for h in hosts)
    return any(h.dpid == what and h.dpid != dpid for h in hosts)


def _carry(dpid: int, host: Host, spec: TapSpec, monitor_tags: dict[str, int], deliveries: dict[str, tuple[int, int]],
           forward: dict[int, int], cut_ids: dict, forward_groups: dict[int, GroupRule]) -> tuple[tuple[Action, ...], list[int], int]:
    """The send group's bucket toward `host`, the ports a cut copy may leave by, its cut."""
    if host.dpid == dpid:
        if not spec.snaplen:
            return (GroupAction(deliveries[host.mac][1]),), [], 0
        return (SetField(REG_CUT, spec.snaplen), GroupAction(cut_ids[("deliver", host.mac)])), [host.port], spec.snaplen
    tag: tuple[Action, ...] = (PushVlan(0x8100), SetField("vlan_vid", OFPVID_PRESENT | monitor_tags[host.mac]))
    if not spec.snaplen:
        return (*tag, GroupAction(forward[host.dpid])), [], 0
    ports = [b.watch_port for b in forward_groups[host.dpid].buckets]
    return (*tag, SetField(REG_CUT, spec.snaplen), GroupAction(cut_ids[("forward", host.dpid)])), ports, spec.snaplen


def _cut_group(gid: int, key: tuple[str, object], members, forward_groups: dict[int, GroupRule]) -> GroupRule:
    """A fast-failover group choosing a cut copy's port as its uncut twin would, each bucket
    handing it to table 6 with the port named."""
    kind, what = key
    if kind == "deliver":
        host = next(h for h in members if h is not None and h.mac == what)
        ports = [host.port]
    else:
        ports = [b.watch_port for b in forward_groups[what].buckets]
    return GroupRule(gid, "ff", tuple(Bucket((SetField(REG_PORT, p), Resubmit(TABLE_TRUNCATE)), p) for p in ports))
