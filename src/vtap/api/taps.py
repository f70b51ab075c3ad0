"""REST for TAP policies: /api/v1/taps.

The request body is `TapSpec` itself, so FastAPI's 422 names the field and the rule
it broke; nothing is stored unless the whole policy is valid. Reading needs a viewer's
token; changing, an operator's, whose scope must hold every identifier and monitor the
policy names (403 naming the field otherwise), or an admin's. Every change and refusal
is audited; a single-policy change with the policy before and after, a bulk one with a
summary and then one record per policy it added, changed or removed. Handlers are async:
they run on the controller's event loop, never beside it in a thread; a bulk body is
read in slices (`api/bulk.py`), so the loop keeps answering the switches meanwhile.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from vtap.api.auth import Principal
from vtap.api.bulk import BAD_BODY, SPECS_BODY, read_specs
from vtap.api.deps import BulkTurn, Ctl, Heavy, operator, viewer
from vtap.api.pacing import HeavyWork
from vtap.control.controller import Controller
from vtap.model.access import Role, Scope, scope_violations
from vtap.model.audit import policy_record
from vtap.model.network import dpid_str
from vtap.model.policy import MatchSpec, Tap, TapSpec
from vtap.model.policy_search import matches, words
from vtap.model.rules import SwitchRules
from vtap.model.state import PolicyState
from vtap.store.errors import NameTaken, NotFound


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
    monitors: list[str] = Field([], description="every monitor the copies go to (a pool's members; a tunnel's next hop)")


class ApplyOut(BaseModel):
    dry_run: bool
    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: int
    switches: list[SwitchRulesOut] = Field(description="dry run: the rules of the added and changed policies")


class DeliveryOut(BaseModel):
    """Copies sent toward the policy's monitor at tap points and delivered to its port,
    since this controller started counting; per monitor, shared by `policies`."""

    monitor: str = Field(description="the monitor as reasons name it (its IP where known)")
    monitor_mac: str
    sent_packets: int
    sent_bytes: int
    delivered_packets: int
    delivered_bytes: int
    undelivered_packets: int
    received_packets: int | None = Field(None, description="copies the tool's sensor counted at its interface "
                                                           "(`vtap sensor`); null without a sensor")
    received_bytes: int | None = None
    failing: bool = Field(description="copies stopped reaching the monitor, or its tool (the policy is degraded)")
    reason: str
    policies: list[int] = Field(description="the policies whose copies this monitor receives")


class ToolOut(BaseModel):
    """What the tool's sensor last said of this policy's copies (totals since it started)."""

    monitor: str
    packets: int
    bytes: int
    alerts: int = Field(description="the tool's alerts on this policy's traffic (Suricata's eve.json)")
    reported_at: float


class TapStatsOut(BaseModel):
    id: int
    packets: int = Field(description="packets that hit the policy's tap rules (copied once per monitor)")
    bytes: int
    copies: int
    copies_dropped_by_rate_limit: int = Field(0, description="copies the policy's rate_limit_pps dropped at its tap points "
                                                             "(since this controller began counting)")
    delivery: DeliveryOut | None = Field(None, description="null while the policy is not compiled; a pool's: its first "
                                                           "failing monitor, else its first")
    deliveries: list[DeliveryOut] = Field([], description="each monitor's delivery (a pool's members seen)")
    tool: ToolOut | None = Field(None, description="received at the tool, by its sensor; null without one")


def _delivery(ctl: Controller, tap_id: int, mac: str | None = None) -> DeliveryOut | None:
    if mac is None:
        d = ctl.monitor_delivery(tap_id)
        mac = next((m for m, x in ctl.monitor_deliveries(tap_id).items() if x is d), None)
    else:
        d = ctl.monitor_deliveries(tap_id).get(mac)
    if d is None or mac is None:
        return None
    sharing = ctl.policies_of_monitor(mac)
    return DeliveryOut(monitor=ctl.monitor_labels().get(mac, mac), monitor_mac=mac, sent_packets=d.sent_packets,
                       sent_bytes=d.sent_bytes, delivered_packets=d.delivered_packets, delivered_bytes=d.delivered_bytes,
                       undelivered_packets=d.undelivered_packets, received_packets=d.received_packets,
                       received_bytes=d.received_bytes if d.received_packets is not None else None,
                       failing=d.failing, reason=d.reason, policies=sharing)


def _out(ctl: Controller, tap: Tap, syncs: dict | None = None) -> TapOut:
    st = ctl.tap_status(tap.id, syncs)
    return TapOut(**tap.spec.model_dump(), id=tap.id, status=st.state, status_reason=st.reason,
                  switches=[dpid_str(d) for d in sorted(st.switches)])


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


def check_scope(me: Principal, spec: MatchSpec) -> None:
    """403 naming every field outside an operator's scope (admins have none): a policy's,
    or a capture job's match."""
    if me.role == Role.ADMIN:
        return
    bad = scope_violations(spec, me.scope or Scope())
    if bad:
        raise HTTPException(403, [{"loc": ["body", field], "msg": msg, "type": "scope"} for field, msg in bad])


