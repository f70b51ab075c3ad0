"""`vtap lab`: a topology on a private OVS, pointed at the controller; a CLI or one command."""

from __future__ import annotations

import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from mininet.cli import CLI
from mininet.log import setLogLevel

from vtap.lab.chatter import stop_chatter
from vtap.lab.net import build_net, wait_ready
from vtap.lab.ids import Suricata
from vtap.lab.ovs import PrivateOVS
from vtap.lab.pki import make_pki
from vtap.lab.session import LabSession
from vtap.lab.topos import parse_topo


def run_command(net, command: str) -> int:
    """Run one lab command; its exit status.

    `pingall` / `pingallfull`: 0 only with 0% loss. `HOST CMD...`: the command's own
    status inside that host. Anything else: a Mininet CLI command (status 0).
    """
    words = shlex.split(command)
    if not words:
        return 0
    if words[0] in ("pingall", "pingallfull"):
        setLogLevel("output")
        loss = net.pingAll(timeout="1")
        return 0 if loss == 0 else 1
    if words[0] in net:
        node = net[words[0]]
        proc = node.popen(words[1:], stdout=sys.stdout, stderr=sys.stderr)
        return proc.wait()
    CLI(net, script=None).onecmd(command)
    return 0


def lab(topo_spec: str, controller: str, run: str | None, api: str | None, ready_timeout: float,
        of_tls: str | None = None, chatter: bool = False, join: str | None = None, datapath: str = "netdev",
        ids: list[str] | None = None) -> int:
    """`ids`: hosts to start Suricata on (`vtap.lab.ids`), each reading its interface."""
    topo = parse_topo(topo_spec)
    host, _, port = controller.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--controller must be HOST:PORT, got {controller!r}")
    # SIGTERM (a supervisor, `timeout`) must still tear the lab down: turn it into an exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ovs = PrivateOVS(dpdk=datapath == "dpdk").start()
    ovs.export()
    net = None
    idses: list[Suricata] = []
    try:
        pki = make_pki(of_tls) if of_tls else None
        if pki:
            print(f"vtap lab: OpenFlow over TLS; start the controller with {' '.join(pki.serve_args())}", file=sys.stderr)
        net = build_net(topo, host, int(port), pki=pki, chatter=chatter, join=join, dpdk=datapath == "dpdk")
        print(f"vtap lab: {topo_spec}: {len(net.switches)} switches, {len(net.hosts)} hosts, "
              f"{'OVS-DPDK' if datapath == 'dpdk' else 'OVS'} in {ovs.dir}", file=sys.stderr)
        if not wait_ready(net, api, ready_timeout):
            print("vtap lab: the controller did not report the whole topology in time", file=sys.stderr)
            if run:
                return 2
        for name in ids or ():
            if name not in net:
                raise ValueError(f"--ids {name}: no such host in {topo_spec}")
            suricata = Suricata(net[name], ovs.dir / f"suricata-{name}").start()
            idses.append(suricata)
            print(f"vtap lab: Suricata on {name} ({suricata.interface}); alerts in {suricata.eve}, rules in "
                  f"{suricata.rules}", file=sys.stderr)
        if run:
            return run_command(net, run)
        CLI(net)
        return 0
    finally:
        for suricata in idses:
            suricata.stop()
        if net is not None:
            stop_chatter(net.chatter)
            net.stop()
        ovs.stop()
        ovs.restore_env()


def lab_cluster(topo_spec: str, instances: int, etcd_members: int, run: str | None, ready_timeout: float) -> int:
    """`vtap lab --cluster N`: etcd, N controllers sharing it, and the topology connected
    to all of them, in a temporary directory; all stopped by PID on exit."""
    topo = parse_topo(topo_spec)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="vtap-cluster-"))
    session = LabSession(topo, work, ready_timeout=ready_timeout, cluster=instances, etcd_members=etcd_members)
    try:
        session.start()
        leader = session.leader()
        print(f"vtap lab: {topo_spec}: {len(session.net.switches)} switches, {len(session.net.hosts)} hosts; "
              f"etcd {session.etcd.url}; work dir {work}", file=sys.stderr)
        for i, c in enumerate(session.ctls):
            role = "leader" if c is leader else "follower"
            print(f"  c{i}: API {c.api}, OpenFlow 127.0.0.1:{c.of_port}, {role}, log {c.log_path}", file=sys.stderr)
        print(f"  admin token (valid at every instance): {session.ctl.state_dir / 'admin.token'}", file=sys.stderr)
        if run:
            return run_command(session.net, run)
        CLI(session.net)
        return 0
    finally:
        session.close()
        shutil.rmtree(work, ignore_errors=True)
