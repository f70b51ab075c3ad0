"""How a lab came up: from the last switch connecting to "converged", and the packet-ins
the controller took meanwhile and afterwards.

Converged means: every inter-switch link proven (both directions), every port's role
known (no `unknown` port), every switch in sync. `LabSession.start` returns at that
moment (it polls every 0.1 s), so the time it returns, against the switches'
`connected_since` from the API, gives the figure; both clocks are this machine's wall
clock. Shared by `vtap bench foundation` and the integration tests.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime

from vtap.lab.session import LabSession


@dataclass(frozen=True)
class Convergence:
    switches: int
    link_directions: int
    converged_after_last_connect_s: float  # last switch connected -> converged
    converged_after_first_connect_s: float
    packet_ins_per_s_during: float  # first switch connected -> converged, whole controller
    packet_ins_per_switch_s_after: float  # over `after_s` once converged, per switch

    def as_dict(self) -> dict:
        return asdict(self)


def measure(lab: LabSession, after_s: float = 5.0) -> Convergence:
    """Read right after `lab.start()` returned: the convergence figures."""
    converged = time.time()
    health = lab.leader().get("/api/v1/health")
    devices = lab.leader().get("/api/v1/devices")
    connected = sorted(datetime.fromisoformat(d["connected_since"]).timestamp() for d in devices)
    time.sleep(after_s)
    later = lab.leader().get("/api/v1/health")
    n = len(devices)
    return Convergence(
        switches=n,
        link_directions=health["links"],
        converged_after_last_connect_s=round(converged - connected[-1], 2),
        converged_after_first_connect_s=round(converged - connected[0], 2),
        packet_ins_per_s_during=round(health["packet_ins"] / max(converged - connected[0], 1e-3), 1),
        packet_ins_per_switch_s_after=round((later["packet_ins"] - health["packet_ins"]) / after_s / n, 2),
    )
