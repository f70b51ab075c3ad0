"""The lab on OVS-DPDK, the seed's own datapath: Debian's `ovs-vswitchd-dpdk` (package
openvswitch-switch-dpdk, OVS 3.1 on DPDK 22.11), run by its full path beside the plain
`ovs-vswitchd` (which stays the system's default), on 2 MB hugepages the lab reserves
and gives back.

Each switch port is a DPDK port (`type=dpdk`) whose device is DPDK's AF_PACKET driver
on the lab's veth (`dpdk-devargs=net_af_packetN,iface=VETH`): the port is polled by a
PMD thread, not served by the main thread as a `type=system` port on a DPDK bridge
would be. On this 2-core machine the PMD thread gets core 1 (`pmd-cpu-mask=0x2`) and
the main thread keeps core 0; `--no-pci` because there is no NIC to bind. OVS 3.1
appends `--in-memory` to DPDK's arguments, which DPDK 22.11 refuses with `--no-huge`:
hence real hugepages.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

VSWITCHD = Path("/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk")
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
HUGEPAGES = 512  # 2 MB pages: 1 GiB, DPDK's mempools for a few dozen ports
PMD_CPU_MASK = "0x2"
INIT_S = 60.0  # DPDK's start (EAL, hugepage mapping) takes seconds; on a loaded machine more


class DpdkUnavailable(RuntimeError):
    """OVS-DPDK cannot start here; the message says what is missing, with the evidence."""


class Hugepages:
    """`vm.nr_hugepages` raised to at least `pages` for the lab, and set back after."""

    def __init__(self, pages: int = HUGEPAGES):
        self.pages = pages
        self.before: int | None = None

    def reserve(self) -> Hugepages:
        self.before = int(NR_HUGEPAGES.read_text())
        if self.before < self.pages:
            NR_HUGEPAGES.write_text(str(self.pages))
        got = int(NR_HUGEPAGES.read_text())
        if got < self.pages:
            self.release()
            raise DpdkUnavailable(f"the kernel granted {got} of {self.pages} 2 MB hugepages (vm.nr_hugepages; "
                                  f"free memory fragmented?); DPDK needs them")
        return self

    def release(self) -> None:
        if self.before is not None:
            NR_HUGEPAGES.write_text(str(self.before))
            self.before = None


def check_installed() -> None:
    """DpdkUnavailable naming the package that is missing."""
    if not VSWITCHD.exists():
        raise DpdkUnavailable(f"{VSWITCHD} is missing: install openvswitch-switch-dpdk (`make test` does)")
    drivers = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\\n", "librte-net-af-packet23",
                              "librte-mempool-ring23"], capture_output=True, text=True).stdout
    for package in ("librte-net-af-packet23", "librte-mempool-ring23"):
        if f"{package} install ok installed" not in drivers:
            raise DpdkUnavailable(f"DPDK's {package} is missing (its driver plugin): install it (`make test` does)")


def configure(vsctl) -> None:
    """What `ovs-vswitchd-dpdk` reads at its start: set before it runs."""
    vsctl("--no-wait", "set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
          f"other_config:pmd-cpu-mask={PMD_CPU_MASK}", 'other_config:dpdk-extra="--no-pci"')


def wait_initialized(vsctl, log: Path) -> None:
    deadline = time.monotonic() + INIT_S
    while time.monotonic() < deadline:
        try:
            if vsctl("get", "Open_vSwitch", ".", "dpdk_initialized").strip() == "true":
                return
        except RuntimeError:
            pass
        time.sleep(0.2)
    tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
    raise DpdkUnavailable(f"DPDK did not initialise in {INIT_S:g} s; {log}: " + " | ".join(tail))


def dpdk_port_up(vsctl, intf: str) -> None:
    """Wait until a DPDK port has its OpenFlow number; DpdkUnavailable with its error."""
    deadline = time.monotonic() + INIT_S
    while True:
        ofport = vsctl("get", "Interface", intf, "ofport").strip()
        if ofport not in ("-1", "[]", "0"):
            return
        error = vsctl("get", "Interface", intf, "error").strip()
        if error not in ("[]", '""') or time.monotonic() > deadline:
            raise DpdkUnavailable(f"DPDK port {intf} did not come up: {error}")
        time.sleep(0.1)


def dpdk_ports(net) -> list[tuple[str, str]]:
    """(switch, interface) for every switch port of a built Mininet network."""
    return [(sw.name, intf.name) for sw in net.switches for intf in sw.intfList() if intf.name != "lo"]


def make_ports_dpdk(net, vsctl) -> None:
    """Turn every switch port into a DPDK port on the same veth, keeping its OpenFlow
    port number (the interface's name and `ofport_request` stay)."""
    args: list[str] = []
    for i, (_, intf) in enumerate(dpdk_ports(net)):
        args += ["--", "set", "Interface", intf, "type=dpdk", f"options:dpdk-devargs=net_af_packet{i},iface={intf}"]
    vsctl(*args)
    for _, intf in dpdk_ports(net):
        dpdk_port_up(vsctl, intf)
