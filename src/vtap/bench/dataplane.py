"""`vtap bench dataplane`: the seed's Testbeds #1 and #2 on this machine.

Sender, receiver and monitor hosts are network namespaces on veths attached to one
userspace Open vSwitch bridge, run by the real vtap controller (`vtap serve`). For each
frame size and configuration — no TAP; OVS's native port mirroring (an OVSDB Mirror
row); a vtap policy (group table, installed through the REST API); the same policy with a
copy budget, `snaplen 128` and `sample 8` — trafgen (netsniff-ng) sends UDP from the
sender at full speed, 1,000 flows (source ports 1000-1999, in turn), and counters are read over a fixed window:
generator tx, packets entering OVS, receiver and monitor pps and Mbps, drops and where.
Configurations are interleaved (A B C A B C ...), repeated, and reported as medians
with min-max. Frame sizes include the 4-byte FCS, as in the seed's tables.

Test traffic is addressed to the receiver's MAC but to an IP the receiver does not own
(10.1.1.x), so its kernel counts the frame at the interface and drops it early: no
ICMP replies, no sockets, nothing flowing back.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


from vtap.lab.dpdk import dpdk_port_up
from vtap.lab.ovs import PrivateOVS
from vtap.lab.process import ControllerProcess

SIZES = [64, 128, 256, 512, 1024, 1280, 1518]
CONFIGS = ["notap", "mirror", "vtap", "vtap-snaplen128", "vtap-sample8", "vtap-vxlan"]
SWEEP_CONFIGS = ["notap", "mirror", "vtap"]  # the offered-load sweep: without budgets
BUDGETS = {"vtap": {}, "vtap-snaplen128": {"snaplen": 128}, "vtap-sample8": {"sample": 8},
           "vtap-vxlan": {"transport": "vxlan"}}  # the monitor is then a VXLAN collector
FLOWS = 1000  # source ports 1000-1999: sampling picks flows, so there must be many
# An underlay carries tunnelled copies only with room for the outer headers: the monitor's
# link (the VXLAN collector's) gets a larger MTU, as a tunnel's underlay needs; at 1500 the
# 1,568-byte outer packets of 1518-byte frames were dropped at the collector's port.
COLLECTOR_MTU = 9000
BRIDGE = "tb0"
UDP_DPORT = 5001


@dataclass
class Host:
    name: str
    index: int

    @property
    def ns(self) -> str:
        return f"vtb-{self.name}"

    @property
    def dev(self) -> str:  # inside the namespace
        return f"{self.name}-eth0"

    @property
    def port(self) -> str:  # the switch side
        return f"{self.name}-sw"

    @property
    def mac(self) -> str:
        return f"00:00:00:00:01:{self.index:02x}"

    @property
    def ip(self) -> str:
        return f"10.1.0.{self.index}"

    @property
    def sink_ip(self) -> str:
        """Where test traffic to this host is addressed: not an address it owns."""
        return f"10.1.1.{self.index}"


def sh(*args: str, check: bool = True) -> str:
    res = subprocess.run(args, capture_output=True, text=True)
    if check and res.returncode:
        raise RuntimeError(f"{' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def netns(host: Host, *args: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", host.ns, *args, check=check)


def _kv(prefix: str, text: str) -> dict[str, int]:
    out = {}
    for item in text.split(","):
        if "=" in item:
            k, v = item.split("=")
            v = v.strip()
            if v.isdigit():
                out[prefix + k.strip().replace(" ", "_")] = int(v)
    return out


def counters(host: Host) -> dict[str, int]:
    """The host's traffic, read at the switch-side veth (in this namespace, no process to
    spawn): what the host sent is that end's rx, what it was given is that end's tx."""
    base = Path(f"/sys/class/net/{host.port}/statistics")
    return {
        "tx_packets": int((base / "rx_packets").read_text()),
        "rx_packets": int((base / "tx_packets").read_text()),
        "rx_bytes": int((base / "tx_bytes").read_text()),  # frames without their FCS
    }


@dataclass
class Testbed:
    """Namespaces on one bridge of a private OVS, run by `vtap serve`."""

    workdir: Path
    pairs: int = 1
    ports: str = "afpacket"  # afpacket | afxdp | dpdk (OVS-DPDK, each port a DPDK AF_PACKET port on its veth)
    pmd_mask: str = "0x2"
    hosts: list[Host] = field(default_factory=list)
    afxdp_error: str | None = None

    def __post_init__(self) -> None:
        self.ovs = PrivateOVS(self.workdir / "ovs", dpdk=self.ports == "dpdk")
        self.ctl = ControllerProcess(self.workdir / "state", self.workdir / "controller.log",
                                     ("--tunnels", "local", "--tunnel-sources", "10.1.0.0/24"))
        names = []
        for i in range(self.pairs):
            names += [f"snd{i + 1}", f"rcv{i + 1}"]
        names.append("mon")
        self.hosts = [Host(n, i + 1) for i, n in enumerate(names)]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def start(self) -> Testbed:
        # OVS's AF_PACKET ports take the default receive buffer (~208 KiB), which a
        # rate-limited generator's bursts overflow even at low average load; give the
        # ports 8 MiB for the run, and restore the machine's values afterwards.
        # Likewise the per-CPU backlog a veth delivers into (1000 frames by default).
        self._sysctl = {k: sh("sysctl", "-n", k).strip() for k in ("net.core.rmem_default", "net.core.netdev_max_backlog")}
        sh("sysctl", "-qw", "net.core.rmem_default=8388608", "net.core.netdev_max_backlog=100000")
        self.ovs.start()
        self.ovs.export()
        try:
            self.ctl.start()
            self.ovs.vsctl("add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev", "fail_mode=secure",
                           "protocols=OpenFlow13", "other-config:disable-in-band=true",
                           "other-config:datapath-id=00000000000000b0")
            if self.ports in ("afxdp", "dpdk"):
                self.ovs.vsctl("set", "Open_vSwitch", ".", f"other_config:pmd-cpu-mask={self.pmd_mask}")
            for h in self.hosts:
                self._add_host(h)
            self.ofport = {h.name: int(self.ovs.vsctl("get", "interface", h.port, "ofport")) for h in self.hosts}
            self.ovs.vsctl("set-controller", BRIDGE, f"tcp:127.0.0.1:{self.ctl.of_port}")
            self._wait_synced()
            # Every host speaks once, so the controller knows where it is.
            for h in self.hosts:
                for other in self.hosts:
                    if other is not h:
                        netns(h, "ping", "-c1", "-W1", other.ip, check=False)
                        break
            self._wait_hosts()
            return self
        except BaseException:
            self.close()
            raise

    def _add_host(self, h: Host) -> None:
        sh("ip", "netns", "del", h.ns, check=False)
        sh("ip", "link", "del", h.port, check=False)
        sh("ip", "netns", "add", h.ns)
        sh("ip", "link", "add", h.dev, "type", "veth", "peer", "name", h.port)
        if h.name == "mon":  # the collector's link carries tunnelled copies: 1518 B + 50 B of VXLAN
            sh("ip", "link", "set", h.dev, "mtu", str(COLLECTOR_MTU))
            sh("ip", "link", "set", h.port, "mtu", str(COLLECTOR_MTU))
        sh("ip", "link", "set", h.dev, "netns", h.ns)
        netns(h, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        netns(h, "ip", "link", "set", h.dev, "address", h.mac)
        netns(h, "ip", "addr", "add", f"{h.ip}/24", "dev", h.dev)
        netns(h, "ip", "link", "set", "lo", "up")
        netns(h, "ip", "link", "set", h.dev, "up")
        sh("sysctl", "-qw", f"net.ipv6.conf.{h.port}.disable_ipv6=1")
        sh("ip", "link", "set", h.port, "up")
        if self.ports == "dpdk":
            index = self.hosts.index(h)
            # No mtu_request: DPDK's AF_PACKET driver refuses to change it (EINVAL), and
            # OVS-DPDK sends a tunnelled 1518 B copy (1568 B) through a 1500 MTU port anyway:
            # its mbufs hold 2 KiB, and the veth behind takes 9000.
            self.ovs.vsctl("add-port", BRIDGE, h.port, "--", "set", "interface", h.port, "type=dpdk",
                           f"options:dpdk-devargs=net_af_packet{index},iface={h.port}")
            dpdk_port_up(self.ovs.vsctl, h.port)
            return
        if self.ports == "afxdp" and self.afxdp_error is None:
            try:
                self.ovs.vsctl("add-port", BRIDGE, h.port, "--", "set", "interface", h.port, "type=afxdp")
                if self.ovs.vsctl("get", "interface", h.port, "ofport").strip() == "-1":
                    err = self.ovs.vsctl("get", "interface", h.port, "error").strip()
                    raise RuntimeError(err)
                return
            except RuntimeError as exc:
                self.afxdp_error = f"AF_XDP port could not start ({exc}); fell back to plain AF_PACKET ports"
                self.ovs.vsctl("--if-exists", "del-port", BRIDGE, h.port)
                for done in self.hosts[: self.hosts.index(h)]:
                    self.ovs.vsctl("set", "interface", done.port, "type=system")
        self.ovs.vsctl("add-port", BRIDGE, h.port)

    def _wait_synced(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.ctl.http.get("/api/v1/health").json()
            if health["switches"] == 1 and health["switches_in_sync"] == 1:
                return
            time.sleep(0.2)
        raise RuntimeError("bridge did not sync with the controller")

    def _wait_hosts(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            known = {h["mac"] for h in self.ctl.http.get("/api/v1/hosts").json()}
            if all(h.mac in known for h in self.hosts):
                return
            for h in self.hosts:
                netns(h, "ping", "-c1", "-W1", self.hosts[-1 if h is not self.hosts[-1] else 0].ip, check=False)
        raise RuntimeError("hosts not learned by the controller")

    def port_stats(self) -> dict[int, dict[str, int]]:
        """OVS's own per-port counters, read from the datapath now (OVSDB's copy lags by seconds)."""
        out: dict[int, dict[str, int]] = {}
        port = None
        for line in self.ovs.ofctl("dump-ports", BRIDGE).splitlines():
            line = line.strip()
            if line.startswith("port"):
                head, _, rest = line.partition(":")
                name = head.split()[1]
                port = int(name) if name.isdigit() else None
                if port is not None:
                    out[port] = {}
                    out[port].update(_kv("rx_", rest.strip()[2:]))
            elif line.startswith("tx") and port is not None:
                out[port].update(_kv("tx_", line[2:]))
        return out

    def close(self) -> None:
        try:
            if self.ctl.proc and self.ctl.proc.poll() is None:
                self.ctl.stop()
        finally:
            self.ovs.stop()
            self.ovs.restore_env()
            for key, value in getattr(self, "_sysctl", {}).items():
                sh("sysctl", "-qw", f"{key}={value}")
            for h in self.hosts:
                sh("ip", "netns", "del", h.ns, check=False)
                sh("ip", "link", "del", h.port, check=False)

    # ---- configurations ---------------------------------------------------------------

    def purge(self) -> None:
        """Drop the datapath's cached flows, so the next run starts from the new configuration.

        Seen here: a Mirror row added while a megaflow for the same traffic was cached
        did not apply to that traffic for seconds.
        """
        self.ovs.appctl("revalidator/purge")

    def configure(self, config: str) -> None:
        self._configure(config)
        self.purge()

    def _configure(self, config: str) -> None:
        if config == "mirror":
            senders = [h for h in self.hosts if h.name.startswith("snd")]
            args = []
            for i, h in enumerate(senders):
                args += ["--", f"--id=@s{i}", "get", "port", h.port]
            args += ["--", "--id=@m", "get", "port", self.host("mon").port,
                     "--", "--id=@mir", "create", "mirror", "name=bench",
                     "select-src-port=" + ",".join(f"@s{i}" for i in range(len(senders))), "output-port=@m",
                     "--", "set", "bridge", BRIDGE, "mirrors=@mir"]
            self.ovs.vsctl(*args)
        elif config in BUDGETS:
            mon = self.host("mon")
            for i in range(self.pairs):
                snd, rcv = self.host(f"snd{i + 1}"), self.host(f"rcv{i + 1}")
                resp = self.ctl.http.post("/api/v1/taps", json={
                    "name": f"bench{i + 1}", "src_ip": snd.ip, "dst_ip": rcv.sink_ip, "ip_proto": "udp", "dst_port": UDP_DPORT,
                    "monitor_ip": mon.ip, **BUDGETS[config]})
                resp.raise_for_status()
            self._wait_taps("active")

    def unconfigure(self, config: str) -> None:
        self._unconfigure(config)
        self.purge()

    def _unconfigure(self, config: str) -> None:
        if config == "mirror":
            self.ovs.vsctl("clear", "bridge", BRIDGE, "mirrors")
        elif config in BUDGETS:
            for tap in self.ctl.http.get("/api/v1/taps").json():
                self.ctl.http.delete(f"/api/v1/taps/{tap['id']}")
            deadline = time.monotonic() + 20
            while "group_id" in self.ovs.ofctl("dump-groups", BRIDGE) and time.monotonic() < deadline:
                time.sleep(0.1)

    def _wait_taps(self, status: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            taps = self.ctl.http.get("/api/v1/taps").json()
            if taps and all(t["status"] == status for t in taps):
                return
            time.sleep(0.1)
        raise RuntimeError(f"TAP policies not {status}")

    # ---- traffic -------------------------------------------------------------------------

    def trafgen_conf(self, snd: Host, rcv: Host, size: int) -> Path:
        payload = max(0, size - 4 - 42)
        path = self.workdir / f"{snd.name}-{size}.cfg"
        path.write_text(
            "{ eth(da=%s, sa=%s), ipv4(saddr=%s, daddr=%s, ttl=64), udp(sp=dinc(1000, %d), dp=%d), fill(0x41, %d) }\n"
            % (rcv.mac, snd.mac, snd.ip, rcv.sink_ip, 1000 + FLOWS - 1, UDP_DPORT, payload)
        )
        return path

    def measure(self, size: int, window: float, warmup: float, rate_pps: int | None = None) -> dict:
        """Run every pair's generator, read counters over the window."""
        procs = []
        for i in range(self.pairs):
            snd, rcv = self.host(f"snd{i + 1}"), self.host(f"rcv{i + 1}")
            cmd = ["ip", "netns", "exec", snd.ns, "trafgen", "--dev", snd.dev, "--conf", str(self.trafgen_conf(snd, rcv, size)),
                   "--cpus", "1", "--no-sock-mem"]
            if rate_pps:
                cmd += pacing(rate_pps)
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True))
        try:
            time.sleep(warmup)
            before = self._snapshot()
            t0 = time.monotonic()
            time.sleep(window)
            after = self._snapshot()
            dt = time.monotonic() - t0
        finally:
            for p in procs:
                os.killpg(p.pid, signal.SIGINT)
            for p in procs:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        return self._rates(before, after, dt, size)

    def datapath_lookups(self) -> dict[str, int]:
        """Packets the userspace datapath processed (hit + missed) and lost to upcalls."""
        for line in self.ovs.appctl("dpctl/show").splitlines():
            if "lookups:" in line:
                return {k: int(v) for k, v in (kv.split(":") for kv in line.split("lookups:")[1].split())}
        return {}

    def _snapshot(self) -> dict:
        ports = self.port_stats()
        snap = {h.name: {"ns": counters(h), "ovs": ports.get(self.ofport[h.name], {})} for h in self.hosts}
        snap["dp"] = {"ns": {}, "ovs": self.datapath_lookups()}
        return snap

    def _rates(self, before: dict, after: dict, dt: float, size: int) -> dict:
        def d(host: str, side: str, key: str) -> int:
            return after[host][side].get(key, 0) - before[host][side].get(key, 0)

        out: dict = {"window_s": round(dt, 3)}
        for i in range(self.pairs):
            s, r = f"snd{i + 1}", f"rcv{i + 1}"
            suffix = "" if self.pairs == 1 else str(i + 1)
            out[f"tx_pps{suffix}"] = d(s, "ns", "tx_packets") / dt
            out[f"ovs_in_pps{suffix}"] = d(s, "ovs", "rx_pkts") / dt
            out[f"ovs_rx_dropped{suffix}"] = d(s, "ovs", "rx_drop")
            out[f"rcv_pps{suffix}"] = d(r, "ns", "rx_packets") / dt
            out[f"rcv_tx_dropped_ovs{suffix}"] = d(r, "ovs", "tx_drop")
        processed = d("dp", "ovs", "hit") + d("dp", "ovs", "missed")
        offered = sum(d(f"snd{i + 1}", "ns", "tx_packets") for i in range(self.pairs))
        out["dp_processed_pps"] = processed / dt
        # Sent into OVS's ports but never processed by its datapath: overflowed the
        # ports' socket buffers while the forwarding thread was busy.
        out["socket_dropped_pps"] = max(0, offered - processed) / dt
        out["upcall_lost"] = d("dp", "ovs", "lost")
        out["mon_pps"] = d("mon", "ns", "rx_packets") / dt
        out["mon_tx_dropped_ovs"] = d("mon", "ovs", "tx_drop")
        for key in [k for k in out if k.endswith("_pps") or k[:-1].endswith("_pps")]:
            out[key.replace("pps", "mbps")] = out[key] * size * 8 / 1e6
        # From the bytes it got (cut copies are shorter than `size`), with the FCS as above.
        out["mon_mbps"] = (d("mon", "ns", "rx_bytes") + 4 * d("mon", "ns", "rx_packets")) * 8 / dt / 1e6
        return out

    def cpu_busy(self, seconds: float = 1.0) -> dict[str, float]:
        """Per-thread CPU of ovs-vswitchd over a second: which thread is the bottleneck."""
        pid = int((self.ovs.dir / "ovs-vswitchd.pid").read_text())

        def ticks() -> dict[str, int]:
            out = {}
            for tid in os.listdir(f"/proc/{pid}/task"):
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2 :].split()
                out[f"{name}:{tid}"] = int(fields[11]) + int(fields[12])
            return out

        a = ticks()
        time.sleep(seconds)
        b = ticks()
        hz = os.sysconf("SC_CLK_TCK")
        busy = {k: round(100 * (b[k] - a.get(k, 0)) / hz / seconds, 1) for k in b}
        return {k: v for k, v in sorted(busy.items(), key=lambda kv: -kv[1]) if v >= 5}


