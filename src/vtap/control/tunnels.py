"""The tunnel agent: gives the switches what their userspace datapath needs to start
vtap's tunnels, from compile/tunnels.py's plan, whenever it changes.

OpenFlow cannot make ports, addresses or routes. Two ways:
- `vtap serve --tunnels local`, for switches run by the Open vSwitch of the controller's
  own machine (a lab, or a controller beside its hypervisor's switch), with OVS's own
  tools, as an operator would: `ovs-vsctl` adds the tunnel ports
  (`control/tunnel_ports.py`); `ip` gives the bridge's (LOCAL) device its source address;
  `ovs-appctl ovs/route/add` a route per collector out of the switch's own bridge,
  selected by the switch's packet mark (the bridges of one ovs-vswitchd share one
  routing table); `ovs-appctl tnl/neigh/set` the next hop's MAC for the collector's
  address (the collector's own, or the gateway's): the controller knows every host's.
- `vtap serve --tunnels ovsdb --ovsdb [DPID=]tcp:HOST:6640`, for switches anywhere: the
  ports over the switch's OVSDB (ovsdbapp). The address, routes and neighbours are not
  OVSDB's to hold: they are the node's step, which `steps()` spells out per switch
  (`GET /api/v1/tunnels`, and the log) for its operator to run.
Ports exist while some enabled tunnel policy does; the last one gone, they are removed.
A step that fails is logged and retried with the next plan; nothing else waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from typing import Callable

from vtap.compile.tunnels import SwitchTunnels
from vtap.control.tunnel_ports import KINDS, PortError, TunnelPorts, VsctlPorts

log = logging.getLogger(__name__)

class TunnelAgent:
    def __init__(self, ports: TunnelPorts | None = None, *, local_routes: bool = True) -> None:
        self.ports = ports or VsctlPorts()
        self.local_routes = local_routes  # False: addresses, routes and neighbours are the node's step
        self.applied: dict[int, SwitchTunnels] = {}  # what each switch in the plan has, as far as known
        self.made: dict[int, SwitchTunnels] = {}  # every switch given ports (and routes), away or not
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
        """The switches among `switches` without a route to `collector` applied yet (over
        OVSDB, without their ports yet: the route is the node's, and not seen from here)."""
        if not self.local_routes:
            return [d for d in switches if d in self._plan and d not in self.applied]
        return [d for d in switches
                if d in self._plan and not any(ip == collector for ip, _ in self.applied.get(d, _NONE).neighbours)]

    def plan(self) -> dict[int, SwitchTunnels]:
        """The latest plan: what every switch's tunnels need now."""
        return dict(self._plan)

    def making_ports(self) -> bool:
        """Whether some switch of the plan has not had its tunnel ports made yet."""
        return any(self.applied.get(d, _NONE).bridge != want.bridge for d, want in self._plan.items())

    def steps(self, dpid: int) -> list[str]:
        """What the switch's node must hold for its tunnels beyond the ports: its bridge's
        address, and per collector a route out of the bridge and the next hop's MAC."""
        want = self._plan.get(dpid)
        if want is None:
            return []
        out = [f"ip addr replace {want.source} dev {want.bridge}", f"ip link set {want.bridge} up"]
        for ip, mac in sorted(want.neighbours):
            out += [f"ovs-appctl ovs/route/add {_host_prefix(ip)} {want.bridge} pkt_mark={want.mark}",
                    f"ovs-appctl tnl/neigh/set {want.bridge} {ip} {mac}"]
        return out

    def want(self, plan: dict[int, SwitchTunnels]) -> None:
        """The latest plan (from every compile); applied in the background, differences only."""
        self._plan = plan
        self._due.set()

    async def _loop(self) -> None:
        while True:
            await self._due.wait()
            self._due.clear()
            plan = dict(self._plan)
            if not plan:  # no tunnel policy left: the ports go, from every switch they were made on
                for dpid, have in list(self.made.items()):
                    await self._step(dpid, "removal", self._remove, dpid, have)
            for dpid in [d for d in self.applied if d not in plan]:
                del self.applied[dpid]  # a switch away (its connection cut, or gone): checked anew on its return
            for dpid, want in plan.items():
                if self.applied.get(dpid) != want:
                    if await self._step(dpid, "set-up", self._apply, dpid, want, self.applied.get(dpid)):
                        self.applied[dpid] = self.made[dpid] = want
                        if not self.local_routes:
                            log.info("switch %016x: tunnel ports made over OVSDB; on its node: %s", dpid,
                                     "; ".join(self.steps(dpid)))
            self.on_applied()

    async def _step(self, dpid: int, what: str, fn, *args) -> bool:
        try:
            await asyncio.to_thread(fn, *args)
            return True
        except (OSError, subprocess.SubprocessError, PortError) as exc:
            self.errors += 1
            log.error("switch %016x: tunnel %s failed (retried with the next change): %s", dpid, what, exc)
            return False

    def _remove(self, dpid: int, have: SwitchTunnels) -> None:
        self.ports.remove(dpid, have.bridge, tuple(KINDS))
        if self.local_routes:
            for ip, _ in have.neighbours:
                self._run("ovs-appctl", "ovs/route/del", _host_prefix(ip), f"pkt_mark={have.mark}")
        del self.made[dpid]

    @staticmethod
    def _run(*args: str) -> str:
        res = subprocess.run(args, capture_output=True, text=True, timeout=10)
        if res.returncode:
            raise subprocess.SubprocessError(f"{' '.join(args)}: {(res.stderr or res.stdout).strip()[:300]}")
        return res.stdout

    def _apply(self, dpid: int, want: SwitchTunnels, have: SwitchTunnels | None) -> None:
        br = want.bridge
        if have is None or have.bridge != br:
            self.ports.add(dpid, br, tuple(KINDS))
        if not self.local_routes:
            return
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


_NONE = SwitchTunnels("", "", 0, frozenset())


def _host_prefix(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"
