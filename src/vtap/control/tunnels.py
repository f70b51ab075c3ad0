"""The tunnel agent: gives the switches on this machine what their userspace datapath needs
to start vtap's tunnels (`vtap serve --tunnels local`).

OpenFlow cannot make ports, addresses or routes, so for switches run by the Open vSwitch
of the controller's own machine (a lab, or a controller beside its hypervisor's switch)
this applies compile/tunnels.py's plan with OVS's own tools, as an operator would:
- `ovs-vsctl` adds the tunnel ports, transmit-side flow-based (`remote_ip=flow`,
  `out_key=flow`: the bucket sets collector and key); each gets a receive key of its own
  (`in_key`), because OVS refuses two tunnel ports of one type whose receive side is the
  same (`File exists`) — across the bridges of one ovs-vswitchd, and between ERSPAN v1
  and v2 on one bridge — and vtap never receives on them;
- `ip` gives the bridge's (LOCAL) device its source address;
- `ovs-appctl ovs/route/add` a route per collector out of the switch's own bridge,
  selected by the switch's packet mark (the bridges of one ovs-vswitchd share one
  routing table);
- `ovs-appctl tnl/neigh/set` the next hop's MAC for the collector's address (the
  collector's own, or the gateway's): the controller knows every host's.
A step that fails is logged and retried with the next plan; nothing else waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import zlib
from typing import Callable

from vtap.compile.tunnels import SwitchTunnels

log = logging.getLogger(__name__)

PORT_OPTIONS = {
    "gre": ["type=gre"],
    "erspan1": ["type=erspan", "options:erspan_ver=1", "options:erspan_idx=1"],
    "erspan2": ["type=erspan", "options:erspan_ver=2", "options:erspan_dir=0", "options:erspan_hwid=1"],
    "vxlan": ["type=vxlan"],
    "geneve": ["type=geneve"],
}
IN_KEY_SPACE = {"erspan1": 1 << 10, "erspan2": 1 << 10, "vxlan": 1 << 24, "geneve": 1 << 24, "gre": 1 << 32}


def in_key(port: str, kind: str, attempt: int = 0) -> int:
    """A receive key for a tunnel port, from its name (another on a clash)."""
    return 1 + zlib.crc32(f"{port}/{attempt}".encode()) % (IN_KEY_SPACE[kind] - 1)


class TunnelAgent:
    def __init__(self) -> None:
        self.applied: dict[int, SwitchTunnels] = {}
        self._plan: dict[int, SwitchTunnels] = {}
        self._due = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.errors = 0
        self.on_applied: Callable[[], None] = lambda: None  # told after each plan is applied (policy states may change)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="tunnel-agent")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def waiting(self, switches, collector: str) -> list[int]:
        """The switches among `switches` without a route to `collector` applied yet."""
        return [d for d in switches
                if d in self._plan and not any(ip == collector for ip, _ in self.applied.get(d, _NONE).neighbours)]

    def want(self, plan: dict[int, SwitchTunnels]) -> None:
        """The latest plan (from every compile); applied in the background, differences only."""
        self._plan = plan
        self._due.set()

    async def _loop(self) -> None:
        while True:
            await self._due.wait()
            self._due.clear()
            for dpid, want in list(self._plan.items()):
                if self.applied.get(dpid) != want:
                    try:
                        await asyncio.to_thread(self._apply, want, self.applied.get(dpid))
                        self.applied[dpid] = want
                    except (OSError, subprocess.SubprocessError) as exc:
                        self.errors += 1
                        log.error("switch %016x: tunnel set-up failed (retried with the next change): %s", dpid, exc)
            self.on_applied()

    @staticmethod
    def _run(*args: str) -> str:
        res = subprocess.run(args, capture_output=True, text=True, timeout=10)
        if res.returncode:
            raise subprocess.SubprocessError(f"{' '.join(args)}: {(res.stderr or res.stdout).strip()[:300]}")
        return res.stdout

    def _apply(self, want: SwitchTunnels, have: SwitchTunnels | None) -> None:
        br = want.bridge
        if have is None or have.bridge != br:
            for kind, options in PORT_OPTIONS.items():
                self._add_port(br, kind, options)
        if have is None or have.source != want.source:
            self._run("sysctl", "-qw", f"net.ipv6.conf.{br}.disable_ipv6=1")  # no autoconfiguration chatter from LOCAL
            self._run("ip", "addr", "replace", want.source, "dev", br)
            self._run("ip", "link", "set", br, "up")
        old = have.neighbours if have is not None and have.mark == want.mark else frozenset()
        routes = self._run("ovs-appctl", "ovs/route/show")
        for ip, _ in old - want.neighbours:
            self._run("ovs-appctl", "ovs/route/del", _host_prefix(ip), f"pkt_mark={want.mark}")
        for ip, mac in want.neighbours - old:
            if f"{_host_prefix(ip)} MARK {want.mark} " not in routes:
                self._run("ovs-appctl", "ovs/route/add", _host_prefix(ip), br, f"pkt_mark={want.mark}")
            self._run("ovs-appctl", "tnl/neigh/set", br, ip, mac)

    def _add_port(self, br: str, kind: str, options: list[str]) -> None:
        name = f"{br}-{kind}"
        existing = subprocess.run(["ovs-vsctl", "--if-exists", "get", "interface", name, "ofport"],
                                  capture_output=True, text=True, timeout=10).stdout.strip()
        if existing and existing not in ("-1", "[]"):
            return
        for attempt in range(4):  # another receive key when this one is taken ("File exists")
            try:
                self._run("ovs-vsctl", "--", "--may-exist", "add-port", br, name, "--", "set", "interface", name,
                          *options, "options:remote_ip=flow", "options:out_key=flow",
                          f"options:in_key={in_key(name, kind, attempt)}")
            except subprocess.SubprocessError as exc:
                log.info("%s: %s; trying another receive key", name, exc)
            ofport = self._run("ovs-vsctl", "get", "interface", name, "ofport").strip()
            if ofport not in ("-1", "[]"):
                return
            self._run("ovs-vsctl", "--if-exists", "del-port", br, name)
        raise subprocess.SubprocessError(f"{name}: OVS refused the tunnel port (see ovs-vswitchd's log)")


_NONE = SwitchTunnels("", "", 0, frozenset())


def _host_prefix(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"
