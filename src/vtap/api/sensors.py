"""What tools' sensors report (`vtap sensor`): the copies that reached a tool's interface.

Only a `sensor` token (or an admin's) may write, and only for a monitor its scope names:
a sensor cannot speak for another tool, nor do anything else. A report is not audited
when taken (it changes no tap and comes every second); a refused one is.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, Field

from vtap.api.auth import Principal
from vtap.api.deps import Ctl, sensor
from vtap.model.access import Role, host_inside
from vtap.model.network import normalize_mac


class PolicyCountsIn(BaseModel):
    packets: int = Field(ge=0)
    bytes: int = Field(ge=0)
    alerts: int = Field(0, ge=0, description="the tool's alerts on this policy's traffic (Suricata's eve.json)")


class SensorReportIn(BaseModel):
    monitor: str = Field(description="the monitor the tool is on: its MAC or IP address")
    received_packets: int = Field(ge=0, description="copies that reached the tool since the sensor started")
    received_bytes: int = Field(ge=0)
    policies: dict[int, PolicyCountsIn] = Field({}, description="the same, per policy id")


router = APIRouter(prefix="/api/v1/sensors", tags=["sensors"])


@router.post("/reports", status_code=204, responses={403: {"description": "the monitor is not the token's"},
                                                      404: {"description": "no such monitor known"}})
async def report(body: SensorReportIn, ctl: Ctl, me: Principal = Depends(sensor)) -> Response:
    view = ctl.view()
    try:
        mac = normalize_mac(body.monitor)
    except ValueError:
        host = view.host_by_ip(body.monitor)
        if host is None:
            raise HTTPException(404, [{"loc": ["body", "monitor"], "msg": f"no known host at {body.monitor[:64]!r}",
                                       "type": "not_found"}]) from None
        mac = host.mac
    host = view.hosts.get(mac)
    ips = tuple(host.ips) if host else ()
    if me.role != Role.ADMIN and not (me.scope and host_inside(me.scope.monitors, mac, ips)):
        raise HTTPException(403, [{"loc": ["body", "monitor"], "msg": f"{body.monitor} is not a monitor of this "
                                   "sensor's scope", "type": "scope"}])
    ctl.sensor_report(mac, body.received_packets, body.received_bytes,
                      {k: v.model_dump() for k, v in body.policies.items()}, time.time())
    return Response(status_code=204)
