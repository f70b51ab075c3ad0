"""What OpenStack clients need around the TaaS API (`api/taas.py`): Neutron's error body,
Keystone's `X-Auth-Token`, a version document, and vtap's hosts as read-only ports.

- Errors under `/v2.0` are Neutron's `{"NeutronError": {"type", "message", "detail"}}`:
  the clients print its message (FastAPI's `{"detail": ...}` would print only "Conflict").
  A lookup by name first asks `GET .../<name>`, so a malformed id is a 404, never a 422.
- `X-Auth-Token: <vtap token>` is accepted as `Authorization: Bearer`, so
  `openstack --os-auth-type admin_token --os-token <token> --os-endpoint http://vtap/v2.0`
  needs no Keystone. A token's project is its scope (tokens with one scope share it).
- A port is a learned host: its id is stable per MAC, `binding:host_id` is its switch,
  and a project sees the ports whose MAC or one of whose addresses is in its scope.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel

from vtap.api.auth import BEARER, Principal, authenticate
from vtap.api.deps import Ctl, get_tokens
from vtap.model.access import Role, host_inside
from vtap.model.network import Host, dpid_str
from vtap.model.taas import port_id, project_id

PREFIX = "/v2.0"
NETWORK_ID = "3c2f4c1e-7b7a-5e0b-9f55-5a0e7c5e0001"  # the one network vtap's hosts are on, as Neutron shows it
HTTP_TYPES = {400: "HTTPBadRequest", 401: "HTTPUnauthorized", 403: "HTTPForbidden", 404: "HTTPNotFound",
              405: "HTTPMethodNotAllowed", 409: "HTTPConflict", 413: "HTTPRequestEntityTooLarge",
              429: "HTTPTooManyRequests", 503: "HTTPServiceUnavailable"}


class NeutronErrorBody(BaseModel):
    type: str
    message: str
    detail: str


class NeutronErrorOut(BaseModel):
    NeutronError: NeutronErrorBody


class NeutronError(Exception):
    """An answer in Neutron's error shape: its status, its exception's name, its message."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def neutron_body(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"NeutronError": {"type": kind, "message": message, "detail": ""}}, status_code=status,
                        headers=headers)


def is_neutron(request: Request) -> bool:
    return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")


async def neutron_error(request: Request, exc: NeutronError) -> JSONResponse:
    return neutron_body(exc.status, exc.kind, exc.message)


def from_http(status: int, detail, headers: dict | None = None) -> JSONResponse:
    """vtap's own refusals (401, 403, 405, 429, 503 ...) under /v2.0, in Neutron's shape."""
    if isinstance(detail, list):  # a scope's 403: field and why, each
        detail = "; ".join(f"{d['loc'][-1]}: {d['msg']}" for d in detail if isinstance(d, dict))
    return neutron_body(status, HTTP_TYPES.get(status, "HTTPError"), str(detail), headers)


def from_validation(errors: list[dict]) -> JSONResponse:
    """A malformed request under /v2.0 is Neutron's 400, naming the input."""
    first = errors[0] if errors else {"loc": ("body",), "msg": "malformed request"}
    field = next((str(x) for x in reversed(first.get("loc", ())) if isinstance(x, str)), "body")
    return neutron_body(400, "HTTPBadRequest", f"Invalid input for {field}. Reason: {first.get('msg', '')}.")


def requester(role: Role):
    """A dependency: the principal of `X-Auth-Token` (or a Bearer token), at least `role`."""

    async def dependency(request: Request, x_auth_token: str | None = Header(None, alias="X-Auth-Token"),
                         creds: HTTPAuthorizationCredentials | None = Depends(BEARER)) -> Principal:
        if x_auth_token and creds is None:  # Keystone's header, when no Authorization is given
            creds = HTTPAuthorizationCredentials(scheme="Bearer", credentials=x_auth_token.strip())
        return authenticate(get_tokens(request), request, creds, role)

    return dependency


viewer = requester(Role.VIEWER)
operator = requester(Role.OPERATOR)


def project_of(me: Principal) -> str:
    if me.role == Role.ADMIN:
        return project_id(None)
    return project_id(json.dumps(me.scope.model_dump(mode="json") if me.scope else {}, sort_keys=True))


