"""`vtap lab --cluster N`: etcd, N controllers and a topology pointed at all of them, as a
new user starts it; everything it started is gone when it exits."""

from __future__ import annotations

import subprocess
import sys


def test_vtap_lab_cluster_runs_a_command_on_a_working_cluster_and_cleans_up():
    done = subprocess.run([sys.executable, "-m", "vtap", "lab", "--topo", "linear,3", "--cluster", "3", "--run", "pingall"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "0% dropped (6/6 received)" in done.stderr  # Mininet reports on stderr
    roles = [line.split(", ")[2] for line in done.stderr.splitlines() if line.startswith("  c") and "API http" in line]
    assert sorted(roles) == ["follower", "follower", "leader"], done.stderr
    # Every process it started (etcd, the instances, OVS) named its work dir on its command line.
    work = next(line.split("work dir ")[1].strip() for line in done.stderr.splitlines() if "work dir " in line)
    left = subprocess.run(["pgrep", "-af", work], capture_output=True, text=True).stdout
    assert left == "", left


def test_vtap_lab_cluster_refuses_a_bad_size():
    done = subprocess.run([sys.executable, "-m", "vtap", "lab", "--topo", "linear,3", "--cluster", "0", "--etcd-members", "0"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "at least 1" in done.stderr