def _audit(request: Request, action: str, target: str, before: Tap | None = None, after: TapSpec | None = None) -> None:
    request.state.audit_action, request.state.audit_target = action, target
    request.state.audit_before = before.spec.model_dump(mode="json") if before else None
    request.state.audit_after = after.model_dump(mode="json") if after else None


def _refuse_taas(specs: list[TapSpec], indexed: bool = True) -> None:
    """422: a policy's `taas` is written by the TaaS API only (it would claim a resource)."""
    for i, spec in enumerate(specs):
        if spec.taas is not None:
            loc = ["body", i, "taas"] if indexed else ["body", "taas"]
            raise HTTPException(422, [{"loc": loc, "msg": "written by the TaaS API (/v2.0/taas) only", "type": "read_only"}])


def _refuse_managed(tap: Tap) -> None:
    """409: a policy that serves a TaaS resource changes with it, through /v2.0/taas."""
    ref = tap.spec.taas
    if ref is not None:
        raise HTTPException(409, f"policy {tap.spec.name!r} serves TaaS {ref.kind.replace('_', ' ')} {ref.id}: "
                                 f"change it through /v2.0/taas/{ref.kind}s/{ref.id}")


def _keep_managed(ctl: Controller, specs: list[TapSpec]) -> list[TapSpec]:
    """A declared set leaves the TaaS policies alone: none of its names may be theirs, and
    a prune keeps them (they are in the set as they are)."""
    managed = {t.spec.name: t.spec for t in ctl.taps.values() if t.spec.taas is not None}
    for i, spec in enumerate(specs):
        if spec.name in managed:
            raise HTTPException(409, [{"loc": ["body", i, "name"], "msg": f"{spec.name!r} serves a TaaS resource: "
                                       "change it through /v2.0/taas", "type": "managed"}])
    return specs + list(managed.values())


def _check_names(specs: list[TapSpec]) -> None:
    """409 naming the index of a name declared twice in one set."""
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.name in seen:
            raise HTTPException(409, [{"loc": ["body", i, "name"], "msg": f"{spec.name!r} is declared twice (also at {seen[spec.name]})",
                                       "type": "duplicate"}])
        seen[spec.name] = i


def _check_scope_each(me: Principal, specs: list[TapSpec]) -> None:
    """As `check_scope`, for a set: the 403 names the index and the field."""
    for i, spec in enumerate(specs):
        try:
            check_scope(me, spec)
        except HTTPException as exc:
            raise HTTPException(403, [{**d, "loc": ["body", i, d["loc"][-1]]} for d in exc.detail]) from None