def sees(me: Principal, mac: str, ips: tuple[str, ...], *, as_monitor: bool = False) -> bool:
    """Whether `me`'s project sees this host: admins all; an operator or viewer with a
    scope, a host in its sources (a monitor: in its monitors, or its sources)."""
    if me.role == Role.ADMIN:
        return True
    if me.scope is None:
        return False
    if as_monitor:
        return host_inside(me.scope.monitors, mac, ips) or host_inside(me.scope.sources, mac, ips)
    return host_inside(me.scope.sources, mac, ips)


def port_out(host: Host, me: Principal) -> dict:
    return {"id": port_id(host.mac), "name": host.ips[0] if host.ips else host.mac, "network_id": NETWORK_ID,
            "tenant_id": project_of(me), "project_id": project_of(me), "mac_address": host.mac,
            "admin_state_up": True, "status": "ACTIVE", "device_id": "", "device_owner": "compute:vtap",
            "fixed_ips": [{"subnet_id": "", "ip_address": ip} for ip in host.ips],
            "binding:host_id": dpid_str(host.dpid), "description": f"switch {dpid_str(host.dpid)} port {host.port}",
            "tags": []}


def visible_ports(ctl, me: Principal) -> dict[str, Host]:
    """The hosts `me` sees, by port id."""
    return {port_id(h.mac): h for h in ctl.view().hosts.values()
            if sees(me, h.mac, tuple(h.ips), as_monitor=True)}


def find_port(ctl, me: Principal, pid: str) -> Host:
    """The port `pid` as `me` sees it; Neutron's 404 when it is unknown or not `me`'s."""
    host = visible_ports(ctl, me).get(pid)
    if host is None:
        raise NeutronError(404, "PortNotFound", f"Port {pid} could not be found.")
    return host


router = APIRouter(prefix=PREFIX, tags=["openstack"])


@router.get("", include_in_schema=False)
async def version() -> dict:
    """The version document a client's discovery asks for (no token: it holds no data)."""
    return {"version": {"id": "v2.0", "status": "CURRENT", "links": [{"href": f"{PREFIX}/", "rel": "self"}]}}


def _fixed_ip_filter(values: list[str]) -> dict[str, set[str]]:
    """Neutron's `fixed_ips=ip_address=10.0.0.5` (repeatable, ANDed by key)."""
    out: dict[str, set[str]] = {}
    for value in values:
        key, sep, want = value.partition("=")
        if not sep or key not in ("ip_address", "subnet_id"):
            raise NeutronError(400, "HTTPBadRequest", f"Invalid input for fixed_ips. Reason: '{value}' is not of "
                                                      "the form ip_address=ADDRESS.")
        out.setdefault(key, set()).add(want)
    return out


@router.get("/ports", responses={400: {"model": NeutronErrorOut, "description": "a malformed fixed_ips filter"}})
async def ports(ctl: Ctl, me: Principal = Depends(viewer), name: list[str] = Query([]), id: list[str] = Query([]),
                mac_address: list[str] = Query([]), fixed_ips: list[str] = Query([])) -> dict:
    """The ports `me` sees, filtered as Neutron filters (each filter repeatable: any of)."""
    wanted = _fixed_ip_filter(fixed_ips)
    out = []
    for pid, host in sorted(visible_ports(ctl, me).items(), key=lambda kv: kv[1].mac):
        port = port_out(host, me)
        if (name and port["name"] not in name) or (id and pid not in id) or \
                (mac_address and host.mac not in [m.lower() for m in mac_address]):
            continue
        if "ip_address" in wanted and not wanted["ip_address"] & set(host.ips):
            continue
        if "subnet_id" in wanted and "" not in wanted["subnet_id"]:
            continue
        out.append(port)
    return {"ports": out}


@router.get("/ports/{pid}", responses={404: {"model": NeutronErrorOut, "description": "no such port in your project"}})
async def port(pid: str, ctl: Ctl, me: Principal = Depends(viewer)) -> dict:
    return {"port": port_out(find_port(ctl, me, pid), me)}
