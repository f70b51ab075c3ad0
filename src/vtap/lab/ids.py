"""A real IDS on a monitor: Suricata 7 (Debian bookworm-backports) reading the copies
that reach a monitor host's interface, with rules from a local file (there is no
internet for rule updates), its alerts in eve.json.

What a real monitor needs, and this sets: the interface the copies arrive on, read in
AF_PACKET mode; no checksum validation (a copy of a frame whose checksum its sender's
NIC was to fill in arrives without it); the VXLAN decoder on UDP 4789 (Suricata's
default), so the copies a VXLAN collector receives are inspected inside their tunnel;
and an MTU on the interface large enough for the outer packets (see the README).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

SURICATA = "suricata"
START_S = 60.0
CANARY = b"VTAP-CANARY-7f3a91"  # the payload the lab's rule alerts on
CANARY_SID = 1000001
RULES = f'alert udp any any -> any any (msg:"vtap canary"; content:"{CANARY.decode()}"; sid:{CANARY_SID}; rev:1;)\n'


class IdsUnavailable(RuntimeError):
    """Suricata is not installed or would not start; the message says which."""


def config(log_dir: Path, rules: Path, interface: str) -> str:
    """A minimal suricata.yaml: one interface, one rule file, alerts to eve.json."""
    return f"""%YAML 1.1
---
vars:
  address-groups:
    HOME_NET: "any"
    EXTERNAL_NET: "any"
  port-groups:
    HTTP_PORTS: "80"
default-log-dir: {log_dir}
default-rule-path: {rules.parent}
rule-files:
  - {rules.name}
classification-file: /etc/suricata/classification.config
reference-config-file: /etc/suricata/reference.config
outputs:
  - eve-log:
      enabled: yes
      filetype: regular
      filename: eve.json
      types:
        - alert
  - stats:
      enabled: no
logging:
  default-log-level: notice
  outputs:
    - file:
        enabled: yes
        level: info
        filename: suricata.log
af-packet:
  - interface: {interface}
    cluster-id: 99
    cluster-type: cluster_flow
    defrag: yes
pcap-file:
  checksum-checks: no
stream:
  checksum-validation: no
decoder:
  vxlan:
    enabled: true
    ports: "4789"
app-layer:
  protocols:
    dns:
      enabled: no
detect:
  profile: low
threading:
  set-cpu-affinity: no
"""


class Suricata:
    """Suricata on a lab host (a Mininet node: it runs in the host's namespace)."""

    def __init__(self, host, workdir: Path, interface: str | None = None, rules: str = RULES):
        if shutil.which(SURICATA) is None:
            raise IdsUnavailable("suricata is not installed: `make test` installs it from bookworm-backports")
        self.host = host
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.interface = interface or str(host.defaultIntf())
        self.rules = self.dir / "vtap.rules"
        self.rules.write_text(rules)
        self.conf = self.dir / "suricata.yaml"
        self.conf.write_text(config(self.dir, self.rules, self.interface))
        self.eve = self.dir / "eve.json"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Suricata:
        """Start it and wait until its capture threads run (its own log says so)."""
        log = self.dir / "suricata.log"
        self.proc = self.host.popen([SURICATA, "-c", str(self.conf), "--af-packet", "-k", "none", "-l", str(self.dir),
                                     "--runmode", "single", "--pidfile", str(self.dir / "suricata.pid")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise IdsUnavailable(f"suricata exited ({self.proc.returncode}): {self.proc.stderr.read().decode()[-500:]}")
            if log.exists() and "Engine started" in log.read_text(errors="replace"):
                return self
            time.sleep(0.2)
        self.stop()
        raise IdsUnavailable(f"suricata did not start in {START_S:g} s; {log}")

    def alerts(self, sid: int | None = None) -> list[dict]:
        """The alerts in eve.json so far (of one rule, if `sid`)."""
        if not self.eve.exists():
            return []
        out = []
        for line in self.eve.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line being written
            if event.get("event_type") == "alert" and (sid is None or event["alert"]["signature_id"] == sid):
                out.append(event)
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
