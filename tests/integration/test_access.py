"""Access control and audit on the real controller (`linear,3` where traffic matters):
tokens, roles, scope, the audit chain, request hygiene, REST over TLS, the CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.integration.harness import Lab, traffic, wait_tap
from tests.waiting import wait_until
from vtap.lab.process import ControllerProcess
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Flow

OPERATOR_SCOPE = {"sources": ["10.0.0.1", "10.0.0.3/32", "00:00:00:00:00:03"], "monitors": ["10.0.0.2"]}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    # Failed authentications are not throttled here: the sweeps below make dozens on purpose
    # (the throttle has its own controller, in its own test).
    lab = Lab(parse_topo("linear,3"), tmp_path_factory.mktemp("access"), serve_args=("--auth-failure-limit", "0"))
    lab.net.pingAll(timeout="1")
    yield lab
    lab.close()


def client(lab: Lab, token: str | None) -> httpx.Client:
    return httpx.Client(base_url=lab.ctl.api, headers={"authorization": f"Bearer {token}"} if token else {}, timeout=10)


def operations(lab: Lab) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI schema, path parameters filled in."""
    schema = httpx.get(f"{lab.ctl.api}/openapi.json").json()
    fill = {"{tap_id}": "1", "{token_id}": "1", "{mac}": "00:00:00:00:00:01"}
    out = []
    for path, item in schema["paths"].items():
        for name, value in fill.items():
            path = path.replace(name, value)
        out += [(method.upper(), path) for method in item]
    return out


