"""The controller's decisions, apart from sockets, tasks and the clock.

`ControlCore` holds what the controller knows (switches as `Device` values, links,
hosts, policies, the last compilation) and decides what each event changes, given the
time as an argument; it returns what to do (packet-outs, addresses to probe, hosts to
save or forget) and never does I/O itself. `vtap.control.controller.Controller` is the
async shell around it: OpenFlow connections, reconcilers, timers and the store. As with
Faucet's Valve, every decision can then be tested without a switch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from vtap.compile.network import compile_network
from vtap.compile.pipeline import TABLE_TAP
from vtap.compile.taps import TapCompilation, TapMemo, compile_taps
from vtap.control import relay
from vtap.control.discovery import LinkTable, LinkTransit, LldpClaim, LldpRounds, lldp_frame
from vtap.control.delivery import DeliveryLedger, GroupCounters, MonitorDelivery
from vtap.control.hosts import Claim, HostTable
from vtap.control.probing import ProbeSchedule, named_addresses
from vtap.control.roles import PortRole, PortRoles
from vtap.model.capture import CaptureTarget
from vtap.model.network import Device, Host, Link, Port, is_mac
from vtap.model.policy import Tap, PolicyPlan, TapSpec, is_single_address, plan_changes
from vtap.model.rules import SwitchRules
from vtap.model.state import PolicyState, PolicyStatus, SwitchSync, SyncState
from vtap.model.view import NetworkView


@dataclass(frozen=True)
class FrameOutcome:
    """What a frame sent up to the controller changed, and the packet-outs to make."""

    outs: tuple[relay.PacketOut, ...] = ()
    learned: Host | None = None  # new or changed
    changed: bool = False
    log: str | None = None  # something an operator should read (refused MACs, held claims)


@dataclass
class CompileJob:
    """One compile under way (see `ControlCore.compile_start`)."""

    view: NetworkView
    make: Callable[..., tuple[dict[int, SwitchRules], TapCompilation] | None]
    result: tuple[dict[int, SwitchRules], TapCompilation] | None = None

    def run(self) -> tuple[dict[int, SwitchRules], TapCompilation]:
        """The whole compile: pure, over the snapshot taken at the start."""
        return self.make(whole=True)


@dataclass
class Conflict:
    """A claim on an address a policy pins, held: since when, the last time it was made,
    and since when the owner's port has been down (None: up, as far as is known)."""

    claim: Claim
    since: float
    last: float
    owner_down_since: float | None = None

    def reason(self) -> str:
        c = self.claim
        what = f"host {c.address} seen" if c.address == c.mac else f"address {c.address} claimed by {c.mac}"
        return f"{what} at {c.dpid:016x} port {c.port}; held at {c.owner} (confirm with POST /api/v1/hosts/{c.mac}/confirm-move)"


class NamedAddresses:
    """The addresses policies name, counted, so that a policy's change is one update
    rather than a walk over every policy (asked at every compile)."""

    def __init__(self) -> None:
        self.probe: dict[str, int] = {}  # single IPs enabled policies name: looked for when no host holds them
        self.ips: dict[str, int] = {}  # single IPs any policy names: pinned
        self.macs: dict[str, int] = {}  # MACs any policy names: pinned
        self._of: dict[int, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}

    def set(self, tap: Tap) -> None:
        self.remove(tap.id)
        s = tap.spec
        macs = [m for m in (s.src_mac, s.dst_mac, s.monitor_mac) if m]
        ips = [ip for ip in (s.src_ip, s.dst_ip, s.monitor_ip) if ip and is_single_address(ip)]
        for member in s.monitor_pool or ():
            (macs if is_mac(member) else ips).append(member)
        entry = (tuple(named_addresses([tap])), tuple(ips), tuple(macs))
        self._of[tap.id] = entry
        for counts, names in zip((self.probe, self.ips, self.macs), entry):
            for name in names:
                counts[name] = counts.get(name, 0) + 1

    def remove(self, tap_id: int) -> None:
        for counts, names in zip((self.probe, self.ips, self.macs), self._of.pop(tap_id, ((), (), ())), strict=True):
            for name in names:
                counts[name] -= 1
                if not counts[name]:
                    del counts[name]

    def naming(self, *addresses: str) -> set[int]:
        """The policies that name any of these addresses or MACs."""
        wanted = set(addresses)
        return {tap_id for tap_id, (_, ips, macs) in self._of.items() if wanted.intersection(ips) or wanted.intersection(macs)}