NOT_FOUND = {404: {"description": "no TAP policy with this id"}}
LIST_SLICE = 500  # policies a listing writes out before it lets the loop serve the switches again
MATCH_SLICE = 2000  # policies a filtered listing matches before it lets the loop serve the switches again
MAX_LIMIT = 1000  # policies one page of a listing may hold
# Ids (SQLite rowids, or the etcd store's counter) count from 1 within 63 bits: a path beyond them is a
# 422, never an overflow deep in the store.
TapId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="the policy's id")]


router = APIRouter(prefix="/api/v1/taps", tags=["taps"], dependencies=[Depends(viewer)])


@router.post("", status_code=201, response_model=TapOut | DryRunOut,
             responses={200: {"description": "dry run: what it would install", "model": DryRunOut},
                        409: {"description": "the name is taken"}})
async def create(spec: TapSpec, response: Response, request: Request, ctl: Ctl, me: Principal = Depends(operator),
                 dry_run: bool = Query(False, description="compile only: return the rules it would install")):
    _audit(request, "tap.dry-run" if dry_run else "tap.create", f"tap:{spec.name}", after=spec)
    _refuse_taas([spec], indexed=False)
    check_scope(me, spec)
    if dry_run:
        state, rules = ctl.dry_run(spec)
        response.status_code = 200
        return DryRunOut(dry_run=True, policy=spec, status=state.state, status_reason=state.reason, switches=_rules(rules))
    try:
        tap = await ctl.add_tap(spec)
    except NameTaken:
        raise HTTPException(409, f"name: a TAP policy named {spec.name!r} already exists") from None
    request.state.audit_target = f"tap:{tap.id}"
    return _out(ctl, tap)


@router.put("", response_model=ApplyOut, responses={409: {"description": "a name is declared twice"}, 422: BAD_BODY},
            openapi_extra=SPECS_BODY)
async def apply(request: Request, ctl: Ctl, heavy: Heavy, bulk_turn: BulkTurn, me: Principal = Depends(operator),
                prune: bool = Query(False, description="delete stored policies the set leaves out"),
                dry_run: bool = Query(False, description="say what would change and the rules; change nothing")):
    """Declarative: make the stored policies equal to this set, by name, in one
    transaction and one recompile (one bundle per switch). The set is validated whole
    first: one bad policy is a 422 naming its index and field, and nothing changes."""
    request.state.audit_action, request.state.audit_target = "tap.apply" + (" (dry run)" if dry_run else ""), "taps"
    async with bulk_turn:
        return await _apply(ctl, await read_specs(request, heavy), request, me, prune, dry_run)


async def _apply(ctl: Controller, specs: list[TapSpec], request: Request, me: Principal, prune: bool,
                 dry_run: bool) -> ApplyOut:
    _check_names(specs)
    _refuse_taas(specs)
    _check_scope_each(me, specs)
    specs = _keep_managed(ctl, specs)
    switches = []
    if dry_run or me.role != Role.ADMIN:
        # What would change, first: for a scoped operator, whether each policy it would
        # change or remove is in scope. An admin's set is planned once, in the store's
        # transaction (at 100,000, planning it twice held the loop a second more).
        plan, rules = ctl.plan_apply(specs, prune=prune, dry_run=dry_run)
        for tap in plan.removed + [before for before, _ in plan.changed]:
            check_scope(me, tap.spec)
    if dry_run:
        switches = _rules({dpid: SwitchRules(r.flows, r.groups) for dpid, r in rules.items()})
    else:
        plan = await ctl.apply_taps(specs, prune=prune)
        request.state.audit_each = (
            [policy_record("tap.create", t.id, None, t.spec) for t in plan.added]
            + [policy_record("tap.update", a.id, b.spec, a.spec) for b, a in plan.changed]
            + [policy_record("tap.delete", t.id, t.spec, None) for t in plan.removed])
    out = ApplyOut(dry_run=dry_run, added=[t.spec.name for t in plan.added], changed=[a.spec.name for _, a in plan.changed],
                   removed=[t.spec.name for t in plan.removed], unchanged=len(plan.unchanged), switches=switches)
    request.state.audit_after = out.model_dump(mode="json", exclude={"switches"})
    return out


