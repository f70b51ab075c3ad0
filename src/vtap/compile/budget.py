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
from dataclasses import dataclass, field

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
from vtap.model.view import NetworkView

BASIS_SAMPLE = 0x5A3  # different bases: sampling and pool choice are independent hashes
BASIS_POOL = 0x7B1
BASIS_SPARE = 0x2C9


@dataclass(frozen=True)
class BudgetPart:
    """What one budgeted policy needs at one tap switch."""

    bucket: Bucket | None  # the tap group's bucket (None: no live monitor reachable from here)
    flows: frozenset[FlowRule] = frozenset()
    groups: frozenset[GroupRule] = frozenset()
    meters: frozenset[Meter] = frozenset()
    sent_buckets: dict = field(default_factory=dict)  # (dpid, send group) -> (monitor MAC,)
    meter_monitors: dict = field(default_factory=dict)  # (dpid, meter id) -> (tap id, monitor MAC)


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
    bucket = Bucket((SetField(REG_SHAPE, tap_id), Resubmit(TABLE_SHAPE)))
    return BudgetPart(bucket, frozenset(flows), frozenset(groups), frozenset(meters), sent, metered)


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
