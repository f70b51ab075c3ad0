"""REST API over the controller's global view (devices, links, hosts, topology) and health;
the TAP policies, tokens and audit, and the UI's event stream are routers of their own.

Every route but `GET /api/v1/health` needs a bearer token (`vtap.api.auth`); every
request passes `vtap.api.guard` (Host check, body limit, audit). JSON field names are
snake_case; datapath ids are strings of 16 hex digits.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field

from vtap import __version__
from vtap.api.access import router as access_router
from vtap.api.auth import ERRORS, Tokens, require, remote_of
from vtap.api.captures import router as captures_router
from vtap.api.cluster import router as cluster_router
from vtap.api.events import router as events_router
from vtap.api.metrics import instrument
from vtap.api.pacing import HeavyWork
from vtap.api.metrics import router as metrics_router
from vtap.api.taps import router as taps_router
from vtap.control.controller import Controller
from vtap.model.access import Role
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


class HealthOut(BaseModel):
    status: str
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


def create_app(ctl: Controller, tokens: Tokens) -> FastAPI:
    app = FastAPI(title="vtap", version=__version__, description="A virtual TAP for software-defined networks.",
                  responses=ERRORS)
    viewer = [Depends(require(tokens, Role.VIEWER))]
    admin = [Depends(require(tokens, Role.ADMIN))]

    heavy = HeavyWork()  # bulk bodies, listings, scrapes and counts of every policy: half the loop at most

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each field, quoting at most a short excerpt of what was sent."""
        errors = [{"loc": list(e.get("loc", ())), "msg": _shorten(str(e.get("msg", "")), 300), "type": str(e.get("type", "")),
                   **({"input": _excerpt(e["input"])} if "input" in e else {})} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """As FastAPI answers, but a 405 lists every method the path has (not only the
        first route's), as `Allow` must."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            methods = {m for r in app.routes if isinstance(r, APIRoute) and r.path_regex.match(request.url.path) for m in r.methods}
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        """503: the store (etcd) cannot take the write; nothing changed, reads go on."""
        return JSONResponse({"detail": f"store unavailable, nothing was changed: {exc}; reads go on from this "
                                       "instance's last copy of the store"}, status_code=503, headers={"Retry-After": "1"})

    @app.get("/api/v1/health", response_model=HealthOut)
    async def health(request: Request) -> HealthOut:
        """Liveness and the view's size: no token needed, so nothing here grows with the
        number of policies unless the caller shows a valid token (`taps_by_status`)."""
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
        return HealthOut(
            status="ok",
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
        )

    @app.get("/api/v1/devices", response_model=list[DeviceOut], dependencies=viewer)
    async def devices() -> list[DeviceOut]:
        return devices_out(ctl.view(), ctl)

    @app.get("/api/v1/links", response_model=list[LinkOut], dependencies=viewer)
    async def links() -> list[LinkOut]:
        return links_out(ctl.view(), ctl)

    @app.get("/api/v1/hosts", response_model=list[HostOut], dependencies=viewer)
    async def hosts() -> list[HostOut]:
        return hosts_out(ctl.view())

    @app.get("/api/v1/conflicts", response_model=list[ConflictOut], dependencies=viewer)
    async def conflicts() -> list[ConflictOut]:
        """Claims on addresses that policies pin, held: the binding stays until the owner
        is gone or an operator confirms the move."""
        return [
            ConflictOut(address=a, owner=c.claim.owner, claimant=c.claim.mac, dpid=dpid_str(c.claim.dpid), port=c.claim.port,
                        since=_iso(c.since), reason=c.reason())
            for a, c in sorted(ctl.conflicts().items())
        ]

    @app.delete("/api/v1/devices/{dpid}/certificate", status_code=204, dependencies=admin,
                responses={404: {"description": "no certificate is pinned for this datapath id"}})
    async def unpin(request: Request, dpid: str = PathParam(pattern=DPID_PATTERN, description="16 hex digits")) -> Response:
        """Forget the certificate pinned for a datapath id (admin): its next TLS connection
        pins anew. For a switch whose certificate really changed."""
        request.state.audit_action, request.state.audit_target = "device.unpin", f"device:{dpid.lower()}"
        request.state.audit_before = ctl.store.pin_of(int(dpid, 16))
        try:
            await ctl.store.delete_pin(int(dpid, 16))
        except NotFound:
            raise HTTPException(404, f"no certificate is pinned for datapath {dpid.lower()}") from None
        return Response(status_code=204)

    @app.post("/api/v1/hosts/{mac}/confirm-move", response_model=ConfirmOut, dependencies=admin,
              responses={404: {"description": "no held claim of this MAC"}})
    async def confirm_move(request: Request, mac: str = PathParam(pattern=MAC_PATTERN, description="aa:bb:cc:dd:ee:ff")) -> ConfirmOut:
        """Apply the held claims of `mac` (its move, or the addresses it claims) now (admin)."""
        mac = normalize_mac(mac)
        request.state.audit_action, request.state.audit_target = "host.confirm-move", f"host:{mac}"
        request.state.audit_before = [c.reason() for c in ctl.conflicts().values() if c.claim.mac == mac]
        applied = ctl.confirm_move(mac, request.state.actor)
        if not applied:
            raise HTTPException(404, f"no held claim of {mac}")
        return ConfirmOut(mac=mac, applied=applied)

    @app.get("/api/v1/topology", response_model=TopologyOut, dependencies=viewer)
    async def topology() -> TopologyOut:
        view = ctl.view()
        return TopologyOut(devices=devices_out(view, ctl), links=links_out(view, ctl), hosts=hosts_out(view))

    registry = CollectorRegistry()
    instrument(app, registry)
    app.include_router(metrics_router(ctl, tokens, registry, heavy))
    app.include_router(taps_router(ctl, tokens, heavy))
    app.include_router(captures_router(ctl, tokens))
    app.include_router(access_router(ctl.store, tokens))
    app.include_router(events_router(ctl, tokens))
    app.include_router(cluster_router(ctl, tokens))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
