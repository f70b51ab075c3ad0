"""The controller's decisions, apart from sockets, tasks and the clock.

`ControlCore` holds what the controller knows (switches as `Device` values, links,
hosts, policies, the last compilation) and decides what each event changes, given the
time as an argument; it returns what to do (packet-outs, addresses to probe, hosts to
save or forget) and never does I/O itself. `vtap.control.controller.Controller` is the
async shell around it: OpenFlow connections, reconcilers, timers and the store. As with
Faucet's Valve, every decision can then be tested without a switch.

This module holds the core's state, its view, the policies and their compiles, capture
jobs and probes; its other decisions are mixins of its methods, each in a module of its
own: switch events (`core_switches.py`: ports, roles, LLDP, frames sent up), hosts
(`core_hosts.py`: held claims, pins, liveness) and delivery (`core_delivery.py`: the
monitors' delivery, the policies' counters and paths).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from vtap.compile.network import compile_network
from vtap.compile.taps import TapCompilation, TapMemo, compile_taps
from vtap.control.core_delivery import DeliveryDecisions
from vtap.control.core_hosts import OWNER_GONE_S, Conflict, HostDecisions
from vtap.control.core_switches import HOST_GONE_S, FrameOutcome, SwitchEvents
from vtap.control.discovery import LinkTable, LinkTransit, LldpRounds
from vtap.control.delivery import DeliveryLedger
from vtap.control.hosts import HostTable
from vtap.control.probing import ProbeSchedule
from vtap.control.roles import PortRoles
from vtap.model.capture import CaptureTarget
from vtap.model.network import Device, Host, Link, is_mac
from vtap.model.policy import Tap, PolicyPlan, TapSpec, index_name, is_single_address, plan_changes
from vtap.model.rules import SwitchRules
from vtap.model.state import PolicyState, PolicyStatus, SwitchSync, SwitchSyncs, SyncState
from vtap.model.view import NetworkView

# The core's public names, with those its decision modules define (the controller's
# mixins import `Conflict`, `HOST_GONE_S` and `OWNER_GONE_S` from here).
__all__ = ["HOST_GONE_S", "OWNER_GONE_S", "CompileInputs", "CompileJob", "Conflict", "ControlCore", "FrameOutcome", "NamedAddresses"]


@dataclass(frozen=True)
class CompileInputs:
    """Everything a compile reads (`compile_network` is a pure function of these): equal
    inputs give an equal compile, which is what lets a restart reuse the last one."""

    view: NetworkView
    taps: dict[int, Tap]  # of an in-place compile, the core's own (see ControlCore.policies_changed)
    packet_in_rate: int
    captures: tuple[CaptureTarget, ...]

    def differs(self, other: CompileInputs) -> str | None:
        """The first input that differs from `other`'s (for the log), or None if all are equal."""
        for name in ("packet_in_rate", "captures", "taps"):
            if getattr(self, name) != getattr(other, name):
                return name
        for name in ("devices", "links", "hosts", "switch_ports", "conflicts", "unknown_ports"):
            mine, theirs = getattr(self.view, name), getattr(other.view, name)
            if mine != theirs:
                if isinstance(mine, dict):
                    keys = sorted({k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)}, key=str)
                else:
                    keys = sorted(mine ^ theirs, key=str)
                return f"view.{name} ({len(keys)}: {', '.join(map(str, keys[:3]))}{', ...' if len(keys) > 3 else ''})"
        return None if self.view == other.view else "view"


@dataclass
class CompileJob:
    """One compile under way (see `ControlCore.compile_start`)."""

    inputs: CompileInputs
    make: Callable[..., tuple[dict[int, SwitchRules], TapCompilation] | None]
    result: tuple[dict[int, SwitchRules], TapCompilation] | None = None

    @property
    def view(self) -> NetworkView:
        return self.inputs.view

    def run(self) -> tuple[dict[int, SwitchRules], TapCompilation]:
        """The whole compile: pure, over the snapshot taken at the start."""
        return self.make(whole=True)


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
        probe = tuple(set(ips)) if s.enabled else ()  # looked for when no host holds them: not a pool's members
        for member in s.monitor_pool or ():
            (macs if is_mac(member) else ips).append(member)
        entry = (probe, tuple(ips), tuple(macs))
        self._of[tap.id] = entry
        for counts, names in ((self.probe, probe), (self.ips, ips), (self.macs, macs)):
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