@router.post(":batch", status_code=201, response_model=list[TapOut], openapi_extra=SPECS_BODY,
             responses={409: {"description": "a name is taken or declared twice"}, 422: BAD_BODY})
async def create_many(request: Request, ctl: Ctl, heavy: Heavy, bulk_turn: BulkTurn, me: Principal = Depends(operator)):
    """Create many policies at once: all or none, one transaction, one recompile."""
    request.state.audit_action, request.state.audit_target = "tap.create-batch", "taps"
    async with bulk_turn:
        return await _create_many(ctl, await read_specs(request, heavy), request, me)


async def _create_many(ctl: Controller, specs: list[TapSpec], request: Request, me: Principal) -> list[TapOut]:
    _check_names(specs)
    _refuse_taas(specs)
    _check_scope_each(me, specs)
    plan, _ = ctl.plan_apply(specs, prune=False, dry_run=False)
    taken = [before.spec.name for before, _ in plan.changed] + [t.spec.name for t in plan.unchanged]
    if taken:
        raise HTTPException(409, f"name: already taken: {', '.join(taken)}")
    done = await ctl.apply_taps(specs, prune=False)
    request.state.audit_after = [t.spec.name for t in done.added]
    request.state.audit_each = [policy_record("tap.create", t.id, None, t.spec) for t in done.added]
    return [_out(ctl, t) for t in done.added]


@router.get("", response_model=list[TapOut], responses={200: {"headers": {"X-Total-Count": {
    "description": "how many policies match (all of them without `q` and `status`), whatever `offset` and `limit`",
    "schema": {"type": "integer"}}}}})
async def list_taps(ctl: Ctl, heavy: Heavy,
                    q: str | None = Query(None, max_length=200, description="only policies with every word of this in "
                                          "their name, an address (source, destination: MAC or IP) or a monitor"),
                    status: PolicyState | None = Query(None, description="only policies in this state"),
                    offset: int = Query(0, ge=0, le=2**31, description="leave out this many first matches (by id)"),
                    limit: int | None = Query(None, ge=1, le=MAX_LIMIT, description="at most this many (absent: all)")):
    """Policies with their status, by id: every one, or those matching `q` and `status`,
    from `offset` on, `limit` of them; `X-Total-Count` says how many match. Written out
    `LIST_SLICE` at a time, and matched `MATCH_SLICE` at a time, each slice heavy work
    (`api/pacing.py`): a listing of 100,000 policies holds OpenFlow, LLDP and the
    reconcilers up for one slice at most, not for all of it. A policy deleted while the
    listing runs is left out."""
    syncs = ctl.switch_syncs()
    ids = sorted(ctl.taps)
    if q or status is not None:
        ids = await _matching(ctl, heavy, ids, words(q or ""), status, syncs)
    page = ids[offset:] if limit is None else ids[offset:offset + limit]

    async def body():
        yield b"["
        first = True
        for start in range(0, len(page), LIST_SLICE):
            async with heavy.slice():
                rows = [_out(ctl, ctl.taps[i], syncs).model_dump_json().encode() for i in page[start:start + LIST_SLICE]
                        if i in ctl.taps]
            if rows:
                yield (b"" if first else b",") + b",".join(rows)
                first = False
        yield b"]"

    return StreamingResponse(body(), media_type="application/json", headers={"X-Total-Count": str(len(ids))})


async def _matching(ctl: Controller, heavy: HeavyWork, ids: list[int], query_words: list[str], status: PolicyState | None,
                    syncs: dict) -> list[int]:
    """The ids whose policy matches the words and is in `status` (its status is worked out
    per policy: the heavy part)."""
    found = []
    for start in range(0, len(ids), MATCH_SLICE):
        async with heavy.slice():
            for i in ids[start:start + MATCH_SLICE]:
                tap = ctl.taps.get(i)
                if (tap is not None and matches(tap.spec, query_words)
                        and (status is None or ctl.tap_status(i, syncs).state == status)):
                    found.append(i)
    return found