GAP_OVERHEAD_US = 18  # trafgen's own time per frame when it sleeps between frames (measured here)
GAP_MAX_PPS = 40_000


def pacing(rate_pps: int) -> list[str]:
    """trafgen flags for an offered rate. Up to ~40 kpps, a gap between single frames
    (smooth); above, trafgen's rate limit, which sends bursts of ~256 frames that OVS's
    AF_PACKET ports partly drop even at low average load (the achieved rate is reported)."""
    if rate_pps <= GAP_MAX_PPS:
        return ["--gap", f"{max(1, int(1e6 / rate_pps) - GAP_OVERHEAD_US)}us"]
    return ["--rate", f"{rate_pps}pps"]


def _progress(done: int, total: int, label: str) -> None:
    width = 30
    filled = int(width * done / total)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<40}")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def _summary(samples: list[dict]) -> dict:
    keys = samples[0].keys()
    out = {}
    for k in keys:
        vals = [s[k] for s in samples]
        out[k] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    return out


@contextmanager
def _configured(tb: Testbed, config: str) -> Iterator[None]:
    """`config` in place on the testbed for the block, taken down after (also on failure)."""
    tb.configure(config)
    try:
        yield
    finally:
        tb.unconfigure(config)


def run(*, ports: str, sizes: list[int], reps: int, window: float, warmup: float, sweep_size: int,
        sweep_loads: list[float], pmd_masks: list[str], workdir: Path) -> dict:
    """Testbed #1 (sizes x configs, then an offered-load sweep) and Testbed #2 (per PMD mask)."""
    result: dict = {"ports": ports, "sizes": sizes, "reps": reps, "window_s": window, "testbed1": {}, "sweep": {},
                    "testbed2": {}, "notes": []}
    tb = Testbed(workdir / "tb1", pairs=1, ports=ports).start()
    try:
        if tb.afxdp_error:
            result["notes"].append(tb.afxdp_error)
            result["ports"] = "afpacket"
        result["testbed1"], result["threads_busy_pct"] = _testbed1(tb, sizes, reps, window, warmup)

        # Offered-load sweep at one size, relative to the no-TAP capacity just measured.
        capacity = result["testbed1"]["notap"][str(sweep_size)]["rcv_pps"]["median"] if str(sweep_size) in result["testbed1"]["notap"] else None
        if capacity:
            result["sweep"] = {"size": sweep_size, "capacity_pps": capacity,
                               "data": _sweep(tb, sweep_size, sweep_loads, capacity, reps, window, warmup)}
    finally:
        tb.close()

    # Testbed #2: two pairs, one monitor; vtap only (plus no TAP), per PMD mask.
    for mask in pmd_masks:
        key, summaries = _testbed2(workdir, mask, ports, sizes, reps, window, warmup)
        result["testbed2"][key] = summaries
        if key == "afpacket":
            break  # PMD masks mean nothing without PMD ports
    return result


