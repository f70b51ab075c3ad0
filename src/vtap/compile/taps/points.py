"""Tap points, phases 1 to 4: which policies can be compiled now (their monitors
resolved, else their state and why), the copy VLAN ids, where each policy's and capture
job's packets enter the fabric (regions per tap switch) and the monitors' delivery groups.

Separate because these phases read the view (hosts, paths, ports) per policy and
decide each policy's state; what the switches get is made from their results alone
(compile/taps/switch.py).
"""

from __future__ import annotations

import functools
import ipaddress

from vtap.compile.budget import member_live
from vtap.compile.pipeline import COPY_VID_FIRST, COPY_VID_LAST, DELIVERY_GROUP_BASE, GROUP_ID_MASK, allocate_id, stable_hash
from vtap.compile.regions import Region, region
from vtap.compile.taps.matches import Directed, directed
from vtap.compile.taps.state import Ready, TapCompilation, TapMemo
from vtap.compile.tunnels import key_problem, tunnel_kind
from vtap.model.capture import CaptureTarget
from vtap.model.network import Host, is_mac
from vtap.model.policy import MatchSpec, Tap, TapSpec
from vtap.model.rules import Bucket, GroupRule, Output
from vtap.model.state import PolicyState, PolicyStatus
from vtap.model.view import NetworkView


def policy_states(view: NetworkView, taps: list[Tap], comp: TapCompilation, memo: TapMemo) -> list[Ready]:
    """Phase 1: which policies can be compiled now; the others get their state and reason."""
    ready = []
    token = memo.token(view)
    for tap in sorted(taps, key=lambda t: t.id):
        outcome = memo.policy("state", token, tap.id, tap.spec, lambda tap=tap: policy_state(view, tap, memo))
        if isinstance(outcome, PolicyStatus):
            comp.states[tap.id] = outcome
        else:
            ready.append(Ready(tap, *outcome))
    return ready


def policy_state(view: NetworkView, tap: Tap, memo: TapMemo) -> PolicyStatus | tuple[tuple[Host | None, ...], list[tuple[int, Directed]]]:
    """One policy's phase 1: why it cannot be compiled, or its monitors and tap points."""
    if not tap.spec.enabled:
        return PolicyStatus(PolicyState.DISABLED)
    if tap.spec.monitor_pool:
        monitors = tuple(_resolve_member(view, m) for m in tap.spec.monitor_pool)
        if not any(monitors):
            return PolicyStatus(PolicyState.PENDING, "no monitor of the pool seen on the network yet")
    elif tap.spec.tunnel:
        problem = key_problem(tap)
        if problem:
            return PolicyStatus(PolicyState.ERROR, problem)
        hop = _resolve_member(view, tap.spec.monitor_mac or tap.spec.monitor_ip)  # the collector, or its gateway
        if hop is None:
            what = f"gateway {tap.spec.monitor_mac}" if tap.spec.monitor_mac else f"collector {tap.spec.monitor_ip}"
            return PolicyStatus(PolicyState.PENDING, f"{what} not yet seen on the network")
        monitors = (hop,)
    else:
        monitor = _resolve_monitor(view, tap.spec)
        if monitor is None:
            return PolicyStatus(PolicyState.PENDING, "monitor not yet seen on the network")
        if tap.spec.transport == "rewrite":
            problem = _rewrite_problem(tap.spec, monitor)
            if problem:
                return PolicyStatus(PolicyState.ERROR, problem)
        monitors = (monitor,)
    points, state, reason = _tap_points(view, tap.id, tap.spec, memo)
    if reason:
        return PolicyStatus(state, reason)
    return monitors, points


def copy_vlan_ids(ready: list[Ready]) -> dict[str, int]:
    """Phase 2: one copy VLAN id per monitor of a vlan-transport policy, from a stable
    hash of its MAC, probing upward past ids taken (MACs in order).

    A monitor keeps its id when others come and go, and across restarts. Numbering the
    monitors in MAC order did not: a monitor not yet located after a restart, or a new
    one, shifted every id after it, and while the switches took their new rules one by
    one a copy tagged by a switch on the new plan was delivered by one on the old plan
    to another policy's monitor (the chaos soak saw 30 copies at the wrong monitor in
    one round). Two MACs whose hashes meet still depend on each other's presence."""
    span = COPY_VID_LAST - COPY_VID_FIRST + 1
    ids: dict[str, int] = {}
    taken: set[int] = set()
    for mac in sorted({h.mac for r in ready if r.tap.spec.transport == "vlan" for h in r.seen}):
        if len(taken) == span:
            break  # no id left: the policies of the monitors beyond are errors
        slot = stable_hash(mac) % span
        while slot in taken:
            slot = (slot + 1) % span
        taken.add(slot)
        ids[mac] = COPY_VID_FIRST + slot
    return ids


def tap_points_per_switch(view: NetworkView, ready: list[Ready], comp: TapCompilation, memo: TapMemo,
                          points: dict[int, tuple[tuple[int, Region], ...]]) -> dict[int, dict[Region, set[int]]]:
    """Phase 3: the directed matches each switch taps, {dpid: {region with in_port: tap ids}};
    the policies' states (compiled, or degraded where the monitor is unreachable)."""
    per_switch: dict[int, dict[Region, set[int]]] = {}
    token = memo.token(view)
    for r in ready:
        tap = r.tap
        if tap.spec.transport == "vlan" and any(h.mac not in comp.monitor_tags for h in r.seen):
            comp.states[tap.id] = PolicyStatus(PolicyState.ERROR, "no copy VLAN id left: too many monitors")
            continue
        comp.monitors[tap.id] = () if tap.spec.tunnel else tuple(h.mac for h in r.seen)  # a tunnel has no delivery group
        regions, state = memo.policy("points", token, tap.id, tap.spec, lambda r=r: policy_points(view, r, memo))
        points[tap.id] = tuple(dict.fromkeys(regions))
        for dpid, reg in regions:
            per_switch.setdefault(dpid, {}).setdefault(reg, set()).add(tap.id)
        comp.states[tap.id] = state
    return per_switch


