"""A private Open vSwitch instance in a directory of its own.

As OVS's own test suite does: a fresh ovsdb-server and ovs-vswitchd whose sockets,
database and logs live in one directory, selected by OVS_RUNDIR/OVS_DBDIR/OVS_LOGDIR.
With those variables exported, ovs-vsctl, ovs-ofctl, ovs-appctl and Mininet's
OVSSwitch use this instance and leave the system's alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from vtap.lab import dpdk

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


class PrivateOVS:
    """`dpdk`: run Debian's `ovs-vswitchd-dpdk` instead, on hugepages reserved for it
    (`vtap.lab.dpdk`); DpdkUnavailable, with the evidence, when it cannot start."""

    def __init__(self, directory: str | Path | None = None, *, dpdk: bool = False, ovsdb_tcp: int | None = None):
        self.dir = Path(directory or tempfile.mkdtemp(prefix="vtap-ovs-"))
        self.dpdk = dpdk
        self.ovsdb_tcp = ovsdb_tcp  # also serve the database on 127.0.0.1:PORT, as a compute node's OVS would (ptcp:)
        self.hugepages = None
        self.env = {"OVS_RUNDIR": str(self.dir), "OVS_DBDIR": str(self.dir), "OVS_LOGDIR": str(self.dir)}
        self._saved_env: dict[str, str | None] = {}

    def _run(self, *args: str) -> str:
        env = {**os.environ, **self.env}
        res = subprocess.run(args, env=env, capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"{' '.join(args)} failed: {res.stderr.strip() or res.stdout.strip()}")
        return res.stdout

    def start(self) -> PrivateOVS:
        """Start both daemons. Only one userspace OVS can run per machine: every
        netdev datapath is backed by one kernel tap named `ovs-netdev`."""
        others = subprocess.run(["pgrep", "-x", "ovs-vswitchd(-dp)?"], capture_output=True, text=True).stdout.split()
        if others:
            raise RuntimeError(
                f"another ovs-vswitchd is running (pid {', '.join(others)}); userspace datapaths share the "
                "'ovs-netdev' device, so stop it first"
            )
        # A tap left by a vswitchd that died unclean would make the new one fail.
        subprocess.run(["ip", "link", "del", "ovs-netdev"], capture_output=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        db = self.dir / "conf.db"
        if not db.exists():
            self._run("ovsdb-tool", "create", str(db), str(SCHEMA))
        self._run(
            "ovsdb-server", str(db),
            f"--remote=punix:{self.dir}/db.sock",
            *([f"--remote=ptcp:{self.ovsdb_tcp}:127.0.0.1"] if self.ovsdb_tcp else []),
            f"--pidfile={self.dir}/ovsdb-server.pid",
            f"--unixctl={self.dir}/ovsdb-server.ctl",
            "--detach", f"--log-file={self.dir}/ovsdb.log",
        )
        self._run("ovs-vsctl", "--no-wait", "init")
        binary = "ovs-vswitchd"
        if self.dpdk:
            dpdk.check_installed()
            self.hugepages = dpdk.Hugepages().reserve()
            dpdk.configure(self.vsctl)
            binary = str(dpdk.VSWITCHD)
        try:
            self._run(
                binary, f"unix:{self.dir}/db.sock",
                f"--pidfile={self.dir}/ovs-vswitchd.pid",
                "--detach", f"--log-file={self.dir}/vswitchd.log",
            )
            if self.dpdk:
                dpdk.wait_initialized(self.vsctl, self.dir / "vswitchd.log")
                # Its control socket is named after its program (ovs-vswitchd-dpdk.PID.ctl);
                # ovs-appctl (and anything else) looks for ovs-vswitchd.PID.ctl.
                pid = (self.dir / "ovs-vswitchd.pid").read_text().strip()
                (self.dir / f"ovs-vswitchd.{pid}.ctl").symlink_to(self.dir / f"{dpdk.VSWITCHD.name}.{pid}.ctl")
        except BaseException:
            self.stop()
            raise
        return self

    def export(self) -> None:
        """Point this process (and Mininet, which inherits it) at the private instance."""
        for key, value in self.env.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value

    def restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    def vsctl(self, *args: str) -> str:
        return self._run("ovs-vsctl", *args)

    def ofctl(self, *args: str) -> str:
        return self._run("ovs-ofctl", "-O", "OpenFlow13", *args)

    def appctl(self, *args: str) -> str:
        return self._run("ovs-appctl", *args)

    def stop(self) -> None:
        """Delete the bridges first (a netdev bridge's tap deleted under OVS makes it spin),
        then end both daemons by their pid files."""
        try:
            for br in self.vsctl("list-br").split():
                self.vsctl("--if-exists", "del-br", br)
        except RuntimeError:
            pass
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pidfile = self.dir / f"{name}.pid"
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        if self.hugepages is not None:
            self.hugepages.release()  # after the vswitchd that mapped them has ended
            self.hugepages = None

    def __enter__(self) -> PrivateOVS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
