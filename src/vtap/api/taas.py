"""Neutron's Tap-as-a-Service API, `/v2.0/taas/{tap_services,tap_flows,tap_mirrors}`, as
the OpenStack clients speak it (`openstack tap service|flow|mirror ...`, openstacksdk's
`network.*tap_*`): Neutron's resources, fields, enums, status codes and error bodies.

vtap is the backend: each resource is the vtap policies that serve it
(`vtap.model.taas`), made, changed and removed through the controller as any policy, so
they are compiled, installed, audited and kept as any policy is, and vtap's own API, CLI
and UI show them. Those policies are changed only here (`/api/v1/taps` refuses).

Differences from Neutron, on purpose: `status` is the policies' (`degraded` shows as
ERROR, the reason in `vtap_status_reason`); a resource also shows `vtap_policies`; a
project is a token's scope, and sees the resources whose ports and monitors lie in it.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from vtap.api.auth import Principal
from vtap.api.deps import Ctl
from vtap.api.neutron import NeutronError, NeutronErrorOut, find_port, operator, project_of, sees, viewer
from vtap.model.access import Role, host_inside
from vtap.model.audit import policy_record
from vtap.model.policy import Tap, TapSpec, normalize_ip
from vtap.model.taas import (DIRECTIONS, MIRROR_TYPES, TaasRef, flow_specs, mirror_specs, parse_vlan_filter,
                             service_specs, status, tunnel_ids)
from vtap.store.errors import NotFound

# Per resource: its singular, Neutron's attributes a POST may give (required ones marked),
# and the exception names of its 404.
RESOURCES = {
    "tap_services": ("tap_service", {"name": False, "description": False, "port_id": True, "project_id": False,
                                     "tenant_id": False}, ("TapServiceNotFound", "Tap Service  {} does not exist")),
    "tap_flows": ("tap_flow", {"name": False, "description": False, "tap_service_id": True, "source_port": True,
                               "direction": True, "vlan_filter": False, "project_id": False, "tenant_id": False},
                  ("TapFlowNotFound", "Tap Flow  {} does not exist")),
    "tap_mirrors": ("tap_mirror", {"name": False, "description": False, "port_id": True, "directions": True,
                                   "remote_ip": True, "mirror_type": True, "project_id": False, "tenant_id": False},
                    ("TapMirrorNotFound", "Tap Mirror {} does not exist")),
}
UPDATABLE = ("name", "description")


def _bad(message: str) -> NeutronError:
    return NeutronError(400, "HTTPBadRequest", message)


def _policies(ctl) -> dict[str, list[Tap]]:
    """Every TaaS resource's policies, by resource id."""
    out: dict[str, list[Tap]] = {}
    for tap in ctl.taps.values():
        if tap.spec.taas is not None:
            out.setdefault(tap.spec.taas.id, []).append(tap)
    return out


def _ips(ctl, mac: str | None) -> tuple[str, ...]:
    host = ctl.view().hosts.get(mac) if mac else None
    return tuple(host.ips) if host else ()


def _visible(ctl, me: Principal, taps: list[Tap]) -> bool:
    """Whether `me`'s project sees a resource: every host its policies tap, and every
    monitor, in its scope."""
    if me.role == Role.ADMIN:
        return True
    for tap in taps:
        s = tap.spec
        for mac in (s.src_mac, s.dst_mac) if s.enabled else ():
            if mac and not sees(me, mac, _ips(ctl, mac)):
                return False
        if s.monitor_mac and not sees(me, s.monitor_mac, _ips(ctl, s.monitor_mac), as_monitor=True):
            return False
        if s.monitor_ip and not (me.scope and host_inside(me.scope.monitors, s.monitor_ip)):
            return False
    return True


def _out(ctl, taps: list[Tap], syncs: dict) -> dict:
    ref = taps[0].spec.taas
    assert ref is not None
    body: dict[str, Any] = {"id": ref.id, "tenant_id": ref.project_id, "project_id": ref.project_id, "name": ref.name,
                            "description": ref.description}
    states = [ctl.tap_status(t.id, syncs) for t in taps]
    if ref.kind == "tap_service":
        monitor = taps[0].spec.monitor_mac
        known = monitor in ctl.view().hosts
        body |= {"port_id": ref.port_id, "status": "ACTIVE" if known else "DOWN",
                 "vtap_status_reason": "" if known else f"its port ({monitor}) is not seen on any switch"}
    elif ref.kind == "tap_flow":
        body |= {"tap_service_id": ref.tap_service_id, "source_port": ref.source_port, "direction": ref.direction,
                 "vlan_filter": ref.vlan_filter, "status": status([st.state for st in states]),
                 "vtap_status_reason": "; ".join(sorted({st.reason for st in states if st.reason}))}
    else:
        body |= {"port_id": ref.port_id, "directions": ref.tunnel_ids, "remote_ip": ref.remote_ip,
                 "mirror_type": ref.mirror_type, "vtap_status": status([st.state for st in states]),
                 "vtap_status_reason": "; ".join(sorted({st.reason for st in states if st.reason}))}
    body["vtap_policies"] = sorted(t.spec.name for t in taps)
    return body


