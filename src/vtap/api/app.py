"""REST API over the controller's global view (devices, links, hosts, topology) and health;
the TAP policies and the UI's event stream are routers of their own.

JSON field names are snake_case; datapath ids are strings of 16 hex digits.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from vtap import __version__
from vtap.api.events import router as events_router
from vtap.api.taps import router as taps_router
from vtap.control.controller import Controller
from vtap.model.network import dpid_str
from vtap.model.view import NetworkView


class PortOut(BaseModel):
    port_no: int
    name: str
    hw_addr: str
    up: bool


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


STATIC = Path(__file__).parent / "static"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def devices_out(view: NetworkView, ctl: Controller) -> list[DeviceOut]:
    return [
        DeviceOut(
            dpid=dpid_str(d.dpid),
            ports=[PortOut(port_no=p.port_no, name=p.name, hw_addr=p.hw_addr, up=p.up) for p in d.ports],
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
