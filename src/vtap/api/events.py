"""Server-sent events for the web UI: the policies with status and counters, once a second.

One stream per page; the page refetches the topology when `view_version` moves. The
stream reads the same state the REST endpoints serve.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from fastapi.security import HTTPAuthorizationCredentials

from vtap.api.auth import BEARER
from vtap.api.deps import AppTokens, Ctl, viewer


INTERVAL = 1.0  # seconds between two events of a stream

router = APIRouter(prefix="/api/v1", tags=["events"], dependencies=[Depends(viewer)])


@router.get("/events")
async def events(request: Request, ctl: Ctl, tokens: AppTokens,
                 creds: HTTPAuthorizationCredentials | None = Depends(BEARER)):
    """`text/event-stream` of `state` events: {"view_version", "taps": [{"id", "name",
    "enabled", "status", "status_reason", "packets", "bytes", "sent", "delivered",
    "copies", "dropped", "pool", "snaplen", "sample", "rate_limit_pps", "transport",
    "collector", "tunnel_key", "erspan_version"}]}: `packets`/`bytes` what the tap rules
    matched; `sent`, `delivered` the copies sent toward and delivered to the policy's
    monitors (null until compiled); `copies`, `dropped` a budgeted policy's copies and
    those its rate limit dropped; `pool` its monitor pool; `collector`, `tunnel_key`,
    `erspan_version` a tunnelled policy's (null otherwise)."""

    async def stream():
        # The token is checked again before every event: a revoked or expired one ends the stream.
        while not await request.is_disconnected() and creds is not None and tokens.principal(creds.credentials):
            counters = await ctl.tap_counters()
            taps = []
            syncs = ctl.switch_syncs()
            for tap in sorted(ctl.taps.values(), key=lambda t: t.id):
                st = ctl.tap_status(tap.id, syncs)
                c = counters.get(tap.id, {"packets": 0, "bytes": 0})
                d = ctl.monitor_delivery(tap.id)
                ds = ctl.monitor_deliveries(tap.id).values()
                s = tap.spec
                taps.append({"id": tap.id, "name": s.name, "enabled": s.enabled, "status": st.state,
                             "status_reason": st.reason, "packets": c["packets"], "bytes": c["bytes"],
                             "sent": sum(x.sent_packets for x in ds) if d else None,
                             "delivered": sum(x.delivered_packets for x in ds) if d else None,
                             "copies": c.get("copies"), "dropped": c.get("dropped"), "pool": s.monitor_pool,
                             "snaplen": s.snaplen, "sample": s.sample, "rate_limit_pps": s.rate_limit_pps,
                             "transport": s.transport, "collector": s.monitor_ip if s.tunnel else None,
                             "tunnel_key": (s.tunnel_key if s.tunnel_key is not None else tap.id) if s.tunnel else None,
                             "erspan_version": s.erspan_version,
                             "received": (ctl.tool_counts.get(tap.id) or {}).get("packets"),
                             "alerts": (ctl.tool_counts.get(tap.id) or {}).get("alerts")})
            data = json.dumps({"view_version": ctl.view_version, "taps": taps})
            yield f"event: state\ndata: {data}\n\n"
            await asyncio.sleep(INTERVAL)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