def _find(ctl, me: Principal, collection: str, rid: str) -> list[Tap]:
    """The policies of the visible resource `rid` of `collection`; Neutron's 404 otherwise."""
    singular, _, (kind, message) = RESOURCES[collection]
    taps = _policies(ctl).get(rid, [])
    if not taps or taps[0].spec.taas.kind != singular or not _visible(ctl, me, taps):
        raise NeutronError(404, kind, message.format(rid))
    return taps


def _body(payload: Any, collection: str, *, post: bool) -> dict:
    """The resource's attributes from a request body, checked as Neutron checks them."""
    singular, attrs, _ = RESOURCES[collection]
    if not isinstance(payload, dict) or not isinstance(payload.get(singular), dict):
        raise _bad(f"Unable to find '{singular}' in request body")
    body = payload[singular]
    if "id" in body or "status" in body:
        raise _bad(f"Attribute '{'id' if 'id' in body else 'status'}' not allowed in {'POST' if post else 'PUT'}")
    unknown = sorted(set(body) - set(attrs))
    if unknown:
        raise _bad(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    if post:
        for name, required in attrs.items():
            if required and name not in body:
                raise _bad(f"Failed to parse request. Required attribute '{name}' not specified")
    else:
        fixed = sorted(set(body) - set(UPDATABLE))
        if fixed:
            raise _bad(f"Cannot update read-only attribute {fixed[0]}")
    for name in ("name", "description"):
        if name in body and not isinstance(body[name], str):
            raise _bad(f"Invalid input for {name}. Reason: '{body[name]}' is not a valid string.")
        if name in body and len(body[name]) > (255 if name == "name" else 1024):
            raise _bad(f"Invalid input for {name}. Reason: '{body[name][:40]}...' exceeds maximum length.")
    return body


def _check_project(me: Principal, body: dict) -> str:
    """The resource's project: the caller's; an admin may name another."""
    mine = project_of(me)
    asked = body.get("project_id") or body.get("tenant_id")
    if asked and asked != mine and me.role != Role.ADMIN:
        raise NeutronError(403, "HTTPForbidden", "a resource of another project may be made only by an admin")
    return asked or mine


def _audit(request: Request, action: str, rid: str, before: TaasRef | None, after: TaasRef | None) -> None:
    request.state.audit_action, request.state.audit_target = f"taas.{action}", f"taas:{rid}"
    request.state.audit_before = before.model_dump(mode="json") if before else None
    request.state.audit_after = after.model_dump(mode="json") if after else None


async def _create(request: Request, ctl, specs: list[TapSpec], ref: TaasRef) -> dict:
    """Add a resource's policies in one transaction (all or none), audited each."""
    _audit(request, f"{ref.kind}.create", ref.id, None, ref)
    plan = await ctl.apply_taps(specs, prune=False)
    request.state.audit_each = [policy_record("tap.create", t.id, None, t.spec) for t in plan.added]
    return _out(ctl, plan.added, ctl.switch_syncs())


async def _remove(request: Request, ctl, taps: list[Tap]) -> None:
    each = request.state.audit_each = []
    for tap in taps:
        try:
            await ctl.delete_tap(tap.id)
        except NotFound:
            continue  # gone meanwhile
        each.append(policy_record("tap.delete", tap.id, tap.spec, None))


async def list_resources(collection: str, ctl: Ctl, me: Principal, name: list[str], id: list[str]) -> dict:
    singular = RESOURCES[collection][0]
    syncs = ctl.switch_syncs()
    out = []
    for rid, taps in sorted(_policies(ctl).items()):
        ref = taps[0].spec.taas
        if ref.kind != singular or (name and ref.name not in name) or (id and rid not in id):
            continue
        if _visible(ctl, me, taps):
            out.append(_out(ctl, taps, syncs))
    return {collection: out}


async def show(collection: str, rid: str, ctl: Ctl, me: Principal) -> dict:
    return {RESOURCES[collection][0]: _out(ctl, _find(ctl, me, collection, rid), ctl.switch_syncs())}


async def create(collection: str, request: Request, ctl: Ctl, me: Principal) -> dict:
    body = _body(await _json(request), collection, post=True)
    rid = str(uuid.uuid4())
    common = {"id": rid, "name": body.get("name", ""), "description": body.get("description", ""),
              "project_id": _check_project(me, body)}
    make = {"tap_services": _new_service, "tap_flows": _new_flow, "tap_mirrors": _new_mirror}[collection]
    specs, ref = make(ctl, me, body, common)
    return {RESOURCES[collection][0]: await _create(request, ctl, specs, ref)}


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise _bad("Malformed request body: not JSON") from None


def _new_service(ctl, me: Principal, body: dict, common: dict) -> tuple[list[TapSpec], TaasRef]:
    port = find_port(ctl, me, str(body["port_id"]))
    if not sees(me, port.mac, tuple(port.ips), as_monitor=True):
        raise NeutronError(403, "PortDoesNotBelongToTenant", "The specified port does not belong to the tenant")
    ref = TaasRef(kind="tap_service", port_id=str(body["port_id"]), **common)
    return service_specs(ref, port.mac), ref


def _new_flow(ctl, me: Principal, body: dict, common: dict) -> tuple[list[TapSpec], TaasRef]:
    if body["direction"] not in DIRECTIONS:
        raise _bad(f"Invalid input for direction. Reason: {body['direction']} is not in valid_values.")
    vlan_filter = body.get("vlan_filter")
    if vlan_filter is not None:
        if not isinstance(vlan_filter, str):
            raise _bad(f"Invalid input for vlan_filter. Reason: '{vlan_filter}' is not a valid input.")
        try:
            parse_vlan_filter(vlan_filter)
        except ValueError as exc:
            raise _bad(f"Invalid input for vlan_filter. Reason: {exc}.") from None
    service = _find(ctl, me, "tap_services", str(body["tap_service_id"]))
    source = find_port(ctl, me, str(body["source_port"]))
    if not sees(me, source.mac, tuple(source.ips)):
        raise NeutronError(403, "PortDoesNotBelongToTenant", "The specified port does not belong to the tenant")
    monitor = service[0].spec.monitor_mac
    if monitor == source.mac:
        raise _bad("Invalid input for source_port. Reason: it is the tap service's own port (copies would loop).")
    ref = TaasRef(kind="tap_flow", tap_service_id=service[0].spec.taas.id, source_port=str(body["source_port"]),
                  direction=body["direction"], vlan_filter=vlan_filter, **common)
    return flow_specs(ref, source.mac, monitor), ref


def _new_mirror(ctl, me: Principal, body: dict, common: dict) -> tuple[list[TapSpec], TaasRef]:
    if body["mirror_type"] not in MIRROR_TYPES:
        raise _bad(f"Invalid input for mirror_type. Reason: {body['mirror_type']} is not in valid_values.")
    try:
        directions = tunnel_ids(body["directions"])
    except ValueError as exc:
        raise _bad(f"Invalid input for directions. Reason: {exc}.") from None
    try:
        remote_ip = normalize_ip(str(body["remote_ip"]))
    except ValueError:
        raise _bad(f"Invalid input for remote_ip. Reason: '{body['remote_ip']}' is not a valid IP address.") from None
    if "/" in remote_ip:
        raise _bad(f"Invalid input for remote_ip. Reason: '{body['remote_ip']}' is not a valid IP address.")
    if body["mirror_type"] == "erspanv1" and any(v > 1023 for v in directions.values()):
        raise _bad("Invalid input for directions. Reason: an ERSPAN session id is 0-1023.")
    for taps in _policies(ctl).values():
        ref = taps[0].spec.taas
        used = set(ref.tunnel_ids.values()) if ref.kind == "tap_mirror" else set()
        for key_id in directions.values():
            if key_id in used:
                raise NeutronError(409, "TapMirrorTunnelConflict", f"Tap Mirror with tunnel_id {key_id} already exists")
    port = find_port(ctl, me, str(body["port_id"]))
    if not sees(me, port.mac, tuple(port.ips)):
        raise NeutronError(403, "PortDoesNotBelongToTenant", "The specified port does not belong to the tenant")
    if me.role != Role.ADMIN and not (me.scope and host_inside(me.scope.monitors, remote_ip)):
        raise NeutronError(403, "HTTPForbidden", f"remote_ip {remote_ip} is outside your scope's monitors")
    ref = TaasRef(kind="tap_mirror", port_id=str(body["port_id"]), directions=directions, remote_ip=remote_ip,
                  mirror_type=body["mirror_type"], **common)
    return mirror_specs(ref, port.mac), ref


async def update(collection: str, rid: str, request: Request, ctl: Ctl, me: Principal) -> dict:
    """Only `name` and `description` change, as in Neutron: on every policy of the resource."""
    body = _body(await _json(request), collection, post=False)
    taps = _find(ctl, me, collection, rid)
    before = taps[0].spec.taas
    after = before.model_copy(update={k: body[k] for k in UPDATABLE if k in body})
    _audit(request, f"{before.kind}.update", rid, before, after)
    each = request.state.audit_each = []
    for tap in taps:
        spec = tap.spec.model_copy(update={"taas": after, "description": tap.spec.description.replace(
            repr(before.name), repr(after.name), 1)})
        new = await ctl.update_tap(tap.id, TapSpec.model_validate(spec.model_dump()))
        each.append(policy_record("tap.update", new.id, tap.spec, new.spec))
    return {RESOURCES[collection][0]: _out(ctl, _find(ctl, me, collection, rid), ctl.switch_syncs())}


async def delete(collection: str, rid: str, request: Request, ctl: Ctl, me: Principal) -> Response:
    """Deleting a tap service deletes its tap flows first, as Neutron does."""
    taps = _find(ctl, me, collection, rid)
    ref = taps[0].spec.taas
    _audit(request, f"{ref.kind}.delete", rid, ref, None)
    if ref.kind == "tap_service":
        flows = [t for ts in _policies(ctl).values() for t in ts if t.spec.taas.tap_service_id == rid]
        taps = flows + taps
    await _remove(request, ctl, taps)
    return Response(status_code=204)


def _errors(*codes: int) -> dict:
    return {code: {"model": NeutronErrorOut, "description": WHY[code]} for code in codes}


WHY = {400: "malformed: the message names the attribute", 404: "no such resource or port in your project",
       409: "a tunnel id is taken", 403: "a port of another project"}
BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}