def _testbed1(tb: Testbed, sizes: list[int], reps: int, window: float, warmup: float) -> tuple[dict, dict]:
    """Every configuration at every size, interleaved: (the summaries by configuration and
    size, the busy vswitchd threads of each configuration at the first size)."""
    total = len(sizes) * reps * len(CONFIGS)
    step = 0
    raw: dict = {c: {s: [] for s in sizes} for c in CONFIGS}
    busy: dict = {}
    for size in sizes:
        for rep in range(reps):
            for config in CONFIGS:  # interleaved: A B C A B C ...
                _progress(step, total, f"testbed 1: {config} {size} B, run {rep + 1}/{reps}")
                with _configured(tb, config):
                    raw[config][size].append(tb.measure(size, window, warmup))
                    if rep == 0 and size == sizes[0]:
                        busy[config] = _busy_during(tb, size, warmup)
                step += 1
    _progress(total, total, "testbed 1 done")
    return {c: {str(s): _summary(raw[c][s]) for s in sizes} for c in CONFIGS}, busy


def _sweep(tb: Testbed, size: int, loads: list[float], capacity: float, reps: int, window: float,
           warmup: float) -> dict:
    """The configurations without budgets at shares of `capacity` (1.0: unthrottled):
    summaries by configuration and load."""
    total = len(loads) * reps * len(SWEEP_CONFIGS)
    step = 0
    raw_sweep: dict = {c: {str(l): [] for l in loads} for c in SWEEP_CONFIGS}
    for load in loads:
        for rep in range(reps):
            for config in SWEEP_CONFIGS:
                _progress(step, total, f"sweep: {config} at {int(load * 100)}% of {int(capacity)} pps")
                with _configured(tb, config):
                    rate = None if load >= 1.0 else int(capacity * load)
                    raw_sweep[config][str(load)].append(tb.measure(size, window, warmup, rate))
                step += 1
    _progress(total, total, "sweep done")
    return {c: {l: _summary(v) for l, v in raw_sweep[c].items()} for c in SWEEP_CONFIGS}


