"""Faults done to a running lab, each with its undoing: what the chaos soak strikes
with (`vtap.bench.chaos_plan` names them). Each is what happens to a real network:

- `link`: an inter-switch link goes down (both ends, as a cut cable), then up;
- `ofcut`: a switch loses its controllers (their rows removed in OVSDB, so the
  connection closes), then gets them back;
- `switch`: a switch restarts: its bridge deleted and made again, with the same ports
  and datapath id but empty tables;
- `controller`: the one controller stopped (SIGTERM) and started again on its state;
- `member_kill`: a cluster member killed with SIGKILL, then started again;
- `member_pause`: a cluster member stopped with SIGSTOP, then continued;
- `etcd_stop`: one etcd member stopped, then started again on its data.

`strike(lab, fault)` does it and returns the undoing, a function of no arguments.
"""

from __future__ import annotations

import signal
import subprocess
from typing import Callable

from vtap.lab.net import attach
from vtap.lab.session import LabSession


def switch_links(lab: LabSession) -> list[str]:
    """The inter-switch links, as "s1-s5" (the names the schedule draws from)."""
    names = {sw.name for sw in lab.net.switches}
    return sorted(f"{l.intf1.node.name}-{l.intf2.node.name}" for l in lab.net.links
                  if l.intf1.node.name in names and l.intf2.node.name in names)


def strike(lab: LabSession, kind: str, target: str) -> Callable[[], None]:
    return _KINDS[kind](lab, target)


def _link(lab: LabSession, target: str) -> Callable[[], None]:
    a, b = target.split("-")
    lab.net.configLinkStatus(a, b, "down")
    return lambda: lab.net.configLinkStatus(a, b, "up")


def _ofcut(lab: LabSession, target: str) -> Callable[[], None]:
    subprocess.run(["ovs-vsctl", "del-controller", target], check=True)
    sw = lab.net[target]
    return lambda: attach([sw], lab.net.controller_targets, None)


def _switch(lab: LabSession, target: str) -> Callable[[], None]:
    sw = lab.net[target]
    sw.stop(deleteIntfs=False)  # ovs-vsctl del-br: the bridge, its ports' bindings and its tables gone

    def again() -> None:
        sw.start([])  # the same bridge, ports (ofport_request) and datapath id, no controller yet
        attach([sw], lab.net.controller_targets, None)
    return again


def _controller(lab: LabSession, target: str) -> Callable[[], None]:
    lab.ctl.stop()
    return lambda: lab.ctl.start(token=lab.ctl.token)


def _member(lab: LabSession, target: str):
    """The instance a fault names: `leader` (whichever leads when it strikes), `follower`
    (one that does not), or one by name (`c1`)."""
    if target == "leader":
        return lab.leader()
    if target == "follower":
        leader = lab.leader()
        return next(c for c in lab.ctls if c is not leader and c.proc is not None and c.proc.poll() is None)
    return lab.ctls[int(target.lstrip("c"))]


def _member_kill(lab: LabSession, target: str) -> Callable[[], None]:
    member = _member(lab, target)
    member.proc.send_signal(signal.SIGKILL)
    member.proc.wait()
    return lambda: member.start(token=member.token)


def _member_pause(lab: LabSession, target: str) -> Callable[[], None]:
    member = _member(lab, target)
    member.proc.send_signal(signal.SIGSTOP)
    return lambda: member.proc.send_signal(signal.SIGCONT)


def _etcd_stop(lab: LabSession, target: str) -> Callable[[], None]:
    lab.etcd.stop_member(target)
    return lambda: lab.etcd.start_member(target)


_KINDS = {"link": _link, "ofcut": _ofcut, "switch": _switch, "controller": _controller,
          "member_kill": _member_kill, "member_pause": _member_pause, "etcd_stop": _etcd_stop}
