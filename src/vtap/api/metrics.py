"""`GET /metrics`: what the controller knows, in Prometheus' text format.

Made with `prometheus-client`, in Prometheus' naming conventions (`vtap_` prefix, base
units, `_total` on counters). The per-policy counters come from the switches' flow
counters, read when Prometheus scrapes (one flow-stats request per switch with tap
rules), so a scrape shows what the tap rules have matched up to that moment. Reading
needs a viewer's token, as every other read does (Prometheus: `authorization:
credentials_file`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from vtap.api.deps import Ctl, Heavy, Registry, viewer
from vtap.api.pacing import HeavyWork
from vtap.control.controller import Controller
from vtap.model.network import dpid_str
from vtap.model.state import PolicyState, SyncState

SLICE = 250  # policies one slice of heavy work writes (1,250 lines of state)


class _Snapshot:
    """A collector over one moment of the controller: every family but the per-policy
    ones (`_per_policy`), whose size is the controller's, not the policies'."""

    def __init__(self, ctl: Controller):
        self.ctl = ctl

    def collect(self):
        ctl = self.ctl
        view = ctl.view()
        yield _gauge("vtap_switches", "switches connected", len(view.devices))
        yield _gauge("vtap_switches_in_sync", "switches whose rules are the desired ones, confirmed by barrier",
                     sum(ctl.sync_state(d) == SyncState.IN_SYNC for d in view.devices))
        yield _gauge("vtap_links", "inter-switch links, one per direction, proven by authenticated LLDP", len(view.links))
        yield _gauge("vtap_hosts", "hosts known", len(view.hosts))
        yield _gauge("vtap_identity_conflicts", "claims on addresses that policies pin, held", len(ctl.conflicts()))

        names = [("sent", "packets", "copies sent toward a monitor at tap points"),
                 ("sent", "bytes", "bytes of copies sent toward a monitor at tap points"),
                 ("delivered", "packets", "copies handed to a monitor's live port at its edge switch"),
                 ("delivered", "bytes", "bytes of copies handed to a monitor's live port")]
        families = {(w, u): CounterMetricFamily(f"vtap_monitor_copies_{w}_{u}", doc, labels=["monitor", "mac"]) for w, u, doc in names}
        received = CounterMetricFamily("vtap_monitor_copies_received_at_tool_packets",
                                       "copies the tool's sensor counted on its interface (monitors with a sensor)",
                                       labels=["monitor", "mac"])
        failing = GaugeMetricFamily("vtap_monitor_delivery_failing", "1 while copies stop reaching the monitor, or its tool",
                                    labels=["monitor", "mac"])
        labels = ctl.monitor_labels()
        for mac, d in sorted(ctl.deliveries().items()):
            key = [labels.get(mac, mac), mac]
            families[("sent", "packets")].add_metric(key, d.sent_packets)
            families[("sent", "bytes")].add_metric(key, d.sent_bytes)
            families[("delivered", "packets")].add_metric(key, d.delivered_packets)
            families[("delivered", "bytes")].add_metric(key, d.delivered_bytes)
            failing.add_metric(key, 1.0 if d.failing else 0.0)
            if d.received_packets is not None:
                received.add_metric(key, d.received_packets)
        yield from families.values()
        yield received
        yield failing

        batches = CounterMetricFamily("vtap_reconcile_batches", "rule batches (bundles) sent to a switch since it connected", labels=["dpid"])
        rules = CounterMetricFamily("vtap_reconcile_rules_sent", "flow, group and meter changes sent to a switch", labels=["dpid"])
        seconds = CounterMetricFamily("vtap_reconcile_seconds", "time spent reconciling a switch", labels=["dpid"])
        for dpid, rec in sorted(ctl.reconcilers.items()):
            batches.add_metric([dpid_str(dpid)], rec.status.batches)
            rules.add_metric([dpid_str(dpid)], rec.status.rules_sent)
            seconds.add_metric([dpid_str(dpid)], rec.status.seconds)
        yield batches
        yield rules
        yield seconds

        ins = CounterMetricFamily("vtap_packet_ins", "frames switches sent to the controller, by why", labels=["reason"])
        for reason, n in sorted(ctl.packet_ins_by_reason.items()):
            ins.add_metric([reason], n)
        yield ins
        lldp = CounterMetricFamily("vtap_lldp_refused", "LLDP frames refused, by why", labels=["reason"])
        for reason, n in sorted(ctl.lldp_refused().items()):
            lldp.add_metric([reason], n)
        yield lldp
        refused = CounterMetricFamily("vtap_refused_macs", "MACs refused on a port beyond --max-hosts-per-port", labels=["dpid", "port"])
        for (dpid, port), n in sorted(ctl.refused_macs().items()):
            refused.add_metric([dpid_str(dpid), str(port)], n)
        yield refused
        yield CounterMetricFamily("vtap_probes_sent", "address probes (ARP, neighbour solicitation) sent", value=ctl.probes_sent)


async def _per_policy(ctl: Controller, counters: dict[int, Mapping[str, int]], heavy: HeavyWork):
    """The three per-policy families, `SLICE` policies at a time, each slice heavy work
    (`api/pacing.py`): 100,000 policies make some 700,000 lines. A family's
    lines stay together, as the text format wants; each slice reads the policy's state
    as it is then (a scrape is not one instant, as with any exporter)."""
    taps = sorted(ctl.taps.values(), key=lambda t: t.id)
    families = [
        (GaugeMetricFamily, "vtap_tap_state", "1 for the state each TAP policy is in", ["id", "name", "state"]),
        (CounterMetricFamily, "vtap_tap_copied_packets", "packets matched by a policy's tap rules (copied once per monitor)",
         ["id", "name", "monitor"]),
        (CounterMetricFamily, "vtap_tap_copied_bytes", "bytes matched by a policy's tap rules", ["id", "name", "monitor"]),
    ]
    for kind, name, doc, labelnames in families:
        for start in range(0, max(len(taps), 1), SLICE):
            async with heavy.slice():
                family = kind(name, doc, labels=labelnames)
                syncs, labels = ctl.switch_syncs(), ctl.monitor_labels()
                for tap in taps[start:start + SLICE]:
                    ident = [str(tap.id), tap.spec.name]
                    if name == "vtap_tap_state":
                        current = ctl.tap_status(tap.id, syncs).state
                        for s in PolicyState:
                            if s != PolicyState.COMPILED:
                                family.add_metric([*ident, s.value], 1.0 if s == current else 0.0)
                        continue
                    macs = ctl.monitors_of(tap.id)
                    monitor = ",".join(labels.get(m, m) for m in macs) or ",".join(tap.spec.monitors)
                    c = counters.get(tap.id, {"packets": 0, "bytes": 0})
                    family.add_metric([*ident, monitor], c["packets" if name.endswith("packets") else "bytes"])
                text = _text(family)
            yield text if start == 0 else text.split(b"\n", 2)[2]  # HELP and TYPE once per family


def _text(family) -> bytes:
    """One family in the text format, written by prometheus-client itself."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(family))
    return generate_latest(registry)


class _Fixed:
    def __init__(self, family):
        self.family = family

    def collect(self):
        yield self.family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def instrument(app: FastAPI, registry: CollectorRegistry) -> None:
    """REST request latency by method, route template and status."""
    latency = Histogram("vtap_http_request_duration_seconds", "REST API request latency",
                        ["method", "route", "status"], registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0))

    @app.middleware("http")
    async def timed(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        if route is not None and getattr(route, "path", "").startswith("/api/"):
            latency.labels(request.method, route.path, str(response.status_code)).observe(time.perf_counter() - started)
        return response


router = APIRouter(tags=["metrics"])


@router.get("/metrics", dependencies=[Depends(viewer)], response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
async def metrics(ctl: Ctl, registry: Registry, heavy: Heavy) -> Response:
    """Prometheus metrics (viewer token); the per-policy families written in slices."""
    counters = await ctl.tap_counters()
    snapshot = CollectorRegistry()
    snapshot.register(_Snapshot(ctl))

    async def body():
        yield generate_latest(registry) + generate_latest(snapshot)
        async for chunk in _per_policy(ctl, counters, heavy):
            yield chunk

    return StreamingResponse(body(), media_type=CONTENT_TYPE_LATEST)
