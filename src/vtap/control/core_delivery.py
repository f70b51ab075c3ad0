"""The core's reading of what policies' copies do: whether they reach their monitors
(the delivery groups' counters, the meters' drops), how much each policy tapped and
copied, and where its copies go.

Part of `ControlCore` (a mixin of its methods, on its state: see `control/core.py`),
kept apart from the policies' compiles: it changes nothing a compile reads, and reads
the last compilation against the counters the controller polls and the view. The
verdicts themselves are kept by `delivery.py`'s ledger."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from types import MappingProxyType
from typing import Any

from vtap.compile.pipeline import TABLE_TAP
from vtap.control.delivery import GroupCounters, MonitorDelivery
from vtap.model.view import NetworkView

COUNT_STEP = 5000  # policies or rules read back that one step of tap_counters_in_steps takes (a few ms)
# The counters of every policy no rule counted for: one read-only object, not a dict each
# (2.3 MiB at 10,000 policies, twice while the event stream's next read replaced the last).
NOT_COUNTED: Mapping[str, int] = MappingProxyType({"packets": 0, "bytes": 0, "copies": 0, "dropped": 0})


class DeliveryDecisions:
    """The core's delivery, counters and paths (see the module docstring)."""

    def delivery_observe(self, now: float, counters: dict[int, list[GroupCounters]],
                         meters: dict[tuple[int, int], tuple[int, int]] | None = None) -> list[int]:
        """One poll of the switches' vtap group counters, and of the rate-limited policies'
        meters ((dpid, meter) -> packets and bytes dropped): the policies whose monitor's
        delivery verdict changed."""
        comp = self.compilation
        drops = {key: (*comp.meter_monitors[key], *value) for key, value in (meters or {}).items() if key in comp.meter_monitors}
        changed = set(self.delivery.observe(now, counters, comp.sent_buckets, comp.deliveries, self.monitor_labels(),
                                            comp.cut_deliveries, drops))
        if not changed:
            return []  # the usual second: no walk over every policy
        return sorted(tap_id for tap_id, macs in comp.monitors.items() if changed.intersection(macs))

    def monitor_labels(self) -> dict[str, str]:
        """How reasons and metrics name each compiled policy's monitor (asked every
        second, and by stats requests and scrapes): the address the monitor's policies
        give, else its host's first IPv4, else its MAC. What the policies give is found
        again only when the set of monitors changes (a walk over every policy: 150-250 ms
        of the loop at 100,000, once after each view change before), the hosts' part
        when the view changes. A label is an address of the monitor's host either way."""
        view, monitors = self.view(), frozenset(self.compilation.deliveries)
        if self._labels_of is None or self._labels_of[1] != monitors:
            self._given_labels = self._labels_given()
        if self._labels_of is None or self._labels_of[0] is not view or self._labels_of[1] != monitors:
            self._monitor_labels = {mac: given or _first_address(view, mac) for mac, given in self._given_labels.items()}
            self._labels_of = (view, monitors)
        return self._monitor_labels

    def _labels_given(self) -> dict[str, str | None]:
        """Each monitor's MAC -> the monitor IP its first policy (by id) gives, if any."""
        given: dict[str, str | None] = {}
        for tap_id, macs in sorted(self.compilation.monitors.items()):
            spec = self.taps[tap_id].spec if tap_id in self.taps else None
            for mac in macs:
                given.setdefault(mac, spec.monitor_ip if spec and spec.monitor_ip else None)
        return given

    def monitor_delivery(self, tap_id: int) -> MonitorDelivery | None:
        """The delivery of the policy's monitor (a pool's: the first failing member, else
        the first), if it is compiled."""
        first = None
        for mac in self.compilation.monitors.get(tap_id, ()):  # no list per policy: health asks it of every one
            known = self.delivery.monitors.get(mac)
            if known is not None:
                if known.failing:
                    return known
                first = first or known
        return first

    def monitor_deliveries(self, tap_id: int) -> dict[str, MonitorDelivery]:
        """The delivery of each of the policy's monitors (one, or a pool's members seen)."""
        return {m: self.delivery.monitors[m] for m in self.compilation.monitors.get(tap_id, ()) if m in self.delivery.monitors}

    def tap_counters_in_steps(self, rule_stats: list[tuple[int, int, int, int]],
                              meters: dict[tuple[int, int], tuple[int, int]] | None = None,
                              ) -> Generator[None, None, dict[int, Mapping[str, int]]]:
        """Per policy: `packets` and `bytes` of its tap rules, from (table, cookie, packets,
        bytes) of every table-1 and table-5 rule read back (a region shared by overlapping
        policies counts for each); `copies`: a budgeted policy's copies sent (its table-5
        rules, less what its meters dropped), else one per packet; `dropped`: what its
        meters dropped, from (dpid, meter) -> (packets, bytes). The generator's value.

        It pauses (a bare `yield`) every COUNT_STEP policies or rules: whole, it held the
        controller's loop ~200 ms at 100,000 policies, once a second while the UI's event
        stream was open. What it reads may change between steps (a compile): a policy
        added meanwhile is left out, one removed is dropped, and a rule is counted for the
        policies its cookie names when its step comes."""
        ids = list(self.taps)
        out: dict[int, Mapping[str, int]] = {}
        for start in range(0, len(ids), COUNT_STEP):
            out.update(dict.fromkeys(ids[start:start + COUNT_STEP], NOT_COUNTED))
            yield

        def counted(tap_id: int) -> dict[str, int]:
            c = out[tap_id]
            if c is NOT_COUNTED:
                c = out[tap_id] = dict(NOT_COUNTED)
            return c

        for start in range(0, len(rule_stats), COUNT_STEP):
            owners = self.compilation.cookie_owners
            for table, cookie, packets, bytes_ in rule_stats[start:start + COUNT_STEP]:
                for tap_id in owners.get(cookie, ()):
                    if tap_id in out:
                        c = counted(tap_id)
                        if table == TABLE_TAP:
                            c["packets"] += packets
                            c["bytes"] += bytes_
                        else:
                            c["copies"] += packets
            yield
        for key, (packets, _) in (meters or {}).items():
            tap_id = self.compilation.meter_monitors.get(key, (None,))[0]
            if tap_id in out:
                counted(tap_id)["dropped"] += packets
        for start in range(0, len(ids), COUNT_STEP):
            for tap_id in ids[start:start + COUNT_STEP]:
                tap, c = self.taps.get(tap_id), out.get(tap_id)
                if tap is None:
                    out.pop(tap_id, None)
                elif c is NOT_COUNTED:
                    continue  # no copies either
                elif not tap.spec.shaped:
                    c["copies"] = c["packets"]
                else:
                    c["copies"] = max(0, c["copies"] - c["dropped"])
            yield
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


def _first_address(view: NetworkView, mac: str) -> str:
    """The host's first IPv4 address (else its first address), else the MAC."""
    host = view.hosts.get(mac)
    ips = sorted(host.ips, key=lambda a: (":" in a, a)) if host else []
    return ips[0] if ips else mac