@router.get("/{tap_id}", response_model=TapOut, responses=NOT_FOUND)
async def show(tap_id: TapId, ctl: Ctl):
    return _out(ctl, _get(ctl, tap_id))


@router.put("/{tap_id}", response_model=TapOut, responses={**NOT_FOUND, 409: {"description": "the name is taken"}})
async def update(tap_id: TapId, spec: TapSpec, request: Request, ctl: Ctl, me: Principal = Depends(operator)):
    """Replace the policy; an operator's scope must hold both the policy as stored and as asked."""
    _audit(request, "tap.update", f"tap:{tap_id}", ctl.taps.get(tap_id), spec)
    old = _get(ctl, tap_id)
    _refuse_managed(old)
    _refuse_taas([spec], indexed=False)
    check_scope(me, old.spec)
    check_scope(me, spec)
    try:
        tap = await ctl.update_tap(tap_id, spec)
    except NameTaken:
        raise HTTPException(409, f"name: a TAP policy named {spec.name!r} already exists") from None
    except NotFound:
        raise HTTPException(404, f"no TAP policy with id {tap_id}") from None
    return _out(ctl, tap)


@router.delete("/{tap_id}", status_code=204, responses=NOT_FOUND)
async def delete(tap_id: TapId, request: Request, ctl: Ctl, me: Principal = Depends(operator)):
    _audit(request, "tap.delete", f"tap:{tap_id}", ctl.taps.get(tap_id))
    _refuse_managed(_get(ctl, tap_id))
    check_scope(me, _get(ctl, tap_id).spec)
    try:
        await ctl.delete_tap(tap_id)
    except NotFound:
        raise HTTPException(404, f"no TAP policy with id {tap_id}") from None
    return Response(status_code=204)


@router.get("/{tap_id}/rules", response_model=TapRulesOut, responses=NOT_FOUND)
async def rules(tap_id: TapId, ctl: Ctl):
    _get(ctl, tap_id)
    return TapRulesOut(id=tap_id, switches=_rules(ctl.tap_rules(tap_id)))


@router.get("/{tap_id}/stats", response_model=TapStatsOut, responses=NOT_FOUND)
async def stats(tap_id: TapId, ctl: Ctl):
    _get(ctl, tap_id)
    counters = (await ctl.tap_counters()).get(tap_id, {"packets": 0, "bytes": 0, "copies": 0, "dropped": 0})
    macs = ctl.monitors_of(tap_id)
    return TapStatsOut(id=tap_id, packets=counters["packets"], bytes=counters["bytes"], copies=counters["copies"],
                       copies_dropped_by_rate_limit=counters["dropped"], delivery=_delivery(ctl, tap_id),
                       deliveries=[d for d in (_delivery(ctl, tap_id, m) for m in macs) if d is not None],
                       tool=ToolOut(**ctl.tool_counts[tap_id]) if tap_id in ctl.tool_counts else None)


@router.get("/{tap_id}/paths", response_model=TapPathsOut, responses=NOT_FOUND)
async def paths(tap_id: TapId, ctl: Ctl):
    """Where the policy sits: the tapped flow's path, tap points, the copies' paths."""
    _get(ctl, tap_id)
    p = ctl.tap_paths(tap_id)
    return TapPathsOut(
        id=tap_id,
        flows=[FlowPathOut(hosts=f["hosts"], switches=[dpid_str(d) for d in f["switches"]]) for f in p["flows"]],
        tap_points=[dpid_str(d) for d in p["tap_points"]],
        copies=[CopyPathOut(switches=[dpid_str(d) for d in c["switches"]], monitor=c["monitor"]) for c in p["copies"]],
        monitor=p["monitor"],
        monitors=p["monitors"],
    )
