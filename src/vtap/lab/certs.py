"""A small certificate authority for the lab's etcd: one CA, a certificate the etcd
members serve and peer with, and client certificates whose common name is the etcd user
they act as (`root` to set etcd up, `vtap` for the controllers).

Made with `cryptography` (ECDSA P-256, a day's validity: the lab lives minutes); what
exists already is kept, so a lab restarted on its directory keeps its identities.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID = datetime.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return key


class LabCA:
    """`dir/ca.pem`, and `dir/NAME.pem` with `dir/NAME-key.pem` per certificate issued."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.pem"
        if not self.ca.exists():
            key = _write_key(self.dir / "ca-key.pem")
            now = datetime.datetime.now(datetime.timezone.utc)
            cert = (x509.CertificateBuilder().subject_name(_name("vtap lab CA")).issuer_name(_name("vtap lab CA"))
                    .public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID)
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .sign(key, hashes.SHA256()))
            self.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}-key.pem"

    def issue(self, name: str, cn: str, *, server: bool = False) -> tuple[Path, Path]:
        """A certificate for `cn` (a client's etcd user name); `server` adds the loopback
        names a member is reached by, and the server usage. (certificate, key) paths."""
        if self.cert(name).exists():
            return self.cert(name), self.key(name)
        ca_key = serialization.load_pem_private_key((self.dir / "ca-key.pem").read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(self.ca.read_bytes())
        key = _write_key(self.key(name))
        now = datetime.datetime.now(datetime.timezone.utc)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        self.cert(name).write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return self.cert(name), self.key(name)
