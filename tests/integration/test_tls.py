"""OpenFlow over TLS (`linear,2`): the lab's switches connect with certificates from
`ovs-pki`; a client without one cannot complete a handshake."""

from __future__ import annotations

import socket
import ssl
import subprocess

import pytest

from tests.integration.harness import Lab
from vtap.lab.topos import parse_topo


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(parse_topo("linear,2"), tmp_path_factory.mktemp("tls"), of_tls=True)
    yield lab
    lab.close()


def test_switches_with_certificates_connect_and_forward(lab):
    assert lab.net.pingAll(timeout="1") == 0
    targets = {sw.name: lab.ovs.vsctl("get-controller", sw.name).strip() for sw in lab.net.switches}
    assert all(t.startswith("ssl:") for t in targets.values()), targets
    lab.wait_health(switches=2, links=2, timeout=10)  # hosts just learned by the pingall: rules going in


def _hello_answered(sock) -> bool:
    sock.sendall(bytes([4, 0, 0, 8, 0, 0, 0, 1]))
    try:
        return len(sock.recv(8)) == 8
    except (OSError, ssl.SSLError):
        return False


def test_a_client_without_a_valid_certificate_cannot_complete_a_handshake(lab, tmp_path):
    # Plain TCP: the controller waits for a TLS ClientHello; an OpenFlow HELLO gets nothing back.
    with socket.create_connection(("127.0.0.1", lab.ctl.of_port), timeout=6) as s:
        assert not _hello_answered(s)
    # TLS without a client certificate.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", lab.ctl.of_port), timeout=6) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            with ctx.wrap_socket(raw) as s:
                assert not _hello_answered(s)
                raise ssl.SSLError("handshake accepted, but nothing answered")
    # TLS with a certificate the switch CA did not sign.
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=impostor"], check=True, capture_output=True)
    ctx.load_cert_chain(cert, key)
    with socket.create_connection(("127.0.0.1", lab.ctl.of_port), timeout=6) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            with ctx.wrap_socket(raw) as s:
                assert not _hello_answered(s)
                raise ssl.SSLError("handshake accepted, but nothing answered")
    # The lab's own switch certificate works.
    ctx.load_cert_chain(lab.pki.switch_cert, lab.pki.switch_key)
    with socket.create_connection(("127.0.0.1", lab.ctl.of_port), timeout=6) as raw, ctx.wrap_socket(raw) as s:
        assert _hello_answered(s)