HOST_GONE_S = 2.0  # hosts at a port down this long are forgotten (a shorter flap keeps them, and its rules local)
OWNER_GONE_S = 2.0  # a pinned owner's port down this long, and the claim made again since: the owner has left
CLAIM_FORGET_S = 30.0  # a held claim not repeated this long is forgotten
REFUSAL_LOG_S = 60.0  # refused MACs are logged once a minute per port


@dataclass
class ControlCore:
    link_lifetime: float
    lldp_key: bytes = b""
    edge_after: float = 1.0  # see control/roles.py: how long discovery has to prove a new port a link
    host_timeout: float = 3600.0
    packet_in_rate: int = 0
    max_hosts_per_port: int = 32
    devices: dict[int, Device] = field(default_factory=dict)
    taps: dict[int, Tap] = field(default_factory=dict)
    compilation: TapCompilation = field(default_factory=TapCompilation)
    generation: int = 0

    def __post_init__(self) -> None:
        self.links = LinkTable(lifetime=self.link_lifetime)
        self.roles = PortRoles(edge_after=self.edge_after)
        self.lldp = LldpRounds(self.lldp_key)
        self.transit = LinkTransit()
        self.lldp_refused: dict[str, int] = {"forged": 0, "replayed": 0, "host port": 0, "loop": 0}
        self.hosts = HostTable(max_per_port=self.max_hosts_per_port)
        self.conflicts: dict[str, Conflict] = {}
        self._pinned_ips: frozenset[str] = frozenset()
        self._pinned_macs: frozenset[str] = frozenset()
        self._refusal_logged: dict[tuple[int, int], float] = {}
        self.probes = ProbeSchedule()
        self.delivery = DeliveryLedger()
        self._monitor_labels: dict[str, str] = {}
        self._memo = TapMemo()  # what the last compile can lend the next
        self.remembered: set[int] = set()  # switches of stored links, until all have connected
        self.captures: dict[int, CaptureTarget] = {}
        self._capture_generation: dict[int, int] = {}
        self._unresolved: set[str] = set()  # addresses policies name that no host holds
        self._tap_generation: dict[int, int] = {}  # tap id -> generation of its current version (-1: not compiled yet)
        self._host_packets: dict[tuple[int, str], int] = {}
        self._watched_since: dict[int, float] = {}  # dpid -> first host-counter read this connection
        self._down_since: dict[tuple[int, int], float] = {}  # ports down (monotonic time): their hosts go after HOST_GONE_S
        self._view: NetworkView | None = None
        self.named = NamedAddresses()
        self._changed_taps: set[int] | None = None  # policies set or removed since the last compile (None: not known)
        self._labels_of: TapCompilation | None = None  # the compilation _monitor_labels is of

    # ---- the view -----------------------------------------------------------------

    def view(self) -> NetworkView:
        if self._view is None:
            self.transit.keep(self.links.links())
            self._view = NetworkView(devices=dict(self.devices), links=self.links.links(), hosts=dict(self.hosts.hosts),
                                     switch_ports=frozenset(self.links.switch_ports),
                                     conflicts={a: c.reason() for a, c in self.conflicts.items()},
                                     unknown_ports=self.roles.unknown(self.links.switch_ports))
        return self._view

    def invalidate(self) -> None:
        self._view = None

    # ---- policies -------------------------------------------------------------------

    def load(self, hosts: list[Host], taps: list[Tap], links: list[Link] = (), now: float = 0.0,
             link_grace: float = 0.0) -> None:
        """What a restarted controller knew: applied at its first compile. Stored links
        count as seen until `now + link_grace` (then LLDP must have proven them again)."""
        for link in links:
            self.links.remember(link, now + link_grace)
        self.remembered = {d for link in links for d in (link.src_dpid, link.dst_dpid)}
        for host in hosts:
            self.hosts.hosts[host.mac] = host
            if (host.dpid, host.port) not in self.links.switch_ports:
                self.roles.mark_edge((host.dpid, host.port))
        for tap in taps:
            self.taps[tap.id] = tap
            self.named.set(tap)
            self._tap_generation[tap.id] = 1
        self._changed_taps = None
        self.invalidate()

    def set_tap(self, tap: Tap) -> None:
        self.taps[tap.id] = tap
        self.named.set(tap)
        self._tap_generation[tap.id] = -1  # set by the next compile
        if self._changed_taps is not None:
            self._changed_taps.add(tap.id)

    def remove_tap(self, tap_id: int) -> None:
        self.taps.pop(tap_id, None)
        self.named.remove(tap_id)
        self._tap_generation.pop(tap_id, None)
        if self._changed_taps is not None:
            self._changed_taps.add(tap_id)

    def compile(self) -> dict[int, SwitchRules]:
        """A new generation of desired rules for every switch, from the current view
        (in place when it can, else whole, here and now)."""
        job = self.compile_start()
        return self.compile_end(job, job.result or job.run())

    def compile_start(self) -> CompileJob:
        """A new generation begins: the policies set since the last compile take it, and
        the last compilation is changed in place if it can be (`job.result`). If not,
        `job.run()` makes the whole compile from a snapshot (the view, the policies, the
        capture jobs as they are now), safe to run in another thread while this core goes
        on taking events; nothing else may compile until `compile_end`."""
        view = self.view()
        self.generation += 1
        # Policies set since the last compile (all of them, when that is not known)
        # are at -1 and take this generation.
        for ident in self._tap_generation if self._changed_taps is None else self._changed_taps:
            if self._tap_generation.get(ident, 0) < 0:
                self._tap_generation[ident] = self.generation
        for ident, gen in self._capture_generation.items():
            if gen < 0:
                self._capture_generation[ident] = self.generation
        taps, captures, changed = dict(self.taps), list(self.captures.values()), self._changed_taps
        self._changed_taps = set()  # what changes from here on is the next compile's
        job = CompileJob(view, partial(compile_network, view, taps, self.packet_in_rate, captures, self._memo, changed))
        job.result = job.make(whole=False)
        return job

    def compile_end(self, job: CompileJob, result: tuple[dict[int, SwitchRules], TapCompilation]) -> dict[int, SwitchRules]:
        desired, self.compilation = result
        known = {ip for host in job.view.hosts.values() for ip in host.ips}
        self._unresolved = self.named.probe.keys() - known
        self._pinned_ips, self._pinned_macs = self.pins()
        self.delivery.forget(set(self.compilation.deliveries))  # every compiled policy's monitors
        return desired

    def compile_failed(self) -> None:
        """A whole compile raised: the next one starts from nothing (no in-place change
        of a compilation that may be half made), with every policy in it."""
        self._memo = TapMemo()
        self._changed_taps = None

    def dry_run(self, spec: TapSpec) -> tuple[Tap, TapCompilation]:
        """What the policy would compile to now, with the others as they are."""
        tap = Tap(id=max(self.taps, default=0) + 1, spec=spec)
        others = [t for t in self.taps.values() if t.spec.name != spec.name]
        return tap, compile_taps(self.view(), others + [tap])

    def plan_apply(self, specs: list[TapSpec], *, prune: bool, compile_: bool) -> tuple[PolicyPlan, TapCompilation | None]:
        """What making the policies equal to `specs` would change, and (with `compile_`,
        a whole compile: for dry runs only) the compilation of the resulting set; new
        policies get the ids they would be given, in order."""
        plan = plan_changes(list(self.taps.values()), specs, prune=prune)
        if not compile_:
            return plan, None
        changed = {after.id: after for _, after in plan.changed}
        removed = {t.id for t in plan.removed}
        result = [changed.get(t.id, t) for t in self.taps.values() if t.id not in removed]
        next_id = max(self.taps, default=0) + 1
        added = [Tap(id=next_id + i, spec=t.spec) for i, t in enumerate(plan.added)]
        return PolicyPlan(added, plan.changed, plan.removed, plan.unchanged), compile_taps(self.view(), result + added)

    def tap_status(self, tap_id: int, switches: dict[int, SwitchSync]) -> PolicyStatus:
        """`active` once every switch the policy concerns confirmed its generation."""
        gen = self._tap_generation.get(tap_id, -1)
        compiled = self.compilation.states.get(tap_id)
        if gen < 0 or compiled is None:
            return PolicyStatus(PolicyState.PENDING, "being compiled")
        installed = self._installed(gen, compiled, switches)
        if installed.state != PolicyState.ACTIVE:
            return installed
        concerned = installed.switches
        delivery = self.monitor_delivery(tap_id)
        if delivery is not None and delivery.failing:
            return PolicyStatus(PolicyState.DEGRADED, delivery.reason, concerned)
        return PolicyStatus(PolicyState.ACTIVE, "", concerned)

    @staticmethod
    def _installed(gen: int, compiled: PolicyStatus, switches: dict[int, SwitchSync]) -> PolicyStatus:
        """`active` once every switch concerned confirmed generation `gen` of the rules."""
        concerned = compiled.switches
        if compiled.state != PolicyState.COMPILED:
            return PolicyStatus(compiled.state, compiled.reason, concerned)
        for dpid in sorted(concerned):
            sync = switches.get(dpid)
            if sync is None:
                return PolicyStatus(PolicyState.DEGRADED, f"switch {dpid:016x} is not connected", concerned)
            if sync.state == SyncState.ERROR:
                return PolicyStatus(PolicyState.ERROR, f"switch {dpid:016x}: {sync.last_error}", concerned)
            if sync.synced_generation < gen:
                return PolicyStatus(PolicyState.PENDING, f"installing on switch {dpid:016x}", concerned)
        return PolicyStatus(PolicyState.ACTIVE, "", concerned)

    # ---- capture jobs -------------------------------------------------------------------

    def set_capture(self, target: CaptureTarget) -> None:
        self.captures[target.id] = target
        self._capture_generation[target.id] = -1

    def remove_capture(self, job_id: int) -> None:
        self.captures.pop(job_id, None)
        self._capture_generation.pop(job_id, None)

    def capture_status(self, job_id: int, switches: dict[int, SwitchSync]) -> PolicyStatus:
        """`active` once the job's rules are in every switch it taps at."""
        gen = self._capture_generation.get(job_id, -1)
        compiled = self.compilation.capture_states.get(job_id)
        if gen < 0 or compiled is None:
            return PolicyStatus(PolicyState.PENDING, "being compiled")
        return self._installed(gen, compiled, switches)

    def capture_jobs(self, cookie: int) -> list[int]:
        """The capture jobs a packet-in from the tap rule with this cookie belongs to."""
        return sorted(-i for i in self.compilation.cookie_owners.get(cookie, ()) if i < 0)

    # ---- delivery -----------------------------------------------------------------------

    def delivery_observe(self, now: float, counters: dict[int, list[GroupCounters]],
                         meters: dict[tuple[int, int], tuple[int, int]] | None = None) -> list[int]:
        """One poll of the switches' vtap group counters, and of the rate-limited policies'
        meters ((dpid, meter) -> packets and bytes dropped): the policies whose monitor's
        delivery verdict changed."""
        comp = self.compilation
        drops = {key: (*comp.meter_monitors[key], *value) for key, value in (meters or {}).items() if key in comp.meter_monitors}
        changed = set(self.delivery.observe(now, counters, comp.sent_buckets, comp.deliveries, self.monitor_labels(),
                                            comp.cut_deliveries, drops))
        return sorted(tap_id for tap_id, macs in comp.monitors.items() if changed.intersection(macs))

    def monitor_labels(self) -> dict[str, str]:
        """How reasons and metrics name each compiled policy's monitor (made once per
        compile, when first asked: every second, and by stats requests and scrapes)."""
        if self._labels_of is not self.compilation:
            self._monitor_labels = self._label_monitors(self.view())
            self._labels_of = self.compilation
        return self._monitor_labels

    def _label_monitors(self, view: NetworkView) -> dict[str, str]:
        """The address the monitor's policies give, else its first IPv4, else its MAC."""
        labels: dict[str, str] = {}
        for tap_id, macs in sorted(self.compilation.monitors.items()):
            spec = self.taps[tap_id].spec if tap_id in self.taps else None
            for mac in macs:
                host = view.hosts.get(mac)
                ips = sorted(host.ips, key=lambda a: (":" in a, a)) if host else []
                labels.setdefault(mac, (spec.monitor_ip if spec and spec.monitor_ip else None) or (ips[0] if ips else mac))
        return labels

    def monitor_delivery(self, tap_id: int) -> MonitorDelivery | None:
        """The delivery of the policy's monitor (a pool's: the first failing member, else
        the first), if it is compiled."""
        found = [self.delivery.monitors[m] for m in self.compilation.monitors.get(tap_id, ()) if m in self.delivery.monitors]
        return next((d for d in found if d.failing), found[0] if found else None)

    def monitor_deliveries(self, tap_id: int) -> dict[str, MonitorDelivery]:
        """The delivery of each of the policy's monitors (one, or a pool's members seen)."""
        return {m: self.delivery.monitors[m] for m in self.compilation.monitors.get(tap_id, ()) if m in self.delivery.monitors}

    def tap_counters(self, rule_stats: list[tuple[int, int, int, int]],
                     meters: dict[tuple[int, int], tuple[int, int]] | None = None) -> dict[int, dict[str, int]]:
        """Per policy: `packets` and `bytes` of its tap rules, from (table, cookie, packets,
        bytes) of every table-1 and table-5 rule read back (a region shared by overlapping
        policies counts for each); `copies`: a budgeted policy's copies sent (its table-5
        rules, less what its meters dropped), else one per packet; `dropped`: what its
        meters dropped, from (dpid, meter) -> (packets, bytes)."""
        out = {tap_id: {"packets": 0, "bytes": 0, "copies": 0, "dropped": 0} for tap_id in self.taps}
        for table, cookie, packets, bytes_ in rule_stats:
            for tap_id in self.compilation.cookie_owners.get(cookie, ()):
                if tap_id in out:
                    if table == TABLE_TAP:
                        out[tap_id]["packets"] += packets
                        out[tap_id]["bytes"] += bytes_
                    else:
                        out[tap_id]["copies"] += packets
        for key, (packets, _) in (meters or {}).items():
            tap_id = self.compilation.meter_monitors.get(key, (None,))[0]
            if tap_id in out:
                out[tap_id]["dropped"] += packets
        for tap_id, c in out.items():
            if tap_id in self.taps and not self.taps[tap_id].spec.shaped:
                c["copies"] = c["packets"]
            else:
                c["copies"] = max(0, c["copies"] - c["dropped"])
        return out

    def tap_paths(self, tap_id: int) -> dict[str, Any]:
        """Where a policy sits, for the UI: the tapped flow's path, the tap points, the
        copies' paths to the monitor (switch dpids and host MACs)."""
        view = self.view()
        spec = self.taps[tap_id].spec
        monitors = [view.hosts[m] for m in self.compilation.monitors.get(tap_id, ()) if m in view.hosts]
        if spec.tunnel:  # the outer packets' path: to the collector, or the gateway toward it
            hop = view.hosts.get(spec.monitor_mac) if spec.monitor_mac else view.host_by_ip(spec.monitor_ip)
            monitors = [hop] if hop is not None else []
        tap_points = sorted(
            dpid for dpid, rules in self.compilation.rules_of(tap_id).items() if any(f.table == TABLE_TAP for f in rules.flows)
        )
        flows = []
        for e in spec.directions():
            a, b = view.host_named(e.src_mac, e.src_ip), view.host_named(e.dst_mac, e.dst_ip)
            if a is not None and b is not None:
                flows.append({"hosts": [a.mac, b.mac], "switches": view.path(a.dpid, b.dpid) or []})
        copies = [{"switches": view.path(dpid, m.dpid) or [], "monitor": m.mac} for dpid in tap_points for m in monitors]
        return {"id": tap_id, "flows": flows, "tap_points": tap_points, "copies": copies,
                "monitor": monitors[0].mac if monitors else None, "monitors": [m.mac for m in monitors]}

    # ---- switch events ------------------------------------------------------------------

    def switch_up(self, device: Device, now: float) -> None:
        self.devices[device.dpid] = device
        for port_no in device.up_ports():
            self._port_up(device.dpid, port_no, now, any_host=True)
        self.invalidate()

    def switch_down(self, dpid: int) -> None:
        self.devices.pop(dpid, None)
        self._watched_since.pop(dpid, None)
        self.links.drop_switch(dpid)
        self.roles.switch_gone(dpid)
        self.invalidate()

    def switch_synced(self, dpid: int, now: float) -> None:
        """The switch confirmed its rules (its LLDP rule among them): from now on, LLDP
        out of its unknown ports counts toward their chance (see control/roles.py)."""
        self.roles.switch_synced(dpid, now)

    def _port_up(self, dpid: int, port_no: int, now: float, *, any_host: bool) -> None:
        """A port is up: edge at once if it holds a host a policy names (or, with
        `any_host`, any known host: a switch that connects again, or after a restart),
        else unknown until discovery has had its chance."""
        key = (dpid, port_no)
        self._down_since.pop(key, None)
        hosted = any((h.dpid, h.port) == key for h in self.hosts.hosts.values() if any_host or h.mac in self._pinned_macs)
        self.roles.port_up(key, now, link=key in self.links.switch_ports, hosted=hosted)

    def port_changed(self, dpid: int, port: Port, now: float) -> list[Link]:
        """A port came, went, or changed state: the links gone with it."""
        device = self.devices.get(dpid)
        if device is not None:
            ports = {p.port_no: p for p in device.ports}
            ports[port.port_no] = port
            self.devices[dpid] = replace(device, ports=tuple(sorted(ports.values(), key=lambda p: p.port_no)))
        self.invalidate()
        if port.up:
            if device is not None and port.port_no in self.devices[dpid].up_ports():
                self._port_up(dpid, port.port_no, now, any_host=False)
            return []
        # What is behind a port that went down is not known any more: the port is unknown
        # again when it comes back (unless a host a policy names is there). Its hosts stay
        # where they were seen for HOST_GONE_S (a flapping link then changes its own
        # switch's rules only), then are forgotten (unless a policy names them): whoever
        # plugs in there next does not get their traffic.
        self.roles.port_down((dpid, port.port_no))
        self._down_since.setdefault((dpid, port.port_no), now)
        return self.links.drop_port(dpid, port.port_no)

    def _forget_departed(self, now: float) -> list[str]:
        """Hosts at a port down for `HOST_GONE_S` are forgotten (not those a policy names)."""
        gone = {key for key, since in self._down_since.items() if now - since >= HOST_GONE_S}
        for key in gone:
            del self._down_since[key]
        macs = [m for m, h in self.hosts.hosts.items() if (h.dpid, h.port) in gone and m not in self._pinned_macs]
        for mac in macs:
            del self.hosts.hosts[mac]
        if macs:
            self.invalidate()
        return macs

    def port_deleted(self, dpid: int, port_no: int) -> list[Link]:
        device = self.devices.get(dpid)
        if device is not None:
            self.devices[dpid] = replace(device, ports=tuple(p for p in device.ports if p.port_no != port_no))
        self.invalidate()
        self.roles.port_down((dpid, port_no))
        return self.links.drop_port(dpid, port_no)

    def port_role(self, dpid: int, port_no: int) -> PortRole:
        return self.roles.role((dpid, port_no), self.links.switch_ports)

    def decide_roles(self, now: float) -> tuple[list[tuple[int, int]], list[Host], list[str]]:
        """Unknown ports whose discovery chance is over turn edge, and the senders noted
        there are learned (not one known at another port: a frame that reached an
        unknown port proves nothing against a sighting elsewhere); hosts at a port down
        for `HOST_GONE_S` are forgotten: (the ports that turned, the hosts learned, the
        hosts forgotten)."""
        departed = self._forget_departed(now)
        marked = []
        for host in self.hosts.hosts.values():
            # A host a policy names gets no LLDP on its port (the wormhole defence), so its
            # port's chance would never come: such a port faces a host.
            if host.mac in self._pinned_macs and (host.dpid, host.port) in self.roles.probation:
                self.roles.mark_edge((host.dpid, host.port))
                marked.append((host.dpid, host.port))
        turned = self.roles.decide(now, self.links.switch_ports)
        learned = []
        for (dpid, port), senders in turned:
            for t in senders:
                known = self.hosts.hosts.get(t.mac)
                if known is not None and (known.dpid, known.port) != (dpid, port):
                    continue
                seen = self.hosts.learn(t.mac, dpid, port, t.ips, t.seen, pinned_ips=self._pinned_ips,
                                        pinned_macs=self._pinned_macs)
                if seen.changed:
                    learned.append(self.hosts.hosts[t.mac])
        if turned or marked:
            self.invalidate()
        return marked + [key for key, _ in turned], learned, departed

    def links_published(self, links, until: float) -> None:
        """Links another instance proved (a cluster's leader), as the whole set: their
        ports are links."""
        self.links.replace(links, until)
        for end in self.links.switch_ports:
            self.roles.proven_link(end)
        self.invalidate()

    def host_published(self, host: Host) -> None:
        """A cluster's leader published a host: its port faces hosts."""
        self.hosts.hosts[host.mac] = host
        if (host.dpid, host.port) not in self.links.switch_ports:
            self.roles.mark_edge((host.dpid, host.port))
        self.invalidate()

    def new_lldp_round(self, nonce: bytes) -> None:
        self.lldp.new_round(nonce)

    def lldp_frame(self, dpid: int, port: Port, now: float) -> bytes:
        """The frame to send out of the port now (counted toward the port's chance; its
        time kept, to time its arrival)."""
        self.roles.lldp_sent((dpid, port.port_no))
        self.transit.sending(dpid, port.port_no, self.lldp.nonce, now)
        return lldp_frame(dpid, port.port_no, port.hw_addr, self.lldp.key, self.lldp.nonce)

    def lldp_ports(self, dpid: int) -> list[Port]:
        """Where to send LLDP: every up port but those of hosts a policy pins. Withholding
        LLDP from a port must never make a real link unprovable (a port wrongly taken
        for a host's would stay an edge port in a loop), so only the port of a host a
        policy names is kept from a fresh proof it could relay to make a link (a
        wormhole toward the monitor or a tapped host)."""
        device = self.devices.get(dpid)
        if device is None:
            return []
        pinned_at = {h.port for h in self.hosts.hosts.values() if h.dpid == dpid and h.mac in self._pinned_macs}
        up = set(device.up_ports())
        return [p for p in device.ports if p.port_no in up and p.port_no not in pinned_at]

    def lldp_in(self, dpid: int, in_port: int, claim: LldpClaim, now: float) -> tuple[bool, list[str], str | None]:
        """An LLDP frame in vtap's format arrived: (a new link, hosts mislearned on its
        ports, why it was refused). Only this controller's frames of a live round make a
        link, never back into the port they left, nor onto the port of a host a policy pins."""
        refusal = self.lldp.judge(claim)
        if refusal is None and (claim.dpid, claim.port) == (dpid, in_port):
            refusal = "loop"
        if refusal is None and any((h.dpid, h.port) == (dpid, in_port) for h in self.hosts.hosts.values()
                                   if h.mac in self._pinned_macs):
            refusal = "host port"
        if refusal is not None:
            self.lldp_refused[refusal] += 1
            return False, [], refusal
        link = Link(claim.dpid, claim.port, dpid, in_port)
        self.transit.arrived(link, claim.nonce, now)
        new, forgotten = self.lldp_arrived(link, now)
        return new, forgotten, None

    def lldp_arrived(self, link: Link, now: float) -> tuple[bool, list[str]]:
        """A link seen (its frame already judged): (the link is new, hosts mislearned on its ports)."""
        if link.src_dpid not in self.devices or not self.links.seen(link, now):
            return False, []
        forgotten = []
        for end in ((link.src_dpid, link.src_port), (link.dst_dpid, link.dst_port)):
            forgotten += self.hosts.forget_port(*end)
            self.roles.proven_link(end)
        self.invalidate()
        return True, forgotten

    def expire_links(self, now: float) -> list[Link]:
        gone = self.links.expire(now)
        if gone:
            self.invalidate()
        return gone

    def frame_arrived(self, dpid: int, in_port: int, data: bytes, now: float) -> FrameOutcome:
        """A host's frame sent up by a switch: learn its sender, say what to send where.

        A frame whose claim is held (an address or MAC a policy pins, from elsewhere) is
        not delivered either: its lie must not reach other hosts' caches.

        A frame from a port whose role is not known yet only notes its sender (learned
        if the port turns edge) and goes nowhere: it may have been flooded there by a
        switch whose rules are not in, or sent by the switch port on the other side."""
        if self.port_role(dpid, in_port) == PortRole.UNKNOWN and (dpid, in_port) in self.roles.probation:
            sender = relay.sender(data)
            if sender is not None:
                self.roles.note((dpid, in_port), sender[0], sender[1], now)
            return FrameOutcome()
        decision = relay.decide(self.view(), dpid, in_port, data)
        if not decision.sender_mac:
            return FrameOutcome(decision.outs)
        seen = self.hosts.learn(decision.sender_mac, dpid, in_port, decision.sender_ips, now,
                                pinned_ips=self._pinned_ips, pinned_macs=self._pinned_macs)
        if seen.refused:
            last = self._refusal_logged.get((dpid, in_port))
            if last is None or now - last >= REFUSAL_LOG_S:
                self._refusal_logged[(dpid, in_port)] = now
                return FrameOutcome((), log=f"switch {dpid:016x} port {in_port}: more than {self.hosts.max_per_port} MACs; "
                                            f"{self.hosts.refused[(dpid, in_port)]} refused so far")
            return FrameOutcome()
        if seen.held:
            new = [c for c in seen.held if c.address not in self.conflicts]
            for claim in seen.held:
                conflict = self.conflicts.get(claim.address)
                if conflict is None or conflict.claim != claim:
                    self.conflicts[claim.address] = Conflict(claim, now, now)
                else:
                    conflict.last = now
            if new:
                self.invalidate()
                return FrameOutcome((), changed=True, log="; ".join(self.conflicts[c.address].reason() for c in new))
            return FrameOutcome()
        if seen.changed:
            self.invalidate()
            return FrameOutcome(decision.outs, self.hosts.hosts[decision.sender_mac], True)
        return FrameOutcome(decision.outs)

    # ---- held claims --------------------------------------------------------------------

    def conflicts_due(self, now: float) -> tuple[list[Conflict], bool]:
        """(claims applied because their owner has left, anything changed).

        An address a policy pins (source, destination, monitor) is bound by place, not by
        chatter: a monitor never sends, and a silent source or destination must not lose
        its binding by being quiet, so no timer hands it over while its owner's port is
        up, whatever the owner sends or does not send. A held claim is applied only when
        the owner's port has been down for `OWNER_GONE_S` and the claim was made again
        since (the owner left, and the address appeared elsewhere: a move), or by an
        operator (`confirm_move`). Two seconds ride out a link flap or a vNIC reset,
        which must not hand a monitor to whoever claims it meanwhile, while a host that
        really moved is followed soon after. A claim not repeated for `CLAIM_FORGET_S`
        is forgotten."""
        moved, changed = [], False
        for address, conflict in list(self.conflicts.items()):
            owner = self.hosts.hosts.get(conflict.claim.owner)
            down = owner is not None and self._port_down(owner.dpid, owner.port)
            if not down:
                conflict.owner_down_since = None
            elif conflict.owner_down_since is None:
                conflict.owner_down_since = now
            gone = conflict.owner_down_since is not None and now - conflict.owner_down_since >= OWNER_GONE_S \
                and conflict.last >= conflict.owner_down_since
            if owner is None or gone:
                self.hosts.move(conflict.claim, now)
                moved.append(conflict)
                del self.conflicts[address]
                changed = True
            elif now - conflict.last > CLAIM_FORGET_S:
                del self.conflicts[address]
                changed = True
        if changed:
            self.invalidate()
        return moved, changed

    def _port_down(self, dpid: int, port_no: int) -> bool:
        """The port is known down or gone (not: its switch is disconnected, which says
        nothing of the host behind it)."""
        device = self.devices.get(dpid)
        if device is None:
            return False
        port = device.port(port_no)
        return port is None or not port.up

    def taps_concerned(self, conflict: Conflict) -> list[int]:
        """The policies a claim concerns: those naming the address or the owner's MAC, and
        those whose monitor the owner is."""
        c = conflict.claim
        out = self.named.naming(c.address, c.owner)
        out.update(tap_id for tap_id, macs in self.compilation.monitors.items() if c.owner in macs)
        return sorted(out)

    def confirm_move(self, mac: str, now: float) -> list[Conflict]:
        """The operator says the claims of `mac` are right: apply them now."""
        mine = [c for c in self.conflicts.values() if c.claim.mac == mac]
        for conflict in mine:
            self.hosts.move(conflict.claim, now)
            del self.conflicts[conflict.claim.address]
        if mine:
            self.invalidate()
        return mine

    # ---- probing ----------------------------------------------------------------------

    def probes_due(self, now: float) -> list[str]:
        """Addresses to ask for now: those policies name that no host holds."""
        return self.probes.due(self._unresolved, now)

    # ---- host liveness ----------------------------------------------------------------

    def host_counters(self, dpid: int, counts: list[tuple[str, int]], now: float) -> list[Host]:
        """Packet counts of one switch's known-host rules, (MAC, packets): the hosts whose
        count grew were active, and their last sighting moves to `now`."""
        self._watched_since.setdefault(dpid, now)
        refreshed = []
        for mac, packets in counts:
            key = (dpid, mac)
            if packets > self._host_packets.get(key, 0):
                host = self.hosts.refresh(mac, now)
                if host is not None:
                    refreshed.append(host)
            self._host_packets[key] = packets
        return refreshed

    def is_pinned(self, mac: str) -> bool:
        """A policy names this host (as of the last compile)."""
        return mac in self._pinned_macs

    @property
    def pinned_macs(self) -> frozenset[str]:
        """The hosts policies name, as of the last compile."""
        return self._pinned_macs

    def pins(self) -> tuple[frozenset[str], frozenset[str]]:
        """(addresses, MACs) that policies name, enabled or not: their hosts are kept
        however silent (a monitor only ever receives) and their bindings are held
        against claims from elsewhere."""
        macs = set(self.compilation.deliveries) | self.named.macs.keys()  # monitors, and MACs named
        ips = self.named.ips.keys()
        macs.update(h.mac for h in self.hosts.hosts.values() if not ips.isdisjoint(h.ips))
        return frozenset(ips), frozenset(macs)

    def pinned_hosts(self) -> frozenset[str]:
        return self.pins()[1]

    def host_liveness(self, now: float) -> tuple[list[str], list[str]]:
        """(addresses to probe, hosts forgotten): a host silent for `host_timeout` is
        forgotten with its rules, unless a policy names it; then it is asked for, so that
        its answer confirms or corrects where it is."""
        pinned = self.pinned_hosts()
        probe = [ip for mac in self.hosts.silent(now, self.host_timeout, self._watched_since) if mac in pinned
                 for ip in self.hosts.hosts[mac].ips]
        gone = self.hosts.expire(now, self.host_timeout, self._watched_since, pinned)
        if gone:
            self._host_packets = {k: v for k, v in self._host_packets.items() if k[1] not in gone}
            self.invalidate()
        return probe, gone
