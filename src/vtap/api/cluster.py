"""`GET /api/v1/cluster`: who is in the cluster, who leads, and this instance's role
at each switch. Without a cluster: one standalone instance that leads."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from vtap.api.deps import Ctl, viewer
from vtap.model.network import dpid_str


class MemberOut(BaseModel):
    id: str
    api: str
    role: Literal["leader", "follower"]
    since: str


class SwitchRoleOut(BaseModel):
    dpid: str
    role: str  # master, slave, refused (a stale generation), equal (standalone), pending


class RoleChangeOut(BaseModel):
    time: str
    role: str
    why: str


class ClusterOut(BaseModel):
    mode: Literal["standalone", "cluster"]
    member: str | None
    role: Literal["leader", "follower"]
    since: str
    leader: str | None
    generation: int
    store: str
    store_reachable: bool
    store_error: str | None
    lease_ttl_s: int | None
    members: list[MemberOut]
    switches: list[SwitchRoleOut]
    history: list[RoleChangeOut]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


router = APIRouter(prefix="/api/v1", tags=["cluster"])


@router.get("/cluster", response_model=ClusterOut, dependencies=[Depends(viewer)])
async def cluster(ctl: Ctl) -> ClusterOut:
    dpids = sorted(ctl.datapaths)
    c = ctl.cluster
    if c is None:
        return ClusterOut(mode="standalone", member=None, role="leader", since=_iso(ctl.started_at), leader=None,
                          generation=0, store=repr(ctl.store), store_reachable=True, store_error=None,
                          lease_ttl_s=None, members=[],
                          switches=[SwitchRoleOut(dpid=dpid_str(d), role="equal") for d in dpids], history=[])
    d = c.describe()
    members = [MemberOut(id=m, api=info.get("api", ""), role="leader" if m == d["leader"] else "follower",
                         since=_iso(info.get("since", 0.0)))
               for m, info in sorted(c.store.members.items())]
    return ClusterOut(
        mode="cluster", member=c.member_id, role=d["role"], since=_iso(d["since"]), leader=d["leader"],
        generation=d["generation"], store=repr(c.store), store_reachable=c.store.reachable,
        store_error=None if c.store.reachable else c.store.last_error, lease_ttl_s=c.ttl, members=members,
        switches=[SwitchRoleOut(dpid=dpid_str(dp), role=ctl.roles.get(dp, "pending")) for dp in dpids],
        history=[RoleChangeOut(time=_iso(h["time"]), role=h["role"], why=h["why"]) for h in d["history"]],
    )
