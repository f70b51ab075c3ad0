"""`vtap lab`: a topology on a private OVS, pointed at the controller; a CLI or one command."""

from __future__ import annotations

import shlex
import signal
import sys

from mininet.cli import CLI
from mininet.log import setLogLevel

from vtap.lab.net import build_net, wait_ready
from vtap.lab.ovs import PrivateOVS
from vtap.lab.pki import make_pki
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
        of_tls: str | None = None) -> int:
    topo = parse_topo(topo_spec)
    host, _, port = controller.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--controller must be HOST:PORT, got {controller!r}")
    # SIGTERM (a supervisor, `timeout`) must still tear the lab down: turn it into an exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ovs = PrivateOVS().start()
    ovs.export()
    net = None
    try:
        pki = make_pki(of_tls) if of_tls else None
        if pki:
            print(f"vtap lab: OpenFlow over TLS; start the controller with {' '.join(pki.serve_args())}", file=sys.stderr)
        net = build_net(topo, host, int(port), pki=pki)
        print(f"vtap lab: {topo_spec}: {len(net.switches)} switches, {len(net.hosts)} hosts, OVS in {ovs.dir}", file=sys.stderr)
        if not wait_ready(net, api, ready_timeout):
            print("vtap lab: the controller did not report the whole topology in time", file=sys.stderr)
            if run:
                return 2
        if run:
            return run_command(net, run)
        CLI(net)
        return 0
    finally:
        if net is not None:
            net.stop()
        ovs.stop()
        ovs.restore_env()
