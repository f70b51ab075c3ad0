"""REST API over the controller's global view (devices, links, hosts, topology) and health;
the TAP policies and the UI's event stream are routers of their own.

JSON field names are snake_case; datapath ids are strings of 16 hex digits.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from vtap import __version__
from vtap.api.events import router as events_router
from vtap.api.taps import router as taps_router
from vtap.control.controller import Controller
from vtap.model.network import Port, dpid_str, normalize_mac
from vtap.model.view import NetworkView


class PortOut(BaseModel):
    port_no: int
    name: str
    hw_addr: str
    up: bool
    role: str = Field(description="`link`: an inter-switch port proven by authenticated LLDP; `edge`: faces hosts; `down`")
    refused_macs: int = Field(description="MACs refused on this port beyond --max-hosts-per-port")


class DeviceOut(BaseModel):
    dpid: str
    ports: list[PortOut]
    connected_since: str
    n_tables: int
    sync: str


class LinkOut(BaseModel):
    src_dpid: str
    src_port: int
    dst_dpid: str
    dst_port: int


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
    hosts: int
    taps: int
    packet_ins: int
    lldp_refused: dict[str, int]
    refused_connections: int
    conflicts: int


STATIC = Path(__file__).parent / "static"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _role(view: NetworkView, dpid: int, port: Port) -> str:
    if not port.up:
        return "down"
    return "link" if port.port_no in view.link_ports.get(dpid, ()) else "edge"


def devices_out(view: NetworkView, ctl: Controller) -> list[DeviceOut]:
    refused = ctl.core.hosts.refused
    return [
        DeviceOut(
            dpid=dpid_str(d.dpid),
            ports=[PortOut(port_no=p.port_no, name=p.name, hw_addr=p.hw_addr, up=p.up, role=_role(view, d.dpid, p),
                           refused_macs=refused.get((d.dpid, p.port_no), 0)) for p in d.ports],
            connected_since=_iso(d.connected_since),
            n_tables=d.n_tables,
            sync=ctl.sync_state(d.dpid),
        )
        for d in sorted(view.devices.values(), key=lambda d: d.dpid)
    ]


def links_out(view: NetworkView) -> list[LinkOut]:
    return [
        LinkOut(src_dpid=dpid_str(l.src_dpid), src_port=l.src_port, dst_dpid=dpid_str(l.dst_dpid), dst_port=l.dst_port)
        for l in sorted(view.links)
    ]


def hosts_out(view: NetworkView) -> list[HostOut]:
    return [
        HostOut(mac=h.mac, ips=list(h.ips), dpid=dpid_str(h.dpid), port=h.port, last_seen=_iso(h.last_seen))
        for h in sorted(view.hosts.values(), key=lambda h: h.mac)
    ]


def create_app(ctl: Controller) -> FastAPI:
    app = FastAPI(title="vtap", version=__version__, description="A virtual TAP for software-defined networks.")

    @app.get("/api/v1/health", response_model=HealthOut)
    async def health() -> HealthOut:
        view = ctl.view()
        return HealthOut(
            status="ok",
            version=__version__,
            uptime_s=round(time.time() - ctl.started_at, 3),
            switches=len(view.devices),
            switches_in_sync=sum(ctl.sync_state(d) == "in_sync" for d in view.devices),
            links=len(view.links),
            hosts=len(view.hosts),
            taps=len(ctl.taps),
            packet_ins=ctl.packet_ins,
            lldp_refused=dict(ctl.core.lldp_refused),
            refused_connections=ctl.refused_connections,
            conflicts=len(ctl.core.conflicts),
        )

    @app.get("/api/v1/devices", response_model=list[DeviceOut])
    async def devices() -> list[DeviceOut]:
        return devices_out(ctl.view(), ctl)

    @app.get("/api/v1/links", response_model=list[LinkOut])
    async def links() -> list[LinkOut]:
        return links_out(ctl.view())

    @app.get("/api/v1/hosts", response_model=list[HostOut])
    async def hosts() -> list[HostOut]:
        return hosts_out(ctl.view())

    @app.get("/api/v1/conflicts", response_model=list[ConflictOut])
    async def conflicts() -> list[ConflictOut]:
        """Claims on addresses that policies pin, held: the binding stays until the owner
        is gone or an operator confirms the move."""
        return [
            ConflictOut(address=a, owner=c.claim.owner, claimant=c.claim.mac, dpid=dpid_str(c.claim.dpid), port=c.claim.port,
                        since=_iso(c.since), reason=c.reason())
            for a, c in sorted(ctl.core.conflicts.items())
        ]

    @app.post("/api/v1/hosts/{mac}/confirm-move", response_model=ConfirmOut)
    async def confirm_move(mac: str) -> ConfirmOut:
        """Apply the held claims of `mac` (its move, or the addresses it claims) now."""
        try:
            mac = normalize_mac(mac)
        except ValueError as exc:
            raise HTTPException(422, f"mac: {exc}") from None
        applied = ctl.confirm_move(mac)
        if not applied:
            raise HTTPException(404, f"no held claim of {mac}")
        return ConfirmOut(mac=mac, applied=applied)

    @app.get("/api/v1/topology", response_model=TopologyOut)
    async def topology() -> TopologyOut:
        view = ctl.view()
        return TopologyOut(devices=devices_out(view, ctl), links=links_out(view), hosts=hosts_out(view))

    app.include_router(taps_router(ctl))
    app.include_router(events_router(ctl))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
