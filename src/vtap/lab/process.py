"""The controller as its own process (`vtap serve`), as an operator runs it: for the
demo, the benchmarks and the integration tests."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ControllerProcess:
    """`vtap serve` as a separate process, as an operator runs it."""

    def __init__(self, state_dir: Path, log_path: Path, extra_args: tuple[str, ...] = ()):
        self.extra_args = tuple(extra_args)
        self.state_dir = state_dir
        self.log_path = log_path
        self.of_port = free_port()
        self.api_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None
        self.http: httpx.Client | None = None  # signed in with the admin token once started
        self.env: dict[str, str] = {}  # set for the process, over this one's environment (a test's PATH, say)

    @property
    def api(self) -> str:
        scheme = "https" if "--tls-cert" in self.extra_args else "http"
        return f"{scheme}://127.0.0.1:{self.api_port}"

    def start(self, ca: Path | None = None, token: str | None = None, wait_s: float = 30.0) -> ControllerProcess:
        """Start `vtap serve` and wait up to `wait_s` for its API (over HTTPS, verified
        against `ca`). `token`: sign in with it (a cluster member that did not make the
        admin token)."""
        verify = ssl.create_default_context(cafile=str(ca)) if ca else True
        for attempt in range(3):
            log = open(self.log_path, "ab")
            start = log.tell()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vtap", "serve", "--of-host", "127.0.0.1", "--of-port", str(self.of_port),
                 "--api-port", str(self.api_port), "--state-dir", str(self.state_dir), *self.extra_args],
                stdout=log, stderr=log, env={**os.environ, **self.env} if self.env else None,
            )
            if self._wait_api(verify, token, wait_s):
                return self
            said = Path(self.log_path).read_bytes()[start:].decode(errors="replace")
            if self.proc.poll() is not None and "-port" in said and attempt < 2:
                # A port free_port() found was taken before `vtap serve` bound it: other ones.
                self.of_port, self.api_port = free_port(), free_port()
                continue
            if self.proc.poll() is None:
                self.proc.kill()  # hung: leave nothing running
                self.proc.wait()
            raise RuntimeError(f"controller did not start; see {self.log_path}: {said.strip()[-500:]}")
        return self  # not reached: the last attempt returns or raises

    def _wait_api(self, verify, token: str | None, wait_s: float) -> bool:
        """Whether the API answered within `wait_s` (False as soon as the process ended)."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                # Alive: health answers 200 when ready, 503 (with the same body) when not yet.
                if httpx.get(f"{self.api}/api/v1/health", timeout=min(5.0, wait_s / 10), verify=verify).status_code in (200, 503):
                    # The admin token `vtap serve` wrote on its first start.
                    self.token = token or (Path(self.state_dir) / "admin.token").read_text().strip()
                    self.http = httpx.Client(base_url=self.api, headers={"authorization": f"Bearer {self.token}"}, timeout=30,
                                             verify=verify)
                    return True
            except httpx.HTTPError:
                time.sleep(0.1)
        return False

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def get(self, path: str):
        """The JSON of a GET; an error status raises, but for health's 503 ("alive, not
        ready"), whose body is what a caller waiting for the network reads."""
        resp = self.http.get(path)
        if not (resp.status_code == 503 and path.startswith("/api/v1/health")):
            resp.raise_for_status()
        return resp.json()
