"""A remote collector in the lab: a host that receives tunnelled copies.

`add_collector` gives a lab host a Linux device that decapsulates (the kernel's vxlan
device; gretap and geneve where the kernel has them: this machine's kernel has only
vxlan, and no loadable modules); `decap` reads an outer packet as captured on the host's
interface (`vtap.model.tunnel_frames`), so that any of them can be checked byte for
byte whatever the kernel offers.
"""

from __future__ import annotations

from vtap.model.tunnel_frames import VXLAN_PORT, decap

__all__ = ["DEVICE", "add_collector", "decap"]
DEVICE = "vtapcol0"

_DEVICE_ARGS = {
    "vxlan": lambda key, ip: ["vxlan", "id", str(key), "dstport", str(VXLAN_PORT), "local", ip],
    "geneve": lambda key, ip: ["geneve", "id", str(key), "remote", "0.0.0.0"],
    "gre": lambda key, ip: ["gretap", "local", ip, "key", str(key)],
}


def add_collector(host, kind: str, key: int) -> str:
    """Give a lab host a decapsulating device for `kind` tunnels with `key`, named
    vtapcol0 (tcpdump it for the inner frames); its name, or RuntimeError when this
    kernel has no such device."""
    if kind not in _DEVICE_ARGS:
        raise RuntimeError(f"no Linux collector device for {kind} (decode its packets with decap())")
    out = host.cmd(f"ip link add {DEVICE} type {' '.join(_DEVICE_ARGS[kind](key, host.IP()))} 2>&1; "
                   f"ip link set {DEVICE} up 2>&1; echo rc=$?")
    if "rc=0" not in out or "Error" in out:
        raise RuntimeError(f"{host.name}: this kernel cannot make a {kind} device: {out.strip()[:200]}")
    return DEVICE
