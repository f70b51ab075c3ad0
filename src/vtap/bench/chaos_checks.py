"""The chaos soak's checks once a round's faults are undone: has the network settled,
do the switches' tables equal the compile, does the audit chain verify.

Settled means what an operator would call it: every switch connected and in sync,
every inter-switch link known, every port's role known, every policy `active`, and no
switch holding a rule the compile does not want or lacking one it does. The tables are
read twice, independently: by the controller over OpenFlow (`GET
/api/v1/devices/{dpid}/drift`, a fresh read-back diffed against the desired rules), and
by `ovs-ofctl`, whose counts of vtap's flows, groups and meters must equal the desired
counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from vtap.compile.pipeline import VTAP_COOKIE, VTAP_COOKIE_MASK, is_vtap_group, is_vtap_meter
from vtap.lab.net import expected_links
from vtap.lab.session import LabSession
from vtap.model import audit

SETTLE_S = 60.0  # beyond it, the round's network did not settle: a violation


@dataclass
class Settled:
    ok: bool
    at: float  # monotonic
    problems: list[str] = field(default_factory=list)
    waited_for: str = ""  # the last thing that kept it from settling: what the settle time was spent on


def _unsettled(lab: LabSession, policies: int) -> list[str]:
    """What keeps the network from being settled now (empty: settled)."""
    try:
        http = lab.leader(timeout=5).http
        health = http.get("/api/v1/health", timeout=5).json()
        taps = http.get("/api/v1/taps", timeout=5).json()
    except (httpx.HTTPError, ValueError, RuntimeError) as exc:
        return [f"the controller does not answer: {exc}"]
    n, links = len(lab.net.switches), len(expected_links(lab.net))
    problems = []
    if health["switches"] != n or health["switches_in_sync"] != n:
        problems.append(f"{health['switches']} of {n} switches connected, {health['switches_in_sync']} in sync")
    if health["links"] != links or health["ports_unknown"]:
        problems.append(f"{health['links']} of {links} links known, {health['ports_unknown']} ports unknown")
    if len(taps) != policies:
        problems.append(f"{len(taps)} policies, {policies} expected")
    problems += [f"policy {t['name']} {t['status']}: {t['status_reason']}" for t in taps if t["status"] != "active"]
    return problems or drift(lab)


def wait_settled(lab: LabSession, policies: int, timeout: float = SETTLE_S) -> Settled:
    deadline = time.monotonic() + timeout
    waited = ""
    while True:
        problems = _unsettled(lab, policies)
        if not problems:
            return Settled(True, time.monotonic(), waited_for=waited)
        waited = problems[0]
        if time.monotonic() > deadline:
            return Settled(False, time.monotonic(), [f"not settled in {timeout:g} s: " + "; ".join(problems[:5])], waited)
        time.sleep(0.2)


def _drifts(lab: LabSession) -> dict[str, dict | int]:
    """Each switch's `GET /api/v1/devices/{dpid}/drift`: its JSON, or the status code
    when it could not be read."""
    http = lab.leader(timeout=5).http
    out: dict[str, dict | int] = {}
    for sw in lab.net.switches:
        got = http.get(f"/api/v1/devices/{sw.dpid}/drift", timeout=10)
        out[sw.name] = got.json() if got.status_code == 200 else got.status_code
    return out


def _drift_problems(drifts: dict[str, dict | int]) -> list[str]:
    out = []
    for name, d in drifts.items():
        if isinstance(d, int):
            out.append(f"{name}: drift not read ({d})")
        elif d["missing"] or d["extra"]:
            out.append(f"{name}: {d['missing']} rules missing, {d['extra']} not compiled (e.g. {d['examples'][:2]})")
    return out


def drift(lab: LabSession) -> list[str]:
    """Switches whose tables differ from the compile, as the controller reads them back."""
    return _drift_problems(_drifts(lab))


def ofctl_counts(lab: LabSession, switch: str) -> dict[str, int]:
    """vtap's flows, groups and meters in a switch, as ovs-ofctl counts them."""
    cookie = f"cookie=0x{VTAP_COOKIE:x}/0x{VTAP_COOKIE_MASK:x}"
    flows = [l for l in lab.ovs.ofctl("--no-stats", "dump-flows", switch, cookie).splitlines() if "cookie=" in l]
    groups = [l for l in lab.ovs.ofctl("dump-groups", switch).splitlines()
              if "group_id=" in l and is_vtap_group(int(l.split("group_id=")[1].split(",")[0]))]
    meters = [l for l in lab.ovs.ofctl("dump-meters", switch).splitlines()
              if l.startswith("meter=") and is_vtap_meter(int(l.split("=")[1].split()[0]))]
    return {"flows": len(flows), "groups": len(groups), "meters": len(meters)}


def check_tables(lab: LabSession) -> list[str]:
    """Violations: tables that differ from the compile, read both ways (one read-back)."""
    drifts = _drifts(lab)
    out = _drift_problems(drifts)
    for sw in lab.net.switches:
        d = drifts[sw.name]
        got = ofctl_counts(lab, sw.name)
        if isinstance(d, dict) and got != d["desired"]:
            out.append(f"{sw.name}: ovs-ofctl counts {got}, the compile wants {d['desired']}")
    return out


def check_audit(http: httpx.Client) -> list[str]:
    records, since = [], 0
    while True:
        page = http.get("/api/v1/audit", params={"since": since, "limit": 10000}, timeout=30).json()
        records += page
        if len(page) < 10000:
            break
        since = page[-1]["seq"]
    intact, seq, why = audit.verify(records)
    return [] if intact else [f"the audit chain is broken at record {seq}: {why}"]
