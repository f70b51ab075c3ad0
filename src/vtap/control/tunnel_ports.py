"""A switch's tunnel ports, made and removed two ways: `ovs-vsctl` on this machine
(`vtap serve --tunnels local`, the lab's shortcut), or over OVSDB to the switch's own
ovsdb-server, local or on a compute node (`--tunnels ovsdb --ovsdb [DPID=]tcp:HOST:6640`),
through ovsdbapp, as Neutron's agents and OVN reach theirs.

Each port is flow-based on the transmit side (`remote_ip=flow`, `out_key=flow`: the tap
group's bucket sets collector and key) and gets a receive key of its own (`in_key`):
OVS refuses two tunnel ports of one type whose receive side is the same (`File exists`),
across the bridges of one ovs-vswitchd and between ERSPAN v1 and v2 on one bridge; vtap
never receives on them. Blocking calls: the agent runs them in a thread.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
import zlib
from typing import Protocol

log = logging.getLogger(__name__)

# kind -> (Interface type, its options)
KINDS: dict[str, tuple[str, dict[str, str]]] = {
    "gre": ("gre", {}),
    "erspan1": ("erspan", {"erspan_ver": "1", "erspan_idx": "1"}),
    "erspan2": ("erspan", {"erspan_ver": "2", "erspan_dir": "0", "erspan_hwid": "1"}),
    "vxlan": ("vxlan", {}),
    "geneve": ("geneve", {}),
}
IN_KEY_SPACE = {"erspan1": 1 << 10, "erspan2": 1 << 10, "vxlan": 1 << 24, "geneve": 1 << 24, "gre": 1 << 32}
ATTEMPTS = 4  # receive keys tried per port before giving up
OFPORT_WAIT_S = 3.0  # for ovs-vswitchd to take a new Interface row


class PortError(RuntimeError):
    """A tunnel port could not be made or removed; the message says where and why."""


def in_key(port: str, kind: str, attempt: int = 0) -> int:
    """A receive key for a tunnel port, from its name (another on a clash)."""
    return 1 + zlib.crc32(f"{port}/{attempt}".encode()) % (IN_KEY_SPACE[kind] - 1)


def options(name: str, kind: str, attempt: int) -> dict[str, str]:
    return {**KINDS[kind][1], "remote_ip": "flow", "out_key": "flow", "in_key": str(in_key(name, kind, attempt))}


class TunnelPorts(Protocol):
    def add(self, dpid: int, bridge: str, kinds: tuple[str, ...]) -> None:
        """Make `<bridge>-<kind>` for each kind (those there and working are left); PortError."""

    def remove(self, dpid: int, bridge: str, kinds: tuple[str, ...]) -> None:
        """Remove `<bridge>-<kind>` for each kind (nothing for those not there); PortError."""


def _usable(ofport) -> bool:
    return isinstance(ofport, int) and ofport > 0


class VsctlPorts:
    """ovs-vsctl on this machine (its default database): all of a bridge's ports in one
    transaction, a port OVS refused retried alone with other receive keys."""

    @staticmethod
    def _run(*args: str) -> str:
        res = subprocess.run(["ovs-vsctl", *args], capture_output=True, text=True, timeout=10)
        if res.returncode:
            raise PortError(f"ovs-vsctl {' '.join(args)}: {(res.stderr or res.stdout).strip()[:300]}")
        return res.stdout

    def _ofports(self) -> dict[str, object]:
        data = json.loads(self._run("--format=json", "--columns=name,ofport", "find", "interface"))["data"]
        return {name: ofport for name, ofport in data}

    @staticmethod
    def _add_args(bridge: str, kind: str, attempt: int) -> list[str]:
        name = f"{bridge}-{kind}"
        return ["--", "--may-exist", "add-port", bridge, name, "--", "set", "interface", name, f"type={KINDS[kind][0]}",
                *(f"options:{k}={v}" for k, v in options(name, kind, attempt).items())]

    def add(self, dpid: int, bridge: str, kinds: tuple[str, ...]) -> None:
        missing = [k for k in kinds if not _usable(self._ofports().get(f"{bridge}-{k}"))]
        if not missing:
            return
        try:
            self._run(*(arg for k in missing for arg in self._add_args(bridge, k, 0)))
        except PortError as exc:
            log.info("%s: %s; each port alone", bridge, exc)
        have = self._ofports()
        for kind in [k for k in missing if not _usable(have.get(f"{bridge}-{k}"))]:
            self._add_alone(bridge, kind)

    def _add_alone(self, bridge: str, kind: str) -> None:
        name = f"{bridge}-{kind}"
        for attempt in range(ATTEMPTS):  # another receive key when this one is taken ("File exists")
            self._run("--if-exists", "del-port", bridge, name)
            try:
                self._run(*self._add_args(bridge, kind, attempt))
            except PortError as exc:
                log.info("%s: %s; trying another receive key", name, exc)
            if _usable(self._ofports().get(name)):
                return
        self._run("--if-exists", "del-port", bridge, name)
        raise PortError(f"{name}: OVS refused the tunnel port (see ovs-vswitchd's log)")

    def remove(self, dpid: int, bridge: str, kinds: tuple[str, ...]) -> None:
        self._run(*(arg for k in kinds for arg in ("--", "--if-exists", "del-port", bridge, f"{bridge}-{k}")))


def parse_targets(values: list[str]) -> dict[int | None, str]:
    """`--ovsdb` values, `[DPID=]tcp:HOST:PORT` or `ssl:…`: the OVSDB of each switch by
    dpid (None: every other switch's); ValueError naming the bad value."""
    out: dict[int | None, str] = {}
    for value in values:
        dpid_text, sep, target = value.rpartition("=") if "=" in value else ("", "", value)
        if not target.startswith(("tcp:", "ssl:", "unix:")) or target.count(":") < 1:
            raise ValueError(f"--ovsdb {value!r}: give [DPID=]tcp:HOST:PORT, ssl:HOST:PORT or unix:PATH")
        try:
            dpid = int(dpid_text, 16) if sep else None
        except ValueError:
            raise ValueError(f"--ovsdb {value!r}: {dpid_text!r} is not a datapath id (16 hex digits)") from None
        if dpid in out:
            raise ValueError(f"--ovsdb {value!r}: {'that switch' if sep else 'the default'} is given twice")
        out[dpid] = target
    return out


class OvsdbPorts:
    """The switches' own OVSDB servers, through ovsdbapp: one connection per server."""

    def __init__(self, targets: dict[int | None, str], ssl: tuple[str | None, str | None, str | None] = (None, None, None)):
        self.targets = targets
        self.ssl = ssl
        self._apis: dict[str, object] = {}

    def target(self, dpid: int) -> str:
        target = self.targets.get(dpid, self.targets.get(None))
        if target is None:
            raise PortError(f"switch {dpid:016x}: no OVSDB given for it (--ovsdb {dpid:016x}=tcp:HOST:6640)")
        return target

    def _api(self, dpid: int):
        target = self.target(dpid)
        api = self._apis.get(target)
        if api is None:
            from ovs.stream import Stream
            from ovsdbapp.backend.ovs_idl import connection
            from ovsdbapp.schema.open_vswitch import impl_idl

            key, cert, ca = self.ssl
            if target.startswith("ssl:"):
                if not (key and cert and ca):
                    raise PortError(f"{target}: ssl needs --ovsdb-key, --ovsdb-cert and --ovsdb-ca")
                Stream.ssl_set_private_key_file(key)
                Stream.ssl_set_certificate_file(cert)
                Stream.ssl_set_ca_cert_file(ca)
            try:
                idl = connection.OvsdbIdl.from_server(target, "Open_vSwitch")
                api = impl_idl.OvsdbIdl(connection.Connection(idl=idl, timeout=10))
            except Exception as exc:  # ovsdbapp raises its own kinds for an unreachable server
                raise PortError(f"{target}: cannot reach the switch's OVSDB: {exc}") from exc
            self._apis[target] = api
        return api

    def _ofports(self, api, names: list[str]) -> dict[str, int | None]:
        wanted = set(names)
        rows = api.db_find("Interface", columns=["name", "ofport"]).execute(check_error=True) if names else []
        out: dict[str, int | None] = {}
        for row in (r for r in rows if r["name"] in wanted):
            ofport = row["ofport"]
            out[row["name"]] = ofport[0] if isinstance(ofport, list) and ofport else (ofport if isinstance(ofport, int) else None)
        return out

    def _settled(self, api, names: list[str]) -> dict[str, int | None]:
        """The ports' numbers once ovs-vswitchd has taken them all (or refused: -1), or at the wait's end."""
        deadline = time.monotonic() + OFPORT_WAIT_S
        while True:
            got = self._ofports(api, names)
            if all(got.get(n) not in (None, 0) for n in names) or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def _put(self, api, bridge: str, kinds: list[str], attempt: int) -> None:
        with api.transaction(check_error=True) as txn:
            for kind in kinds:
                name = f"{bridge}-{kind}"
                txn.add(api.add_port(bridge, name, may_exist=True))
                txn.add(api.db_set("Interface", name, ("type", KINDS[kind][0]), ("options", options(name, kind, attempt))))

    def add(self, dpid: int, bridge: str, kinds: tuple[str, ...]) -> None:
        api = self._api(dpid)
        try:
            have = self._ofports(api, [f"{bridge}-{k}" for k in kinds])
            missing = [k for k in kinds if not _usable(have.get(f"{bridge}-{k}"))]
            for attempt in range(ATTEMPTS):  # the refused ones again, with other receive keys
                if not missing:
                    return
                if attempt:
                    for kind in missing:
                        api.del_port(f"{bridge}-{kind}", bridge=bridge, if_exists=True).execute(check_error=True)
                self._put(api, bridge, missing, attempt)
                got = self._settled(api, [f"{bridge}-{k}" for k in missing])
                missing = [k for k in missing if not _usable(got.get(f"{bridge}-{k}"))]
        except PortError:
            raise
        except Exception as exc:
            raise PortError(f"{self.target(dpid)}: {bridge}: {exc}") from exc
        raise PortError(f"{bridge}: OVS refused the tunnel ports {', '.join(missing)} (see ovs-vswitchd's log)")

    def remove(self, dpid: int, bridge: str, kinds: tuple[str, ...]) -> None:
        api = self._api(dpid)
        try:
            with api.transaction(check_error=True) as txn:
                for kind in kinds:
                    txn.add(api.del_port(f"{bridge}-{kind}", bridge=bridge, if_exists=True))
        except Exception as exc:
            raise PortError(f"{self.target(dpid)}: {bridge}: {exc}") from exc