def _declare(router: APIRouter, collection: str) -> None:
    """The five routes of one collection (its path fixed, so the OpenAPI document names it)."""
    singular = RESOURCES[collection][0]
    one = f"/{collection}/{{rid}}"

    async def list_(ctl: Ctl, me: Principal = Depends(viewer), name: list[str] = Query([]),
                    id: list[str] = Query([])) -> dict:
        return await list_resources(collection, ctl, me, name, id)

    async def show_(rid: str, ctl: Ctl, me: Principal = Depends(viewer)) -> dict:
        return await show(collection, rid, ctl, me)

    async def create_(request: Request, ctl: Ctl, me: Principal = Depends(operator)) -> dict:
        return await create(collection, request, ctl, me)

    async def update_(rid: str, request: Request, ctl: Ctl, me: Principal = Depends(operator)) -> dict:
        return await update(collection, rid, request, ctl, me)

    async def delete_(rid: str, request: Request, ctl: Ctl, me: Principal = Depends(operator)) -> Response:
        return await delete(collection, rid, request, ctl, me)

    router.add_api_route(f"/{collection}", list_, methods=["GET"], summary=f"List {collection}",
                         operation_id=f"list_{collection}")
    router.add_api_route(one, show_, methods=["GET"], summary=f"Show a {singular}", responses=_errors(404),
                         operation_id=f"show_{singular}")
    router.add_api_route(f"/{collection}", create_, methods=["POST"], status_code=201, summary=f"Create a {singular}",
                         responses=_errors(400, 403, 404, 409), openapi_extra=BODY, operation_id=f"create_{singular}")
    router.add_api_route(one, update_, methods=["PUT"], summary=f"Update a {singular}'s name or description",
                         responses=_errors(400, 404), openapi_extra=BODY, operation_id=f"update_{singular}")
    router.add_api_route(one, delete_, methods=["DELETE"], status_code=204, summary=f"Delete a {singular}",
                         responses={204: {"description": "deleted"}, **_errors(404)}, response_class=Response,
                         operation_id=f"delete_{singular}")


router = APIRouter(prefix="/v2.0/taas", tags=["openstack"])
for _collection in RESOURCES:
    _declare(router, _collection)
