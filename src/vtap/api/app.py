"""REST API over the controller's global view (devices, links, hosts, topology) and health;
the TAP policies, tokens and audit, and the UI's event stream are routers of their own.

Every route but `GET /api/v1/health` needs a bearer token (`vtap.api.auth`); every
request passes `vtap.api.guard` (Host check, body limit, audit). JSON field names are
snake_case; datapath ids are strings of 16 hex digits. What the handlers share (the
controller, the tokens, ...) is in `app.state`, handed to them by `vtap.api.deps`.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from vtap import __version__
from vtap.api.access import router as access_router
from vtap.api.auth import ERRORS, Tokens, remote_of
from vtap.api.captures import router as captures_router
from vtap.api.cluster import router as cluster_router
from vtap.api.deps import AppTokens, Ctl, Heavy, admin, share, viewer
from vtap.api.events import router as events_router
from vtap.api.metrics import instrument
from vtap.api.pacing import HeavyWork
from vtap.api.metrics import router as metrics_router
from vtap.api.neutron import NeutronError, from_http, from_validation, is_neutron, neutron_error
from vtap.api.neutron import router as neutron_router
from vtap.api.sensors import router as sensors_router
from vtap.api.taas import router as taas_router
from vtap.api.taps import router as taps_router
from vtap.control.controller import Controller
from vtap.model.network import Port, dpid_str, normalize_mac
from vtap.model.view import NetworkView
from vtap.store.errors import NotFound, StoreUnavailable


class PortOut(BaseModel):
    port_no: int
    name: str
    hw_addr: str
    up: bool
    role: str = Field(description="`link`: an inter-switch port proven by authenticated LLDP; `edge`: faces hosts "
                                  "(discovery had its chance and found no switch); `unknown`: not yet known (nothing "
                                  "is flooded out of it or forwarded from it); `down`")
    refused_macs: int = Field(description="MACs refused on this port beyond --max-hosts-per-port")


class DeviceOut(BaseModel):
    dpid: str
    ports: list[PortOut]
    connected_since: str
    n_tables: int
    sync: str
    certificate: str | None = Field(description="over TLS: sha256 fingerprint of the certificate pinned for this "
                                                "datapath id (another one claiming it is refused)")
    batches: int = Field(description="rule batches (bundles) sent to this switch since it connected")
    rules_sent: int = Field(description="flow, group and meter changes sent since it connected")


class LinkOut(BaseModel):
    src_dpid: str
    src_port: int
    dst_dpid: str
    dst_port: int
    transit_ms: float | None = Field(None, description="the last LLDP frame's time from packet-out to packet-in over the link")
    transit_min_ms: float | None = Field(None, description="the least of the last 32 such times")


class HostOut(BaseModel):
    mac: str
    ips: list[str]
    dpid: str
    port: int
    last_seen: str


class TopologyOut(BaseModel):
    devices: list[DeviceOut]
    links: list[LinkOut]
    hosts: list[HostOut]


class ConfirmOut(BaseModel):
    mac: str
    applied: int


class ConflictOut(BaseModel):
    address: str
    owner: str
    claimant: str
    dpid: str
    port: int
    since: str
    reason: str


class TunnelSetupOut(BaseModel):
    dpid: str
    bridge: str
    mode: str = Field(description="local (vtap does all of it) or ovsdb (vtap makes the ports; `steps` are the node's)")
    ports_made: bool = Field(description="the switch's tunnel ports are made for the current plan")
    steps: list[str] = Field(description="what the switch's node must hold besides the ports: its bridge's address, "
                                         "a route and a neighbour per collector")


class HealthOut(BaseModel):
    status: str = Field(description="`ok` whenever the process answers (liveness)")
    ready: bool = Field(description="whether this instance should be sent work: the store answers, a leader is "
                                    "elected, start-up is over and (where it leads) every switch has been in sync since "
                                    "it connected and none failed its last reconcile; HTTP 503 while it is false")
    not_ready: list[str] = Field(description="why it is not ready (empty when it is)")
    role: str = Field(description="standalone, leader or follower")
    store_reachable: bool
    version: str
    uptime_s: float
    switches: int
    switches_in_sync: int
    links: int
    ports_unknown: int = Field(description="up ports whose role (link or edge) is not known yet: 0 once discovery converged")
    hosts: int
    taps: int
    taps_by_status: dict[str, int] | None = Field(
        None, description="how many policies are in each state (active, pending, ...); only for a caller with a valid "
                          "token (counting takes time in proportion to the policies; without a token health is O(1))")
    packet_ins: int
    lldp_refused: dict[str, int]
    refused_connections: int
    conflicts: int
    loop_lag_ms: float = Field(description="the event loop's worst lateness over the last 10 s: how long anything "
                                           "(a request, a packet-in storm) held up OpenFlow, LLDP and the reconcilers")
    loop_lag_max_ms: float = Field(description="the same, since the controller started")
    lldp_rounds_held: int = Field(description="discovery rounds that kept the last nonce because they came late")
    startup: dict[str, float] = Field(description="seconds from the process's start to each step of its start reached so "
                                                  "far: imported, store_loaded, first_switch, switches_back (a restart "
                                                  "with a stored topology), first_compile, rules_confirmed, "
                                                  "compile_checked (after a reused first compile: compiled afresh "
                                                  "and compared; a change waits for it)")
    startup_cpu: dict[str, float] = Field(description="the process's CPU seconds (all its threads) at each of those "
                                                      "steps: less than the step's time when it waited")
    startup_compile: str = Field(description="how the first compile was made: `reused` (the compile a clean stop wrote "
                                             "down, its inputs unchanged), `fresh`, or empty before it")


class DriftOut(BaseModel):
    dpid: str
    desired: dict[str, int] = Field(description="vtap's flows, groups and meters the compile wants in the switch")
    missing: int = Field(description="rules the switch lacks, or holds in another form")
    extra: int = Field(description="rules of vtap's the switch holds that the compile does not want (leaked)")
    examples: list[str] = Field(description="up to 20 of the rules that differ")


STATIC = Path(__file__).parent / "static"
MAC_PATTERN = r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$"
DPID_PATTERN = r"^[0-9A-Fa-f]{16}$"


COUNT_SLICE = 1000  # policies whose state one slice of heavy work judges


async def _count_states(ctl: Controller, heavy: HeavyWork) -> dict[str, int]:
    """Policies per state: what a script waiting for thousands of them to apply asks,
    without listing them all; judged `COUNT_SLICE` at a time, as heavy work (8 ms a
    slice: 100,000 policies would otherwise hold the loop for most of a second)."""
    ids = list(ctl.taps)
    counts: dict[str, int] = {}
    for start in range(0, len(ids), COUNT_SLICE):
        async with heavy.slice():
            syncs = ctl.switch_syncs()
            for tap_id in ids[start:start + COUNT_SLICE]:
                if tap_id in ctl.taps:
                    state = ctl.tap_status(tap_id, syncs).state.value
                    counts[state] = counts.get(state, 0) + 1
    return counts


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _role(view: NetworkView, dpid: int, port: Port) -> str:
    if not port.up:
        return "down"
    if port.port_no in view.link_ports.get(dpid, ()):
        return "link"
    return "unknown" if (dpid, port.port_no) in view.unknown_ports else "edge"


def devices_out(view: NetworkView, ctl: Controller) -> list[DeviceOut]:
    refused = ctl.refused_macs()
    return [
        DeviceOut(
            dpid=dpid_str(d.dpid),
            ports=[PortOut(port_no=p.port_no, name=p.name, hw_addr=p.hw_addr, up=p.up, role=_role(view, d.dpid, p),
                           refused_macs=refused.get((d.dpid, p.port_no), 0)) for p in d.ports],
            connected_since=_iso(d.connected_since),
            n_tables=d.n_tables,
            sync=ctl.sync_state(d.dpid),
            certificate=ctl.store.pin_of(d.dpid),
            batches=ctl.sync_counters(d.dpid)[0],
            rules_sent=ctl.sync_counters(d.dpid)[1],
        )
        for d in sorted(view.devices.values(), key=lambda d: d.dpid)
    ]


def links_out(view: NetworkView, ctl: Controller) -> list[LinkOut]:
    out = []
    for l in sorted(view.links):
        transit = ctl.link_transit(l)
        out.append(LinkOut(src_dpid=dpid_str(l.src_dpid), src_port=l.src_port, dst_dpid=dpid_str(l.dst_dpid), dst_port=l.dst_port,
                           **({"transit_ms": round(transit[0] * 1000, 3), "transit_min_ms": round(transit[1] * 1000, 3)}
                              if transit else {})))
    return out


def hosts_out(view: NetworkView) -> list[HostOut]:
    return [
        HostOut(mac=h.mac, ips=list(h.ips), dpid=dpid_str(h.dpid), port=h.port, last_seen=_iso(h.last_seen))
        for h in sorted(view.hosts.values(), key=lambda h: h.mac)
    ]


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _excerpt(value) -> str:
    return _shorten(repr(value), 80)


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each field, quoting at most a short excerpt of what was sent (under
    /v2.0, Neutron's 400)."""
    if is_neutron(request):
        return from_validation(list(exc.errors()))
    errors = [{"loc": list(e.get("loc", ())), "msg": _shorten(str(e.get("msg", "")), 300), "type": str(e.get("type", "")),
               **({"input": _excerpt(e["input"])} if "input" in e else {})} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def _methods_of(routes: list, path: str) -> set[str]:
    """The methods `path` has among `routes`, looking into included routers too (this
    FastAPI keeps an included router as one entry, its routes as `effective_candidates`)."""
    methods: set[str] = set()
    for route in routes:
        included = getattr(route, "effective_candidates", None)
        for r in [route] if isinstance(route, APIRoute) else included() if callable(included) else ():
            if r.path_regex.match(path):
                methods |= set(r.methods or ())
    return methods


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """As FastAPI answers, but a 405 lists every method the path has (not only the
    first route's), as `Allow` must."""
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(sorted(_methods_of(request.app.routes, request.url.path)))
    if is_neutron(request):
        return from_http(exc.status_code, exc.detail, headers)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
    """503: the store (etcd) cannot take the write; nothing changed, reads go on."""
    message = f"store unavailable, nothing was changed: {exc}; reads go on from this instance's last copy of the store"
    if is_neutron(request):
        return from_http(503, message, {"Retry-After": "1"})
    return JSONResponse({"detail": message}, status_code=503, headers={"Retry-After": "1"})


class OwnRoutes:
    """Routes declared at module level, as on a router, that `create_app` adds to the app
    itself: an included router's routes are not in `app.routes` (FastAPI keeps the router
    there), and `http_error` finds the methods a path has in `app.routes`."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, Callable, dict[str, Any]]] = []

    def route(self, method: str, path: str, **kwargs: Any) -> Callable:
        def declare(handler: Callable) -> Callable:
            self.routes.append((path, handler, {"methods": [method], **kwargs}))
            return handler

        return declare

    def add_to(self, app: FastAPI) -> None:
        for path, handler, kwargs in self.routes:
            app.add_api_route(path, handler, **kwargs)


own = OwnRoutes()


@own.route("GET", "/api/v1/health", response_model=HealthOut,
           responses={503: {"model": HealthOut, "description": "alive, but not ready (`not_ready` says why)"}})
async def health(request: Request, response: Response, ctl: Ctl, tokens: AppTokens, heavy: Heavy) -> HealthOut:
    """Liveness and readiness (HTTP 503 while not ready: a load balancer's or an
    orchestrator's probe reads the status alone), and the view's size. No token needed,
    so nothing here grows with the number of policies unless the caller shows a valid
    token (`taps_by_status`)."""
    known = False
    if "authorization" in request.headers:
        # A token shown here is checked, and a wrong one counted toward the address's
        # throttle, as on every other route.
        remote = remote_of(request)
        scheme, _, secret = request.headers["authorization"].partition(" ")
        known = scheme.lower() == "bearer" and tokens.principal(secret.strip()) is not None
        if not known:
            tokens.failed(remote)
    by_status = await _count_states(ctl, heavy) if known else None
    view = ctl.view()
    not_ready = ctl.not_ready()
    if not_ready:
        response.status_code = 503
    return HealthOut(
        status="ok",
        ready=not not_ready,
        not_ready=not_ready,
        role="standalone" if ctl.cluster is None else "leader" if ctl.leading else "follower",
        store_reachable=ctl.store.reachable,
        version=__version__,
        uptime_s=round(time.time() - ctl.started_at, 3),
        switches=len(view.devices),
        switches_in_sync=sum(ctl.sync_state(d) == "in_sync" for d in view.devices),
        links=len(view.links),
        ports_unknown=len(view.unknown_ports),
        hosts=len(view.hosts),
        taps=len(ctl.taps),
        taps_by_status=by_status,
        packet_ins=ctl.packet_ins,
        lldp_refused=ctl.lldp_refused(),
        refused_connections=ctl.refused_connections,
        conflicts=len(ctl.conflicts()),
        loop_lag_ms=round(ctl.loop_lag.worst() * 1000, 1),
        loop_lag_max_ms=round(ctl.loop_lag.worst_ever * 1000, 1),
        lldp_rounds_held=ctl.lldp_rounds_held,
        startup=ctl.startup.steps,
        startup_cpu=ctl.startup.cpu,
        startup_compile=ctl.startup.first_compile,
    )


@own.route("GET", "/api/v1/devices", response_model=list[DeviceOut], dependencies=[Depends(viewer)])
async def devices(ctl: Ctl) -> list[DeviceOut]:
    return devices_out(ctl.view(), ctl)


@own.route("GET", "/api/v1/links", response_model=list[LinkOut], dependencies=[Depends(viewer)])
async def links(ctl: Ctl) -> list[LinkOut]:
    return links_out(ctl.view(), ctl)


@own.route("GET", "/api/v1/hosts", response_model=list[HostOut], dependencies=[Depends(viewer)])
async def hosts(ctl: Ctl) -> list[HostOut]:
    return hosts_out(ctl.view())


@own.route("GET", "/api/v1/tunnels", response_model=list[TunnelSetupOut], dependencies=[Depends(viewer)])
async def tunnels(ctl: Ctl) -> list[TunnelSetupOut]:
    """Each switch's tunnel set-up while some tunnel policy needs it (empty without
    `--tunnels`, and with no tunnel policy)."""
    agent = ctl.tunnels
    if agent is None:
        return []
    return [TunnelSetupOut(dpid=dpid_str(dpid), bridge=want.bridge, mode="local" if agent.local_routes else "ovsdb",
                           ports_made=agent.applied.get(dpid) is not None and agent.applied[dpid].bridge == want.bridge,
                           steps=agent.steps(dpid))
            for dpid, want in sorted(agent.plan().items())]


@own.route("GET", "/api/v1/conflicts", response_model=list[ConflictOut], dependencies=[Depends(viewer)])
async def conflicts(ctl: Ctl) -> list[ConflictOut]:
    """Claims on addresses that policies pin, held: the binding stays until the owner
    is gone or an operator confirms the move."""
    return [
        ConflictOut(address=a, owner=c.claim.owner, claimant=c.claim.mac, dpid=dpid_str(c.claim.dpid), port=c.claim.port,
                    since=_iso(c.since), reason=c.reason())
        for a, c in sorted(ctl.conflicts().items())
    ]


@own.route("GET", "/api/v1/devices/{dpid}/drift", response_model=DriftOut, dependencies=[Depends(viewer)],
           responses={404: {"description": "no switch with this datapath id is connected (to this leader)"}})
async def drift(ctl: Ctl, dpid: str = PathParam(pattern=DPID_PATTERN, description="16 hex digits")) -> DriftOut:
    """Read the switch's tables back now, over OpenFlow, and compare them with what the
    compile wants there: what an operator asks when a switch is said to be in sync and
    traffic says otherwise (and what the chaos soak checks after every round)."""
    got = await ctl.drift(int(dpid, 16))
    if got is None:
        raise HTTPException(404, f"switch {dpid.lower()} is not connected to this instance as its master")
    desired, change = got
    missing = change.add_flows + change.modify_flows + change.add_groups + change.modify_groups + \
        change.add_meters + change.modify_meters
    extra = change.delete_flows + change.delete_groups + change.delete_meters
    return DriftOut(dpid=dpid.lower(), desired={"flows": len(desired.flows), "groups": len(desired.groups),
                                                "meters": len(desired.meters)},
                    missing=len(missing), extra=len(extra),
                    examples=[f"missing {r}" for r in missing[:10]] + [f"extra {r}" for r in extra[:10]])


@own.route("DELETE", "/api/v1/devices/{dpid}/certificate", status_code=204, dependencies=[Depends(admin)],
           responses={404: {"description": "no certificate is pinned for this datapath id"}})
async def unpin(request: Request, ctl: Ctl,
                dpid: str = PathParam(pattern=DPID_PATTERN, description="16 hex digits")) -> Response:
    """Forget the certificate pinned for a datapath id (admin): its next TLS connection
    pins anew. For a switch whose certificate really changed."""
    request.state.audit_action, request.state.audit_target = "device.unpin", f"device:{dpid.lower()}"
    request.state.audit_before = ctl.store.pin_of(int(dpid, 16))
    try:
        await ctl.store.delete_pin(int(dpid, 16))
    except NotFound:
        raise HTTPException(404, f"no certificate is pinned for datapath {dpid.lower()}") from None
    return Response(status_code=204)


@own.route("POST", "/api/v1/hosts/{mac}/confirm-move", response_model=ConfirmOut, dependencies=[Depends(admin)],
           responses={404: {"description": "no held claim of this MAC"}})
async def confirm_move(request: Request, ctl: Ctl,
                       mac: str = PathParam(pattern=MAC_PATTERN, description="aa:bb:cc:dd:ee:ff")) -> ConfirmOut:
    """Apply the held claims of `mac` (its move, or the addresses it claims) now (admin)."""
    mac = normalize_mac(mac)
    request.state.audit_action, request.state.audit_target = "host.confirm-move", f"host:{mac}"
    request.state.audit_before = [c.reason() for c in ctl.conflicts().values() if c.claim.mac == mac]
    applied = ctl.confirm_move(mac, request.state.actor)
    if not applied:
        raise HTTPException(404, f"no held claim of {mac}")
    return ConfirmOut(mac=mac, applied=applied)


@own.route("GET", "/api/v1/topology", response_model=TopologyOut, dependencies=[Depends(viewer)])
async def topology(ctl: Ctl) -> TopologyOut:
    view = ctl.view()
    return TopologyOut(devices=devices_out(view, ctl), links=links_out(view, ctl), hosts=hosts_out(view))


class MemoryOut(BaseModel):
    rss_mib: float = Field(description="the controller's resident memory")
    traced_mib: float = Field(description="what tracemalloc sees live (Python's own allocations)")
    by_structure: list[dict] = Field(description="the largest holders: {structure: the vtap module that made it, mib, "
                                                 "blocks}")


@own.route("GET", "/api/v1/memory", response_model=MemoryOut, dependencies=[Depends(admin)],
           responses={409: {"description": "not traced: start the controller with --trace-memory 16"}})
async def memory(ctl: Ctl) -> MemoryOut:
    """The controller's memory by the structure that holds it (`control/memory.py`);
    only while tracemalloc traces (`vtap serve --trace-memory 16`)."""
    traced = ctl.memory()
    if traced is None:
        raise HTTPException(409, "memory is not traced: start the controller with --trace-memory 16")
    return MemoryOut(**traced)


async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


# In this order, after the app's own routes (`own`): the order of the OpenAPI document
# and the order routes are matched in.
ROUTERS = (metrics_router, taps_router, captures_router, access_router, events_router, cluster_router, sensors_router,
           neutron_router, taas_router)


def create_app(ctl: Controller, tokens: Tokens) -> FastAPI:
    app = FastAPI(title="vtap", version=__version__, description="A virtual TAP for software-defined networks.",
                  responses=ERRORS)
    share(app, ctl, tokens)
    _handle_errors(app)
    own.add_to(app)
    instrument(app, app.state.registry)
    for router in ROUTERS:
        app.include_router(router)
    _serve_ui(app)
    return app


def _handle_errors(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(StoreUnavailable, store_unavailable)
    app.add_exception_handler(NeutronError, neutron_error)


def _serve_ui(app: FastAPI) -> None:
    """The web UI: its page at `/`, its files under `/static` (no token: they hold no data)."""
    app.add_api_route("/", index, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