def test_the_schema_declares_the_bearer_scheme(lab):
    schema = httpx.get(f"{lab.ctl.api}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" not in schema["paths"]["/api/v1/health"]["get"]
    assert schema["paths"]["/api/v1/taps"]["post"]["security"] == [{"HTTPBearer": []}]


def test_every_endpoint_but_health_needs_a_valid_token(lab):
    ops = operations(lab)
    assert len(ops) >= 20
    for token in (None, "vtap_not-a-real-token"):
        with client(lab, token) as c:
            for method, path in ops:
                resp = c.request(method, path, json={} if method in ("POST", "PUT") else None)
                if path == "/api/v1/health":
                    assert resp.status_code == 200
                    continue
                assert resp.status_code == 401, (method, path, resp.status_code)
                assert resp.headers["www-authenticate"].startswith("Bearer")


def test_roles_scope_revocation_and_copies(lab):
    admin = lab.ctl.http
    viewer = admin.post("/api/v1/tokens", json={"name": "auditor", "role": "viewer"}).json()
    assert viewer["role"] == "viewer" and viewer["token"].startswith("vtap_")
    operator = admin.post("/api/v1/tokens", json={"name": "noc", "role": "operator", "scope": OPERATOR_SCOPE}).json()
    listed = admin.get("/api/v1/tokens").json()
    assert {t["name"] for t in listed} >= {"admin", "auditor", "noc"} and all("token" not in t for t in listed)
    # Secrets are stored only as hashes.
    db = sqlite3.connect(lab.ctl.state_dir / "vtap.db")
    assert not any(operator["token"] in str(row) for row in db.execute("SELECT * FROM tokens"))

    with client(lab, viewer["token"]) as v:
        assert v.get("/api/v1/taps").status_code == 200
        for method, path in operations(lab):
            if method != "GET":
                assert v.request(method, path, json={}).status_code == 403, (method, path)

    policy = {"name": "noc-1", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.3", "ip_proto": "udp", "monitor_ip": "10.0.0.2"}
    with client(lab, operator["token"]) as op:
        outside = [({**policy, "name": "x1", "src_ip": "10.0.0.2"}, "src_ip"),
                   ({**policy, "name": "x2", "monitor_ip": "10.0.0.3"}, "monitor_ip"),
                   ({**policy, "name": "x4", "src_ip": "10.0.0.0/24"}, "src_ip")]
        for body, field in outside:
            resp = op.post("/api/v1/taps", json=body)
            assert resp.status_code == 403, resp.text
            assert field in {d["loc"][-1] for d in resp.json()["detail"]}
        assert admin.get("/api/v1/taps").json() == []
        # Naming only its source, inside the scope, taps all that host sends, whoever the peer: in scope.
        source_only = op.post("/api/v1/taps", json={k: v for k, v in policy.items() if k != "dst_ip"} | {"name": "x3"})
        assert source_only.status_code == 201, source_only.text
        assert op.delete(f"/api/v1/taps/{source_only.json()['id']}").status_code == 204
        created = op.post("/api/v1/taps", json=policy)
        assert created.status_code == 201, created.text
        wait_tap(lab, created.json()["id"])
        got = traffic(lab, "h1", Flow("00:00:00:00:00:01", "00:00:00:00:00:03", "10.0.0.1", "10.0.0.3", "udp"), "acl", 15, ["h3", "h2"])
        assert len(got["h3"]) == 15 and got["h2"] == got["h3"]
        # Updates are checked against the policy as asked; deletes against the policy as stored.
        moved = op.put(f"/api/v1/taps/{created.json()['id']}", json={**policy, "monitor_ip": "10.0.0.3"})
        assert moved.status_code == 403 and lab.ctl.get(f"/api/v1/taps/{created.json()['id']}")["monitor_ip"] == "10.0.0.2"
        wide = admin.post("/api/v1/taps", json={"name": "wide", "dst_ip": "10.0.0.0/8", "monitor_ip": "10.0.0.2"}).json()
        assert op.delete(f"/api/v1/taps/{wide['id']}").status_code == 403
        assert op.post("/api/v1/tokens", json={"name": "y", "role": "admin"}).status_code == 403
        assert admin.delete(f"/api/v1/tokens/{operator['id']}").status_code == 204
        assert op.get("/api/v1/taps").status_code == 401  # revoked: its very next request
    for t in admin.get("/api/v1/taps").json():
        admin.delete(f"/api/v1/taps/{t['id']}")


def test_the_audit_trail_names_who_did_what_and_an_edit_breaks_its_chain(lab):
    admin = lab.ctl.http
    start, page = 0, admin.get("/api/v1/audit", params={"limit": 10000}).json()
    while page:  # the newest record's sequence number, whatever came before
        start = page[-1]["seq"]
        page = admin.get("/api/v1/audit", params={"since": start, "limit": 10000}).json()
    op = admin.post("/api/v1/tokens", json={"name": "ops2", "role": "operator", "scope": OPERATOR_SCOPE}).json()
    with client(lab, op["token"]) as c:
        ok = c.post("/api/v1/taps", json={"name": "a1", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.3", "monitor_ip": "10.0.0.2"}).json()
        c.post("/api/v1/taps", json={"name": "a2", "src_ip": "10.0.0.2", "dst_ip": "10.0.0.3", "monitor_ip": "10.0.0.2"})
        c.delete(f"/api/v1/taps/{ok['id']}")
    with client(lab, "vtap_wrong") as c:
        c.post("/api/v1/taps", json={"name": "a3"})
    records = admin.get("/api/v1/audit", params={"since": start}).json()
    seen = [(r["actor"], r["action"], r["target"], r["result"]) for r in records]
    assert seen == [("admin", "token.create", f"token:{op['id']}", "201"),
                    ("ops2", "tap.create", f"tap:{ok['id']}", "201"),
                    ("ops2", "tap.create", "tap:a2", "403"),
                    ("ops2", "tap.delete", f"tap:{ok['id']}", "204"),
                    ("invalid token", "POST /api/v1/taps", "/api/v1/taps", "401")]
    assert records[1]["after"]["src_ip"] == "10.0.0.1" and records[3]["before"]["name"] == "a1"
    assert all(r["remote"].startswith("127.0.0.1:") for r in records)
    assert admin.get("/api/v1/audit", params={"actor": "ops2", "target": f"tap:{ok['id']}"}).json() == [records[1], records[3]]

    env = {**os.environ, "VTAP_TOKEN": lab.ctl.token}
    verify = [sys.executable, "-m", "vtap", "audit", "--verify", "--api", lab.ctl.api]
    res = subprocess.run(verify, capture_output=True, text=True, env=env, timeout=30)
    assert res.returncode == 0 and "chain intact" in res.stdout
    db = sqlite3.connect(lab.ctl.state_dir / "vtap.db")
    with db:
        db.execute("UPDATE audit SET actor = 'somebody-else' WHERE seq = ?", (records[2]["seq"],))
    res = subprocess.run(verify, capture_output=True, text=True, env=env, timeout=30)
    assert res.returncode == 1 and f"BROKEN at record {records[2]['seq']}" in res.stdout
    with db:
        db.execute("UPDATE audit SET actor = 'ops2' WHERE seq = ?", (records[2]["seq"],))


def test_request_hygiene(lab):
    admin = lab.ctl.http
    # A foreign Host header (DNS rebinding from a browser elsewhere).
    assert httpx.get(f"{lab.ctl.api}/api/v1/health", headers={"host": "evil.example"}).status_code == 400
    # A 20 MB body: 413 at once, with a small reply; health stays quick meanwhile.
    latencies, upload = [], []

    def big_upload():
        def chunks():
            for _ in range(20):
                yield b"x" * (1 << 20)
                time.sleep(0.05)
        try:
            resp = admin.post("/api/v1/taps", content=chunks(), headers={"content-type": "application/json"})
            upload.append((resp.status_code, len(resp.content)))
        except httpx.HTTPError as exc:  # the server may close while we still send
            upload.append(("closed", str(exc)[:60]))

    uploader = threading.Thread(target=big_upload)
    uploader.start()
    while uploader.is_alive():
        t = time.perf_counter()
        assert httpx.get(f"{lab.ctl.api}/api/v1/health").status_code == 200
        latencies.append(time.perf_counter() - t)
        time.sleep(0.02)
    uploader.join()
    resp = admin.post("/api/v1/taps", content=b"x" * (20 << 20), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and len(resp.content) < 200
    # Not held up by the upload: the 20 MB arrive over a second, and reading them on the
    # loop would stall health for that long. (Idle, the worst is ~30 ms; with the other
    # core busy, 59 ms was seen: the bound is for a stall, not for speed.)
    assert max(latencies) < 0.25, latencies
    assert upload[0][0] in (413, "closed") and (upload[0][0] == "closed" or upload[0][1] < 200), upload
    # A whole policy set may be larger, from a client with a valid token only.
    big_set = [{"name": f"bulk{i}", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.3", "ip_proto": "udp", "dst_port": i,
                "monitor_ip": "10.0.0.2", "description": "x" * 100} for i in range(1, 12001)]
    assert httpx.put(f"{lab.ctl.api}/api/v1/taps", json=big_set, params={"dry_run": "true"}, timeout=60).status_code == 413
    resp = admin.put("/api/v1/taps", json=big_set, params={"dry_run": "true"}, timeout=120)
    assert resp.status_code == 200 and len(resp.json()["added"]) == 12000
    # A 422 quotes a short excerpt of the bad input, not megabytes of it.
    resp = admin.post("/api/v1/taps", json={"name": "n" * 500_000, "src_ip": "x" * 500_000, "monitor_ip": "10.0.0.2"})
    assert resp.status_code == 422 and len(resp.content) < 2000
    # No CORS: a browser page elsewhere gets no permission to read.
    resp = httpx.options(f"{lab.ctl.api}/api/v1/taps", headers={"origin": "http://evil.example", "access-control-request-method": "GET"})
    assert "access-control-allow-origin" not in resp.headers


def test_failed_authentications_are_throttled_per_address(tmp_path):
    ctl = ControllerProcess(tmp_path / "state", tmp_path / "ctl.log").start()
    try:
        with httpx.Client(base_url=ctl.api, headers={"authorization": "Bearer vtap_guess"}) as c:
            codes = [c.get("/api/v1/taps").status_code for _ in range(12)]
        assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
        assert ctl.http.get("/api/v1/taps").status_code == 200  # a valid token is never locked out by others' failures
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), headers={"authorization": "Bearer vtap_x"})
        assert other.get(f"{ctl.api}/api/v1/taps").status_code == 401  # per address
    finally:
        ctl.stop()


def test_cli_tokens(lab):
    env = {**os.environ, "VTAP_TOKEN": lab.ctl.token}

    def vtap(*args):
        return subprocess.run([sys.executable, "-m", "vtap", *args, "--api", lab.ctl.api], capture_output=True, text=True,
                              env=env, timeout=30)

    made = vtap("token", "add", "cli-op", "--role", "operator", "--source", "10.0.0.1", "--monitor", "10.0.0.2", "--json")
    assert made.returncode == 0, made.stderr
    import json

    secret = json.loads(made.stdout)["token"]
    listing = vtap("token", "list")
    assert "cli-op" in listing.stdout and secret not in listing.stdout
    out_of_scope = subprocess.run([sys.executable, "-m", "vtap", "tap", "add", "--name", "nope", "--src-ip", "10.0.0.3",
                                   "--dst-ip", "10.0.0.1", "--monitor-ip", "10.0.0.2", "--api", lab.ctl.api, "--token", secret],
                                  capture_output=True, text=True, timeout=30)
    assert out_of_scope.returncode == 1 and "src_ip" in out_of_scope.stderr and "outside your scope" in out_of_scope.stderr
    assert vtap("token", "rm", str(json.loads(made.stdout)["id"])).returncode == 0
    no_token = subprocess.run([sys.executable, "-m", "vtap", "tap", "list", "--api", lab.ctl.api, "--token-file", "/nonexistent"],
                              capture_output=True, text=True, timeout=30, env={k: v for k, v in os.environ.items() if k != "VTAP_TOKEN"})
    assert no_token.returncode == 1 and "needs a token" in no_token.stderr


def test_rest_over_tls_with_a_test_ca(tmp_path):
    """A controller alone (no switches) serving HTTPS with a certificate of a test CA."""
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "1",
        "-subj", "/CN=vtap test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "1", "-extfile", str(ext))
    ctl = ControllerProcess(tmp_path / "state", tmp_path / "ctl.log", ("--tls-cert", str(cert), "--tls-key", str(key)))
    ctl.start(ca=ca)
    try:
        assert ctl.api.startswith("https://")
        assert ctl.get("/api/v1/whoami")["role"] == "admin"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{ctl.api}/api/v1/health")  # not trusted without the test CA
        res = subprocess.run([sys.executable, "-m", "vtap", "tap", "list", "--api", ctl.api, "--token", ctl.token,
                              "--ca-cert", str(ca)], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        from playwright.sync_api import sync_playwright

        from tests.integration.test_ui import CHROMIUM_ARGS, sign_in

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(ignore_https_errors=True)
            page.goto(ctl.api + "/")
            sign_in(page, ctl.token)
            assert page.inner_text("#who-role") == "admin"
            browser.close()
    finally:
        ctl.stop()


def test_api_contract_with_schemathesis(tmp_path):
    """The OpenAPI schema against the live API: no 5xx, no undocumented status, every
    response in its schema, auth enforced (a controller alone, its own state)."""
    ctl = ControllerProcess(tmp_path / "state", tmp_path / "ctl.log", ("--auth-failure-limit", "0")).start()
    try:
        res = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "schemathesis"), "run", f"{ctl.api}/openapi.json",
             "-H", f"Authorization: Bearer {ctl.token}", "--max-examples", "25", "--workers", "1",
             "--checks", "all", "--exclude-checks", "positive_data_acceptance",
             "--exclude-path", "/api/v1/events", "--phases", "examples,coverage,fuzzing,stateful", "--max-time", "45"],
            capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-4000:]
        assert " passed" in res.stdout
    finally:
        ctl.stop()
    wait_until(lambda: ctl.proc.poll() is not None, 5)


def test_prometheus_metrics_count_the_copies(lab):
    from prometheus_client.parser import text_string_to_metric_families

    admin = lab.ctl.http
    tap = admin.post("/api/v1/taps", json={"name": "metered", "src_ip": "10.0.0.3", "dst_ip": "10.0.0.1", "ip_proto": "udp",
                                           "dst_port": 7070, "monitor_ip": "10.0.0.2"}).json()
    wait_tap(lab, tap["id"])

    def scrape() -> dict:
        text = admin.get("/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}

    monitor = (("mac", "00:00:00:00:00:02"), ("monitor", "10.0.0.2"))
    sent, delivered = ("vtap_monitor_copies_sent_packets_total", monitor), ("vtap_monitor_copies_delivered_packets_total", monitor)
    before = wait_until(lambda: (s := scrape()).get(delivered) is not None and s, 5)
    got = traffic(lab, "h3", Flow("00:00:00:00:00:03", "00:00:00:00:00:01", "10.0.0.3", "10.0.0.1", "udp", 5, 7070), "prom", 11,
                  ["h1", "h2"])
    assert len(got["h1"]) == 11 and got["h2"] == got["h1"]
    assert httpx.get(f"{lab.ctl.api}/metrics").status_code == 401
    samples = wait_until(lambda: (s := scrape())[delivered] - before[delivered] == 11 and s, 5,
                         message=lambda: f"delivered {scrape()[delivered] - before[delivered]} of 11")
    assert samples[sent] - before[sent] == 11
    assert samples[("vtap_monitor_delivery_failing", monitor)] == 0
    labels = (("id", str(tap["id"])), ("monitor", "10.0.0.2"), ("name", "metered"))
    assert samples[("vtap_tap_copied_packets_total", labels)] == 11
    assert samples[("vtap_tap_copied_bytes_total", labels)] > 11 * 42
    assert samples[("vtap_tap_state", (("id", str(tap["id"])), ("name", "metered"), ("state", "active")))] == 1
    assert samples[("vtap_switches", ())] == 3 and samples[("vtap_switches_in_sync", ())] == 3
    assert samples[("vtap_packet_ins_total", (("reason", "arp"),))] > 0
    assert any(name == "vtap_http_request_duration_seconds_count" and dict(l)["route"] == "/api/v1/taps" for name, l in samples)
    admin.delete(f"/api/v1/taps/{tap['id']}")


def test_no_lockout_streams_end_on_revocation_and_bulk_changes_have_per_policy_history(lab):
    admin = lab.ctl.http
    # An admin that expires cannot be the one left: revoking the lasting admin is refused.
    short = admin.post("/api/v1/tokens", json={"name": "short-admin", "role": "admin", "expires_in_s": 3600}).json()
    with client(lab, short["token"]) as c:
        assert c.delete("/api/v1/tokens/1").status_code == 409
    assert admin.delete(f"/api/v1/tokens/{short['id']}").status_code == 204
    # A revoked viewer's event stream ends.
    viewer = admin.post("/api/v1/tokens", json={"name": "streamer", "role": "viewer"}).json()
    ended = threading.Event()

    def watch():
        with client(lab, viewer["token"]) as c, c.stream("GET", "/api/v1/events", timeout=30) as resp:
            for _ in resp.iter_lines():
                pass
        ended.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(1.5)
    assert not ended.is_set()
    admin.delete(f"/api/v1/tokens/{viewer['id']}")
    assert ended.wait(5), "the stream went on after its token was revoked"
    # A bulk apply leaves one record per policy, so each policy's history is whole.
    done = admin.put("/api/v1/taps", json=[{"name": "hist-a", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.3", "monitor_ip": "10.0.0.2"}])
    assert done.status_code == 200
    tap_id = next(t["id"] for t in admin.get("/api/v1/taps").json() if t["name"] == "hist-a")
    history = admin.get("/api/v1/audit", params={"target": f"tap:{tap_id}"}).json()
    assert [(r["action"], r["result"]) for r in history] == [("tap.create", "200")]
    admin.put("/api/v1/taps", json=[], params={"prune": "true"})
    assert [r["action"] for r in admin.get("/api/v1/audit", params={"target": f"tap:{tap_id}"}).json()] == ["tap.create", "tap.delete"]
    # Viewers do not read the records about tokens.
    reader = admin.post("/api/v1/tokens", json={"name": "reader", "role": "viewer"}).json()
    with client(lab, reader["token"]) as c:
        assert not [r for r in c.get("/api/v1/audit").json() if r["target"].startswith("token:")]
