"""Capture jobs over REST: start one, watch it, download its pcapng, delete it.

Captured packets are other people's traffic, payload included: starting, downloading
and deleting need an operator token (whose scope must hold the match, as for a
policy), and each of them is audited, the download too. Listing and watching jobs is
a viewer's; an operator sees, reads and deletes only the jobs whose match its scope
holds, whoever started them (a job an admin started on other hosts' traffic is not
an operator's to download or to stop).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path as PathParam, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

from vtap.api.auth import Principal
from vtap.api.deps import Ctl, operator, viewer
from vtap.api.taps import check_scope
from vtap.control.capture import CaptureJob, CaptureLimit
from vtap.control.controller import Controller
from vtap.model.access import Role, Scope, scope_violations
from vtap.model.capture import CaptureSpec, CaptureState
from vtap.model.frames import summary
from vtap.model.policy import MatchSpec
from vtap.store.pcapng import read_packets

NOT_FOUND = {404: {"description": "no capture job with this id"}}
OUT_OF_SCOPE = {403: {"description": "an operator whose scope does not hold the job's match"}}
JobId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="the job's id")]
FOLLOW_POLL_S = 0.2  # how often a followed job's file is looked at for new packets
FOLLOW_CHUNK = 1 << 16


class CaptureOut(BaseModel):
    id: int
    tap_id: int | None
    match: MatchSpec = Field(description="what the job captures (its policy's match when it named one)")
    count: int
    duration_s: float
    snaplen: int
    state: CaptureState
    reason: str
    packets: int = Field(description="packets captured so far")
    bytes: int = Field(description="bytes kept (each packet cut to snaplen)")
    created: str
    ended: str | None
    created_by: str
    download: str = Field(description="where the pcapng file is")


def _time(t: float | None) -> str | None:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat() if t is not None else None


def _out(ctl: Controller, job: CaptureJob) -> CaptureOut:
    state, reason = ctl.capture_status(job)
    return CaptureOut(id=job.id, tap_id=job.spec.tap_id, match=job.match, count=job.spec.count, duration_s=job.spec.duration_s,
                      snaplen=job.spec.snaplen, state=state, reason=reason, packets=job.packets, bytes=job.bytes,
                      created=_time(job.created), ended=_time(job.ended), created_by=job.created_by,
                      download=f"/api/v1/captures/{job.id}/pcapng")


def _outside(me: Principal, job: CaptureJob) -> list[tuple[str, str]]:
    """(field, why) of the job's match outside an operator's scope; none for viewers and
    admins (a viewer never gets the packets: downloading is an operator's)."""
    if me.role != Role.OPERATOR:
        return []
    return scope_violations(job.match, me.scope or Scope())


def _audit(request: Request, action: str, target: str, after: dict | None = None) -> None:
    request.state.audit_action, request.state.audit_target = action, target
    request.state.audit_after = after


def _job(ctl: Controller, job_id: int, me: Principal) -> CaptureJob:
    """The job, if it exists and the caller's scope holds its match (else 404, 403)."""
    job = ctl.captures.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no capture job {job_id}")
    bad = _outside(me, job)
    if bad:
        raise HTTPException(403, [{"loc": ["path", "job_id"], "msg": f"capture job {job_id} captures {field} outside "
                                   f"your scope: {msg}", "type": "scope"} for field, msg in bad])
    return job


router = APIRouter(prefix="/api/v1/captures", tags=["captures"], dependencies=[Depends(viewer)])


@router.post("", status_code=201, response_model=CaptureOut,
             responses={404: {"description": "tap_id names no policy"}, 409: {"description": "too many jobs running"}})
async def start(spec: CaptureSpec, request: Request, ctl: Ctl, me: Principal = Depends(operator)):
    """Start capturing: the matching packets, where they enter the fabric, cut to
    `snaplen`, until `count` packets or `duration_s` seconds."""
    _audit(request, "capture.start", "capture", after=spec.model_dump(mode="json", exclude_none=True))
    if spec.tap_id is not None and spec.tap_id not in ctl.taps:
        raise HTTPException(404, f"tap_id: no TAP policy {spec.tap_id}")
    check_scope(me, MatchSpec(**(ctl.taps[spec.tap_id].spec if spec.tap_id is not None else spec).match_fields()))
    if not ctl.leading:
        # Packets reach the master controller only: the job and its file live there.
        leader = ctl.cluster.store.leader
        where = ctl.cluster.store.members.get(leader[0], {}).get("api", leader[0]) if leader else "no leader yet"
        raise HTTPException(409, f"capture jobs run on the cluster's leader ({where}): start it there")
    try:
        job = ctl.start_capture(spec, me.name)
    except CaptureLimit as exc:
        raise HTTPException(409, str(exc)) from None
    request.state.audit_target = f"capture:{job.id}"
    return _out(ctl, job)


@router.get("", response_model=list[CaptureOut])
async def list_jobs(ctl: Ctl, me: Principal = Depends(viewer)):
    """Every job (an operator's: those its scope holds)."""
    return [_out(ctl, j) for j in sorted(ctl.captures.jobs.values(), key=lambda j: j.id) if not _outside(me, j)]


@router.get("/{job_id}", response_model=CaptureOut, responses={**NOT_FOUND, **OUT_OF_SCOPE})
async def show(job_id: JobId, ctl: Ctl, me: Principal = Depends(viewer)):
    return _out(ctl, _job(ctl, job_id, me))


@router.get("/{job_id}/pcapng", response_class=FileResponse,
            responses={**NOT_FOUND, **OUT_OF_SCOPE, 200: {"content": {"application/x-pcapng": {}}}})
async def download(job_id: JobId, request: Request, ctl: Ctl, me: Principal = Depends(operator),
                   follow: bool = Query(False, description="stream the packets as they arrive, until the job ends "
                                                           "(`vtap capture -w - | tshark -r -`)")):
    """The packets so far, as pcapng (Wireshark, tshark): one section, an interface per switch."""
    _audit(request, "capture.follow" if follow else "capture.download", f"capture:{job_id}")
    job = _job(ctl, job_id, me)
    if follow:
        return StreamingResponse(_tail(job, request), media_type="application/x-pcapng",
                                 headers={"Cache-Control": "no-store"})
    return FileResponse(job.path, media_type="application/x-pcapng", filename=f"vtap-capture-{job.id}.pcapng")


class PacketOut(BaseModel):
    time: float = Field(description="seconds since the epoch, as taken at the switch")
    src: str
    dst: str
    protocol: str
    length: int = Field(description="the packet's original length in bytes")


@router.get("/{job_id}/packets", response_model=list[PacketOut], responses={**NOT_FOUND, **OUT_OF_SCOPE})
async def packets(job_id: JobId, ctl: Ctl, me: Principal = Depends(operator),
                  last: int = Query(20, ge=1, le=200, description="how many of the latest packets")):
    """The job's latest packets in one line each (the UI's live view): addresses, protocol,
    length; the headers only, for an operator whose scope holds the job's match."""
    job = _job(ctl, job_id, me)
    try:
        data = job.path.read_bytes()
    except FileNotFoundError:
        return []
    return [PacketOut(time=t, length=n, **summary(frame)) for t, frame, n in read_packets(data)[-last:]]


async def _tail(job: CaptureJob, request: Request) -> AsyncIterator[bytes]:
    """The job's file from its first byte, then what is appended, until the job has ended
    and all of it is sent (or the client goes, or the job is deleted). The writer appends
    whole blocks, so the bytes sent are always a pcapng stream in order."""
    sent = 0
    while True:
        finished = job.finished  # read before the file: what it wrote before ending is then in the file
        try:
            with open(job.path, "rb") as f:
                f.seek(sent)
                chunk = f.read(FOLLOW_CHUNK)
        except FileNotFoundError:
            return  # deleted
        if chunk:
            sent += len(chunk)
            yield chunk
            continue
        if finished or await request.is_disconnected():
            return
        await asyncio.sleep(FOLLOW_POLL_S)


@router.delete("/{job_id}", status_code=204, responses={**NOT_FOUND, **OUT_OF_SCOPE})
async def delete(job_id: JobId, request: Request, ctl: Ctl, me: Principal = Depends(operator)):
    """Stop the job if it runs, remove its rules and its file."""
    _audit(request, "capture.delete", f"capture:{job_id}")
    _job(ctl, job_id, me)
    if not ctl.delete_capture(job_id):
        raise HTTPException(404, f"no capture job {job_id}")
