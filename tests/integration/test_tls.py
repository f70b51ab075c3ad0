"""OpenFlow over TLS (`linear,2`): the lab's switches connect with certificates from
`ovs-pki`; a client without one cannot complete a handshake."""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess

import pytest

from tests.integration.harness import Lab
from tests.waiting import wait_until
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


def _fake_switch(lab, cert, key, dpid: int) -> bool:
    """A TLS client with `cert` that completes the OpenFlow handshake claiming `dpid`;
    True when the controller then closes the connection (refused) within 10 s."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    with socket.create_connection(("127.0.0.1", lab.ctl.of_port), timeout=10) as raw, ctx.wrap_socket(raw) as s:
        s.sendall(struct.pack("!BBHI", 4, 0, 8, 1))  # HELLO
        buf = b""
        while True:
            try:
                data = s.recv(65536)
            except (socket.timeout, ssl.SSLError, OSError):
                return False
            if not data:
                return True  # closed by the controller
            buf += data
            while len(buf) >= 8:
                _, kind, length, xid = struct.unpack_from("!BBHI", buf)
                if len(buf) < length:
                    break
                buf = buf[length:]
                if kind == 5:  # FEATURES_REQUEST -> FEATURES_REPLY claiming the dpid
                    s.sendall(struct.pack("!BBHIQIBB2xII", 4, 6, 32, xid, dpid, 0, 254, 0, 0, 0))
                elif kind == 18:  # MULTIPART_REQUEST (port description) -> an empty reply
                    s.sendall(struct.pack("!BBHIHH4x", 4, 19, 16, xid, 13, 0))


def test_a_second_certificate_claiming_a_known_dpid_is_refused_after_the_real_switch_drops(lab):
    """The lab's switches share one certificate (one ovs-vswitchd holds one TLS setting);
    each dpid is pinned to the certificate it first connected with. Another certificate
    of the same CA claiming dpid 2 is refused while s2 is away, and s2 comes back."""
    devices = {d["dpid"]: d for d in lab.ctl.get("/api/v1/devices")}
    pinned = devices["0000000000000002"]["certificate"]
    assert pinned and len(pinned) == 64
    subprocess.run(["ovs-pki", "-d", str(lab.pki.dir / "pki"), "-l", str(lab.pki.dir / "ovs-pki.log"), "-u", "req+sign",
                    "sw2", "switch"], cwd=lab.workdir, check=True, capture_output=True)
    target = lab.ovs.vsctl("get-controller", "s2").strip()
    refused = lab.ctl.get("/api/v1/health")["refused_connections"]
    lab.ovs.vsctl("del-controller", "s2")
    try:
        wait_until(lambda: lab.ctl.get("/api/v1/health")["switches"] == 1, 10)
        assert _fake_switch(lab, lab.workdir / "sw2-cert.pem", lab.workdir / "sw2-privkey.pem", 2)
        assert lab.ctl.get("/api/v1/health")["refused_connections"] == refused + 1
        assert lab.ctl.get("/api/v1/health")["switches"] == 1  # not adopted
    finally:
        lab.ovs.vsctl("set-controller", "s2", target)
    lab.wait_health(switches=2, links=2, timeout=20)
    assert lab.net.pingAll(timeout="1") == 0
    # Only an admin unpins (a switch whose certificate really changed); audited.
    assert lab.ctl.http.delete("/api/v1/devices/0000000000000002/certificate").status_code == 204
    assert lab.ctl.http.delete("/api/v1/devices/0000000000000002/certificate").status_code == 404
    assert any(r["action"] == "device.unpin" for r in lab.ctl.http.get("/api/v1/audit").json())