def policy_points(view: NetworkView, r: Ready, memo: TapMemo) -> tuple[list[tuple[int, Region]], PolicyStatus]:
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
                      + " (vtap serve --tunnels local or --tunnels ovsdb makes them)")
            return [], PolicyStatus(PolicyState.DEGRADED, reason, frozenset())
    unreachable = [d for d, _ in r.points if not reachable(d)]
    concerned: set[int] = set()
    regions = []
    for dpid, way in r.points:
        if dpid in unreachable:
            continue
        regions.append((dpid, _region_at(view, way, memo)))
        concerned.add(dpid)
        for h in reachable(dpid):
            concerned.update(view.path(dpid, h.dpid) or ())
    contested = [view.conflicts[a] for h in r.seen for a in _identities(tap.spec, h) if a in view.conflicts]
    if unreachable:
        what = "no monitor of the pool reachable" if pooled else "no path to the monitor"
        reason = what + " from " + ", ".join(f"{d:016x}" for d in unreachable)
        return regions, PolicyStatus(PolicyState.DEGRADED, reason, frozenset(concerned))
    down = [tap.spec.monitor_pool[i] for i, h in enumerate(r.monitors)
            if pooled and not any(member_live(view, d, h) for d, _ in r.points)]
    if down:
        reason = "pool monitors down or not seen (their flows go to the others): " + ", ".join(down)
        return regions, PolicyStatus(PolicyState.DEGRADED, reason, frozenset(concerned))
    if contested:
        return regions, PolicyStatus(PolicyState.DEGRADED, "identity conflict: " + "; ".join(contested), frozenset(concerned))
    return regions, _compiled(frozenset(concerned))


@functools.lru_cache(maxsize=4096)
def _compiled(concerned: frozenset[int]) -> PolicyStatus:
    """The state of a compiled policy concerning these switches: one (immutable) object
    per set of switches, which thousands of policies share, not one each (0.6 KiB of
    every policy)."""
    return PolicyStatus(PolicyState.COMPILED, "", concerned)


def _region_at(view: NetworkView, way: Directed, memo: TapMemo) -> Region:
    host = view.host_named(way.source_mac, way.source_ip)
    port = host.port if host is not None else None

    def make() -> Region:
        c = dict(way.constraints)
        if port is not None:
            c["in_port"] = (port, 32)
        return region(c)

    return memo.get(("region", way.constraints, port), make)


def capture_points(view: NetworkView, captures: list[CaptureTarget], comp: TapCompilation,
                   per_switch: dict[int, dict[Region, set[int]]], memo: TapMemo) -> None:
    """Phase 3b: capture jobs' matches at their tap points, owned by -job id."""
    for c in sorted(captures, key=lambda c: c.id):
        points, state, reason = _tap_points(view, -c.id, c.match, memo)
        if reason:
            comp.capture_states[c.id] = PolicyStatus(state, reason)
            continue
        for dpid, way in points:
            per_switch.setdefault(dpid, {}).setdefault(_region_at(view, way, memo), set()).add(-c.id)
        comp.capture_states[c.id] = PolicyStatus(PolicyState.COMPILED, "", frozenset(d for d, _ in points))


def delivery_groups(view: NetworkView, comp: TapCompilation) -> dict[int, set[GroupRule]]:
    """Phase 4: one fast-failover group per monitor at its edge switch, its one bucket
    watching the monitor's port: copies reach the monitor only through it."""
    groups: dict[int, set[GroupRule]] = {}
    for mac in sorted({m for macs in comp.monitors.values() for m in macs}):
        monitor = view.hosts[mac]
        gid = allocate_id(DELIVERY_GROUP_BASE, GROUP_ID_MASK, stable_hash("delivery " + mac),
                          {g.group_id for g in groups.get(monitor.dpid, ())})
        comp.deliveries[mac] = (monitor.dpid, gid)
        groups.setdefault(monitor.dpid, set()).add(GroupRule(gid, "ff", (Bucket((Output(monitor.port),), monitor.port),)))
    return groups


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
    if spec.ip_version and monitor_ip(spec, monitor) is None:
        return f"transport rewrite needs the monitor's IPv{spec.ip_version} address; none known"
    return None


def monitor_ip(spec: TapSpec, monitor: Host) -> str | None:
    if spec.monitor_ip:
        return spec.monitor_ip
    for ip in monitor.ips:
        if ipaddress.ip_address(ip).version == spec.ip_version:
            return ip
    return None


def _tap_points(view: NetworkView, ident: int, spec: MatchSpec, memo: TapMemo) -> tuple[list[tuple[int, Directed]], PolicyState | None, str]:
    """(switch, directed match) pairs where the matched packets enter the fabric;
    else the state and reason why there are none."""
    points = []
    for d in memo.get(("directed", ident, spec), lambda: directed(ident, spec)):
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
