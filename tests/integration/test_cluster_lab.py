"""`vtap lab --cluster N`: etcd, N controllers and a topology pointed at all of them, as a
new user starts it; everything it started is gone when it exits."""

from __future__ import annotations

import subprocess
import sys


def run_lab(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """`vtap lab ARGS`; if it hangs, SIGTERM (it then tears down what it started: a
    SIGKILL would leave its OVS, etcd and controllers to break every later test)."""
    proc = subprocess.Popen([sys.executable, "-m", "vtap", "lab", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"vtap lab {' '.join(args)} did not finish in {timeout} s: {err[-3000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_vtap_lab_cluster_runs_a_command_on_a_working_cluster_and_cleans_up():
    done = run_lab("--topo", "linear,3", "--cluster", "3", "--run", "pingall", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "0% dropped (6/6 received)" in done.stderr  # Mininet reports on stderr
    roles = [line.split(", ")[2] for line in done.stderr.splitlines() if line.startswith("  c") and "API http" in line]
    assert sorted(roles) == ["follower", "follower", "leader"], done.stderr
    # Every process it started (etcd, the instances, OVS) named its work dir on its command line.
    work = next(line.split("work dir ")[1].strip() for line in done.stderr.splitlines() if "work dir " in line)
    left = subprocess.run(["pgrep", "-af", work], capture_output=True, text=True).stdout
    assert left == "", left


def test_vtap_lab_cluster_refuses_a_bad_size():
    done = run_lab("--topo", "linear,3", "--cluster", "0", "--etcd-members", "0", timeout=30)
    assert done.returncode == 2 and "at least 1" in done.stderr
