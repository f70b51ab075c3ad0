"""Certificates for OpenFlow over TLS, made with Open vSwitch's own `ovs-pki`.

Two authorities, as OVS's PKI lays them out: `controllerca` signs the controller's
certificate (the switches trust it), `switchca` signs the switches' (the controller
trusts it). `vtap serve --of-tls-cert ctl-cert.pem --of-tls-key ctl-privkey.pem
--of-tls-ca pki/switchca/cacert.pem` then accepts only switches holding a certificate of
this PKI, and `ovs-vsctl set-ssl sw-privkey.pem sw-cert.pem pki/controllerca/cacert.pem`
with `ssl:HOST:PORT` controller targets makes OVS speak TLS to it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def controller_cert(self) -> Path:
        return self.dir / "ctl-cert.pem"

    @property
    def controller_key(self) -> Path:
        return self.dir / "ctl-privkey.pem"

    @property
    def switch_cert(self) -> Path:
        return self.dir / "sw-cert.pem"

    @property
    def switch_key(self) -> Path:
        return self.dir / "sw-privkey.pem"

    @property
    def switch_ca(self) -> Path:
        """What the controller verifies switches against."""
        return self.dir / "pki" / "switchca" / "cacert.pem"

    @property
    def controller_ca(self) -> Path:
        """What the switches verify the controller against."""
        return self.dir / "pki" / "controllerca" / "cacert.pem"

    def serve_args(self) -> tuple[str, ...]:
        return ("--of-tls-cert", str(self.controller_cert), "--of-tls-key", str(self.controller_key),
                "--of-tls-ca", str(self.switch_ca))


def make_pki(directory: str | Path) -> Pki:
    """Both authorities and one certificate each for the controller and the switches;
    what already exists is kept (idempotent)."""
    pki = Pki(Path(directory))
    pki.dir.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        res = subprocess.run(["ovs-pki", "-d", str(pki.dir / "pki"), "-l", str(pki.dir / "ovs-pki.log"), *args],
                             cwd=pki.dir, capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"ovs-pki {' '.join(args)} failed: {res.stderr.strip() or res.stdout.strip()}")

    if not pki.switch_ca.exists():
        run("init")
    if not pki.controller_cert.exists():
        run("-u", "req+sign", "ctl", "controller")
    if not pki.switch_cert.exists():
        run("-u", "req+sign", "sw", "switch")
    return pki