def _testbed2(workdir: Path, mask: str, ports: str, sizes: list[int], reps: int, window: float,
              warmup: float) -> tuple[str, dict]:
    """Testbed #2 with one PMD mask, vtap at every size: (its key, the summaries by size)."""
    tb2 = Testbed(workdir / f"tb2-{mask}", pairs=2, ports=ports, pmd_mask=mask).start()
    try:
        key = f"pmd={mask}" if tb2.ports == "dpdk" or (tb2.ports == "afxdp" and not tb2.afxdp_error) else "afpacket"
        total = len(sizes) * reps
        raw2: dict = {str(s): [] for s in sizes}
        step = 0
        for size in sizes:
            for rep in range(reps):
                _progress(step, total, f"testbed 2 ({key}): vtap {size} B, run {rep + 1}/{reps}")
                with _configured(tb2, "vtap"):
                    raw2[str(size)].append(tb2.measure(size, window, warmup))
                step += 1
        _progress(total, total, f"testbed 2 ({key}) done")
        return key, {s: _summary(v) for s, v in raw2.items()}
    finally:
        tb2.close()


def _busy_during(tb: Testbed, size: int, warmup: float) -> dict[str, float]:
    """Thread CPU while the generator runs at full speed (for the bottleneck note)."""
    snd, rcv = tb.host("snd1"), tb.host("rcv1")
    p = subprocess.Popen(["ip", "netns", "exec", snd.ns, "trafgen", "--dev", snd.dev, "--conf", str(tb.trafgen_conf(snd, rcv, size)),
                          "--cpus", "1", "--no-sock-mem"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        time.sleep(warmup)
        return tb.cpu_busy(1.0)
    finally:
        os.killpg(p.pid, signal.SIGINT)
        p.wait(timeout=5)


def main(args) -> int:
    from vtap.bench.report import write_dataplane

    quick = args.quick
    sizes = [64, 1518] if quick else SIZES
    reps = 1 if quick else args.reps
    window = 1.0 if quick else args.window
    warmup = 0.5
    # Below saturation: shares of the no-TAP capacity that fine pacing can offer on
    # plain ports; 1.0 is the generator unthrottled.
    loads = [0.1, 1.0] if quick else [0.05, 0.1, 0.15, 0.2, 1.0]
    masks = ["0x2"] if quick else ["0x2", "0x3"]
    workdir = Path(tempfile.mkdtemp(prefix="vtap-bench-dp-"))
    started = time.monotonic()
    result = run(ports="dpdk" if args.datapath == "dpdk" else args.ports, sizes=sizes, reps=reps, window=window, warmup=warmup, sweep_size=sizes[0],
                 sweep_loads=loads, pmd_masks=masks, workdir=workdir)
    result["quick"] = quick
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"dataplane-{result['ports']}{'-quick' if quick else ''}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = write_dataplane(result, out, name)
    print(md)
    return 0
