"""`make demo`: a fat-tree on a private Open vSwitch, run by the vtap controller.

Starts a private OVS and `vtap serve`, builds `fattree,4` (20 switches, 16 hosts) with
Mininet, waits until the controller has discovered every link, then pings every host
from every other, prints what the controller sees, and cleans everything up.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from mininet.log import setLogLevel

from vtap.cli import main as vtap_main
from vtap.lab.net import build_net, expected_links, wait_ready
from vtap.lab.ovs import PrivateOVS
from vtap.lab.process import ControllerProcess
from vtap.lab.topos import parse_topo


def run(topo_spec: str = "fattree,4") -> int:
    work = Path(tempfile.mkdtemp(prefix="vtap-demo-"))
    print(f"== vtap demo: {topo_spec} on a private userspace Open vSwitch (work dir {work})")
    ovs = PrivateOVS(work / "ovs").start()
    ovs.export()
    ctl = ControllerProcess(work / "state", work / "controller.log")
    net = None
    try:
        ctl.start()
        print(f"== controller: OpenFlow 1.3 on 127.0.0.1:{ctl.of_port}, REST API on {ctl.api} (OpenAPI at {ctl.api}/docs)")
        t0 = time.monotonic()
        net = build_net(parse_topo(topo_spec), "127.0.0.1", ctl.of_port)
        t_built = time.monotonic()
        if not wait_ready(net, ctl.api, timeout=90):
            print(f"!! the controller did not discover the topology in time; see {ctl.log_path}")
            return 1
        t_ready = time.monotonic()
        print(f"== {len(net.switches)} switches, {len(net.hosts)} hosts, {len(expected_links(net)) // 2} inter-switch links: "
              f"built in {t_built - t0:.1f}s, discovered and in sync {t_ready - t_built:.1f}s later")
        setLogLevel("output")
        loss = net.pingAll(timeout="1")
        setLogLevel("warning")
        print()
        vtap_main(["topo", "--api", ctl.api])
        print(f"\n== pingall: {loss:.0f}% loss")
        return 0 if loss == 0 else 1
    finally:
        if net is not None:
            net.stop()
        if ctl.proc is not None:
            ctl.stop()
        ovs.stop()
        ovs.restore_env()
        print("== cleaned up: Mininet hosts, switches, OVS and controller stopped")


if __name__ == "__main__":
    sys.exit(run(*sys.argv[1:]))
