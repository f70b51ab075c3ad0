"""REST for TAP policies: /api/v1/taps.

The request body is `TapSpec` itself, so FastAPI's 422 names the field and the rule
it broke; nothing is stored unless the whole policy is valid. Handlers are async:
they run on the controller's event loop, never beside it in a thread.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel

from vtap.control.controller import Controller
from vtap.model.network import dpid_str
from vtap.model.policy import Tap, TapSpec
from vtap.model.rules import SwitchRules
from vtap.store.sqlite import NameTaken, NotFound


class TapOut(TapSpec):
    id: int
    status: str
    status_reason: str
    switches: list[str]


class SwitchRulesOut(BaseModel):
    dpid: str
    flows: list[str]
    groups: list[str]


class TapRulesOut(BaseModel):
    id: int
    switches: list[SwitchRulesOut]


class DryRunOut(BaseModel):
    dry_run: bool
    policy: TapSpec
    status: str
    status_reason: str
    switches: list[SwitchRulesOut]


class FlowPathOut(BaseModel):
    hosts: list[str]
    switches: list[str]


class CopyPathOut(BaseModel):
    switches: list[str]
    monitor: str


class TapPathsOut(BaseModel):
    id: int
    flows: list[FlowPathOut]
    tap_points: list[str]
    copies: list[CopyPathOut]
    monitor: str | None


class TapStatsOut(BaseModel):
    id: int
    packets: int
    bytes: int
    copies: int


def _out(ctl: Controller, tap: Tap) -> TapOut:
    st = ctl.tap_status(tap.id)
    return TapOut(**tap.spec.model_dump(), id=tap.id, status=st.state, status_reason=st.reason,
                  switches=[dpid_str(d) for d in st.switches])


def _rules(rules: dict[int, SwitchRules]) -> list[SwitchRulesOut]:
    return [
        SwitchRulesOut(dpid=dpid_str(dpid), flows=sorted(str(f) for f in r.flows), groups=sorted(str(g) for g in r.groups))
        for dpid, r in sorted(rules.items())
    ]


def _get(ctl: Controller, tap_id: int) -> Tap:
    tap = ctl.taps.get(tap_id)
    if tap is None:
        raise HTTPException(404, f"no TAP policy with id {tap_id}")
    return tap


def router(ctl: Controller) -> APIRouter:
    r = APIRouter(prefix="/api/v1/taps", tags=["taps"])

    @r.post("", status_code=201, response_model=TapOut | DryRunOut)
    async def create(spec: TapSpec, response: Response, dry_run: bool = Query(False, description="compile only: return the rules it would install")):
        if dry_run:
            state, rules = ctl.dry_run(spec)
            response.status_code = 200
            return DryRunOut(dry_run=True, policy=spec, status=state.state, status_reason=state.reason, switches=_rules(rules))
        try:
            tap = ctl.add_tap(spec)
        except NameTaken:
            raise HTTPException(409, f"name: a TAP policy named {spec.name!r} already exists") from None
        return _out(ctl, tap)

    @r.get("", response_model=list[TapOut])
    async def list_taps():
        return [_out(ctl, t) for t in sorted(ctl.taps.values(), key=lambda t: t.id)]

    @r.get("/{tap_id}", response_model=TapOut)
    async def show(tap_id: int):
        return _out(ctl, _get(ctl, tap_id))

    @r.put("/{tap_id}", response_model=TapOut)
    async def update(tap_id: int, spec: TapSpec):
        _get(ctl, tap_id)
        try:
            tap = ctl.update_tap(tap_id, spec)
        except NameTaken:
            raise HTTPException(409, f"name: a TAP policy named {spec.name!r} already exists") from None
        except NotFound:
            raise HTTPException(404, f"no TAP policy with id {tap_id}") from None
        return _out(ctl, tap)

    @r.delete("/{tap_id}", status_code=204)
    async def delete(tap_id: int):
        _get(ctl, tap_id)
        try:
            ctl.delete_tap(tap_id)
        except NotFound:
            raise HTTPException(404, f"no TAP policy with id {tap_id}") from None
        return Response(status_code=204)

    @r.get("/{tap_id}/rules", response_model=TapRulesOut)
    async def rules(tap_id: int):
        _get(ctl, tap_id)
        return TapRulesOut(id=tap_id, switches=_rules(ctl.tap_rules(tap_id)))

    @r.get("/{tap_id}/stats", response_model=TapStatsOut)
    async def stats(tap_id: int):
        _get(ctl, tap_id)
        counters = (await ctl.tap_counters()).get(tap_id, {"packets": 0, "bytes": 0})
        return TapStatsOut(id=tap_id, packets=counters["packets"], bytes=counters["bytes"], copies=counters["packets"])

    @r.get("/{tap_id}/paths", response_model=TapPathsOut)
    async def paths(tap_id: int):
        """Where the policy sits: the tapped flow's path, tap points, the copies' paths."""
        _get(ctl, tap_id)
        p = ctl.tap_paths(tap_id)
        return TapPathsOut(
            id=tap_id,
            flows=[FlowPathOut(hosts=f["hosts"], switches=[dpid_str(d) for d in f["switches"]]) for f in p["flows"]],
            tap_points=[dpid_str(d) for d in p["tap_points"]],
            copies=[CopyPathOut(switches=[dpid_str(d) for d in c["switches"]], monitor=c["monitor"]) for c in p["copies"]],
            monitor=p["monitor"],
        )

    return r