@dataclass
class ControlCore(SwitchEvents, HostDecisions, DeliveryDecisions):
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
        self._given_labels: dict[str, str | None] = {}  # monitor MAC -> the address its policies give
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
        self.last_compiled: tuple[CompileInputs, tuple[dict[int, SwitchRules], TapCompilation]] | None = None
        self.named = NamedAddresses()
        self._changed_taps: set[int] | None = None  # policies set or removed since the last compile (None: not known)
        self.by_name: dict[str, Tap] = {}  # `taps` by name (plan_changes reads the names an apply declares)
        self._labels_of: tuple[NetworkView, frozenset[str]] | None = None  # the view and monitors they are of

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
            index_name(self.by_name, self.taps.get(tap.id), tap)
            self.taps[tap.id] = tap
            self.named.set(tap)
            self._tap_generation[tap.id] = 1
        self._changed_taps = None
        self.invalidate()

    def set_tap(self, tap: Tap) -> None:
        index_name(self.by_name, self.taps.get(tap.id), tap)
        self.taps[tap.id] = tap
        self.named.set(tap)
        self._tap_generation[tap.id] = -1  # set by the next compile
        if self._changed_taps is not None:
            self._changed_taps.add(tap.id)

    def remove_tap(self, tap_id: int) -> None:
        index_name(self.by_name, self.taps.pop(tap_id, None), None)
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
        captures, changed = list(self.captures.values()), self._changed_taps
        self._changed_taps = set()  # what changes from here on is the next compile's
        # In place over the policies themselves, here and now; the whole compile, which
        # may run in another thread, over a copy (a copy per change was 1.5 ms at 100,000).
        result = compile_network(view, self.taps, self.packet_in_rate, captures, self._memo, changed, whole=False)
        taps = self.taps if result is not None else dict(self.taps)
        job = CompileJob(CompileInputs(view, taps, self.packet_in_rate, tuple(captures)),
                         partial(compile_network, view, taps, self.packet_in_rate, captures, self._memo, changed))
        job.result = result
        return job

    def policies_changed(self) -> bool:
        """Whether a policy was set or removed since the last compile began (the inputs of
        an in-place compile hold the policies themselves: until then, what it compiled)."""
        return self._changed_taps is None or bool(self._changed_taps)

    def compile_end(self, job: CompileJob, result: tuple[dict[int, SwitchRules], TapCompilation]) -> dict[int, SwitchRules]:
        desired, self.compilation = result
        self.last_compiled = (job.inputs, result)
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
        plan = plan_changes(self.by_name, specs, prune=prune)
        if not compile_:
            return plan, None
        changed = {after.id: after for _, after in plan.changed}
        removed = {t.id for t in plan.removed}
        result = [changed.get(t.id, t) for t in self.taps.values() if t.id not in removed]
        plan = plan.numbered(max(self.taps, default=0) + 1)
        return plan, compile_taps(self.view(), result + plan.added)

    def tap_status(self, tap_id: int, switches: dict[int, SwitchSync]) -> PolicyStatus:
        """`active` once every switch the policy concerns confirmed its generation."""
        gen = self._tap_generation.get(tap_id, -1)
        compiled = self.compilation.states.get(tap_id)
        if gen < 0 or compiled is None:
            return PolicyStatus(PolicyState.PENDING, "being compiled")
        judged = switches.judged if isinstance(switches, SwitchSyncs) else None
        installed = judged.get((gen, compiled)) if judged is not None else None
        if installed is None:
            installed = self._installed(gen, compiled, switches)
            if judged is not None:
                judged[(gen, compiled)] = installed
        if installed.state != PolicyState.ACTIVE:
            return installed
        delivery = self.monitor_delivery(tap_id)
        if delivery is not None and delivery.failing:
            return PolicyStatus(PolicyState.DEGRADED, delivery.reason, installed.switches)
        return installed

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

    # ---- probing ----------------------------------------------------------------------

    def probes_due(self, now: float) -> list[str]:
        """Addresses to ask for now: those policies name that no host holds."""
        return self.probes.due(self._unresolved, now)
