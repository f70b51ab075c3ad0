"""REST for access control: tokens (admin), who am I, and the audit trail."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vtap.api.auth import Principal
from vtap.api.deps import AppStore, AppTokens, admin, viewer
from vtap.model.access import Role, Scope
from vtap.model.policy import NAME_RE, check_name
from vtap.store.errors import NotFound


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="who or what holds it: 1-64 letters, digits, '.', '_' or '-'",
                      json_schema_extra={"pattern": NAME_RE.pattern})
    role: Role
    scope: Scope | None = Field(None, description="operators: what they may tap and where copies may go")
    expires_in_s: int | None = Field(None, ge=1, le=10 * 365 * 86400, strict=True, description="seconds until it expires (none: never)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)


class TokenOut(BaseModel):
    id: int
    name: str
    role: Role
    scope: Scope | None
    created: str
    expires_at: str | None


class NewTokenOut(TokenOut):
    token: str = Field(description="the secret: shown here only, never again")


class WhoAmIOut(BaseModel):
    name: str
    role: Role
    scope: Scope | None


class AuditOut(BaseModel):
    seq: int
    time: float = Field(description="seconds since the epoch, as hashed")
    actor: str
    remote: str
    action: str
    target: str
    before: Any
    after: Any
    result: str
    prev_hash: str
    hash: str


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts is not None else None


def _token_out(record: dict) -> TokenOut:
    return TokenOut(id=record["id"], name=record["name"], role=Role(record["role"]),
                    scope=Scope(**record["scope"]) if record["scope"] else None,
                    created=_iso(record["created"]), expires_at=_iso(record["expires_at"]))


router = APIRouter(prefix="/api/v1", tags=["access"])


@router.get("/whoami", response_model=WhoAmIOut)
async def whoami(me: Principal = Depends(viewer)) -> WhoAmIOut:
    return WhoAmIOut(name=me.name, role=me.role, scope=me.scope)


@router.post("/tokens", status_code=201, response_model=NewTokenOut, dependencies=[Depends(admin)])
async def create_token(body: TokenIn, request: Request, tokens: AppTokens) -> NewTokenOut:
    """A new token; its secret is in this reply only (admin)."""
    if body.role == Role.OPERATOR and body.scope is None:
        raise HTTPException(422, [{"loc": ["body", "scope"], "msg": "an operator needs a scope: {sources, monitors}",
                                   "type": "value_error"}])
    if body.role == Role.SENSOR and (body.scope is None or not body.scope.monitors):
        raise HTTPException(422, [{"loc": ["body", "scope"], "msg": "a sensor needs a scope naming its monitor: "
                                   "{\"monitors\": [IP or MAC]}", "type": "value_error"}])
    record, secret = await tokens.mint(body.name, body.role, body.scope, body.expires_in_s)
    out = _token_out(record)
    request.state.audit_action, request.state.audit_target = "token.create", f"token:{record['id']}"
    request.state.audit_after = out.model_dump(mode="json")
    return NewTokenOut(**out.model_dump(), token=secret)


@router.get("/tokens", response_model=list[TokenOut], dependencies=[Depends(admin)])
async def list_tokens(store: AppStore) -> list[TokenOut]:
    return [_token_out(t) for t in store.list_tokens()]


@router.delete("/tokens/{token_id}", status_code=204,
                responses={404: {"description": "no token with this id"},
                           409: {"description": "the token making the request, or the last admin token"}})
async def delete_token(request: Request, store: AppStore, token_id: int = PathParam(ge=1, le=2**63 - 1),
                       me: Principal = Depends(admin)) -> Response:
    """Revoke a token: its next request gets 401 (admin). Neither the token asking nor
    the last admin token that does not expire can be revoked, so an admin is always left."""
    request.state.audit_action, request.state.audit_target = "token.delete", f"token:{token_id}"
    all_tokens = store.list_tokens()
    before = next((t for t in all_tokens if t["id"] == token_id), None)
    request.state.audit_before = _token_out(before).model_dump(mode="json") if before else None
    if token_id == me.token_id:
        raise HTTPException(409, "a token cannot revoke itself: use another admin token")
    lasting = [t for t in all_tokens if t["role"] == Role.ADMIN and t["expires_at"] is None and t["id"] != token_id]
    if before is not None and before["role"] == Role.ADMIN and not lasting:
        raise HTTPException(409, "the last admin token that does not expire cannot be revoked")
    try:
        await store.delete_token(token_id)
    except NotFound:
        raise HTTPException(404, f"no token with id {token_id}") from None
    return Response(status_code=204)


@router.get("/audit", response_model=list[AuditOut])
async def audit(store: AppStore, me: Principal = Depends(viewer),
                since: int = Query(0, ge=0, le=2**62, description="records after this sequence number"),
                actor: str | None = Query(None, max_length=256), target: str | None = Query(None, max_length=256),
                limit: int = Query(1000, ge=1, le=10000)) -> list[AuditOut]:
    """The audit trail: every change and every refusal, hash-chained (`vtap audit --verify`).
    Records about tokens are for admins only (a viewer reads no token list)."""
    records = await store.audit_records(since=since, actor=actor, target=target, limit=limit)
    if me.role != Role.ADMIN:
        records = [r for r in records if not r["target"].startswith("token:")]
    return [AuditOut(**rec) for rec in records]
