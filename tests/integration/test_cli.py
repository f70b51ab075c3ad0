"""Bad input on the command line: one clear line naming the flag, a non-zero status."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest

from tests.waiting import wait_until


def _vtap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vtap", *args], capture_output=True, text=True, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_with_a_taken_openflow_port(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        res = _vtap("serve", "--of-host", "127.0.0.1", "--of-port", str(port), "--api-port", str(_free_port()),
                    "--state-dir", str(tmp_path))
    assert res.returncode == 1 and f"--of-port {port}" in res.stderr and "Traceback" not in res.stderr


def test_serve_with_a_taken_api_port(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        res = _vtap("serve", "--of-port", str(_free_port()), "--api-port", str(port), "--state-dir", str(tmp_path))
    assert res.returncode == 1 and f"--api-port {port}" in res.stderr


def test_serve_with_a_state_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    res = _vtap("serve", "--of-port", str(_free_port()), "--api-port", str(_free_port()), "--state-dir", str(f))
    assert res.returncode == 1 and "--state-dir" in res.stderr


def test_lab_with_an_unknown_topology():
    res = _vtap("lab", "--topo", "torus,3")
    assert res.returncode == 2 and "unknown topology 'torus'" in res.stderr


def test_tap_commands_without_a_controller():
    res = _vtap("tap", "list", "--api", f"http://127.0.0.1:{_free_port()}")
    assert res.returncode == 1 and "cannot reach the controller" in res.stderr


def test_the_api_answers_without_a_nagle_stall(tmp_path):
    """A socket bound before uvicorn gets it must not delay replies (~40 ms each without TCP_NODELAY)."""
    import time

    import httpx

    api_port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vtap", "serve", "--of-port", str(_free_port()), "--api-port", str(api_port),
                             "--state-dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}")

        def answers() -> bool:
            try:
                client.get("/api/v1/health")
                return True
            except httpx.HTTPError:
                return False

        wait_until(answers, 20, interval=0.1, message="`vtap serve` API not answering")
        t = time.perf_counter()
        for _ in range(20):
            client.get("/api/v1/health")
        assert (time.perf_counter() - t) / 20 < 0.02
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_serve_reads_a_config_file_and_flags_win(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('of-port = 6653\nno-such-flag = 1\n')
    res = _vtap("serve", "--config", str(bad))
    assert res.returncode != 0 and "unknown key 'no-such-flag'" in res.stderr
    api_port, other_port = _free_port(), _free_port()
    good = tmp_path / "vtap.toml"
    good.write_text(f'api-port = {other_port}\nof-port = {_free_port()}\nstate-dir = "{tmp_path / "state"}"\n'
                    'api-allowed-hosts = ["127.0.0.1", "vtap.test"]\nmax-hosts-per-port = 4\n')
    proc = subprocess.Popen([sys.executable, "-m", "vtap", "serve", "--config", str(good), "--api-port", str(api_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def health():
            try:
                return httpx.get(f"http://127.0.0.1:{api_port}/api/v1/health", headers={"host": "vtap.test"}).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(health, 20, interval=0.1, message="`vtap serve --config` API not answering on the flag's port")
        assert (tmp_path / "state" / "admin.token").stat().st_mode & 0o777 == 0o600
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{other_port}/api/v1/health", timeout=1)
        assert httpx.get(f"http://127.0.0.1:{api_port}/api/v1/health", headers={"host": "other.test"}).status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=15)
