"""The seed's testbed on this machine: sender, receiver(s) and monitor on one bridge of a
private Open vSwitch, run by `vtap serve`, with their counters and the bench's
configurations (no TAP, OVS port mirror, vtap policies with budgets or a tunnel).

The hosts are network namespaces on veths (ports `afpacket`, `afxdp`, or `dpdk`: DPDK
AF_PACKET ports on the veths), or DPDK guests on vhost-user ports (`vhost`,
`vtap.bench.guests`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vtap.bench.guests import Guest, VNic, udp_frames
from vtap.lab.dpdk import dpdk_port_up
from vtap.lab.ovs import PrivateOVS
from vtap.lab.process import ControllerProcess

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
    # afpacket | afxdp | dpdk (OVS-DPDK, each port a DPDK AF_PACKET port on its veth) |
    # vhost (OVS-DPDK, the hosts DPDK guests on vhost-user ports)
    ports: str = "afpacket"
    pmd_mask: str = "0x2"
    sizes: tuple[int, ...] = ()  # the frame sizes guests will send (vhost: their streams are made at start)
    hosts: list[Host] = field(default_factory=list)
    afxdp_error: str | None = None
    guest: Guest | None = None

    def __post_init__(self) -> None:
        self.ovs = PrivateOVS(self.workdir / "ovs", dpdk=self.ports in ("dpdk", "vhost"))
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
            if self.ports in ("afxdp", "dpdk", "vhost"):
                self.ovs.vsctl("set", "Open_vSwitch", ".", f"other_config:pmd-cpu-mask={self.pmd_mask}")
            for h in self.hosts:
                self._add_host(h)
            if self.ports == "vhost":
                self.guest = self._make_guest().start()
                self.guest.wait_linked()
            self.ofport = {h.name: int(self.ovs.vsctl("get", "interface", h.port, "ofport")) for h in self.hosts}
            self.ovs.vsctl("set-controller", BRIDGE, f"tcp:127.0.0.1:{self.ctl.of_port}")
            self._wait_synced()
            # Every host speaks once, so the controller knows where it is.
            if self.guest is not None:
                self.guest.announce()
            else:
                self._speak()
            self._wait_hosts()
            return self
        except BaseException:
            self.close()
            raise

    def _vnic(self, h: Host) -> VNic:
        return VNic(h.name, h.mac, h.ip, self.workdir / f"{h.name}.sock")

    def _make_guest(self) -> Guest:
        """One guest holding every host's NIC, each sender's frames at every size."""
        streams = {}
        for i in range(self.pairs):
            snd, rcv = self.host(f"snd{i + 1}"), self.host(f"rcv{i + 1}")
            for size in self.sizes:
                streams[(snd.name, size)] = udp_frames(self._vnic(snd), rcv.mac, rcv.sink_ip, UDP_DPORT,
                                                       range(1000, 1000 + FLOWS), size)
        return Guest(self.workdir, [self._vnic(h) for h in self.hosts], streams)

    def counters(self, h: Host) -> dict[str, int]:
        return self.guest.stats(h.name) if self.guest is not None else counters(h)

    def _add_host(self, h: Host) -> None:
        if self.ports == "vhost":  # OVS connects to the guest's socket, and keeps trying until it is there
            self.ovs.vsctl("add-port", BRIDGE, h.port, "--", "set", "interface", h.port, "type=dpdkvhostuserclient",
                           f"options:vhost-server-path={self._vnic(h).socket}")
            return
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
            # No mtu_request: DPDK's AF_PACKET driver refuses it (EINVAL; its largest frame is
            # 1518 B), so the 1,568 B outer packet of a tunnelled 1518 B copy is dropped at
            # the collector's port: the vxlan row at 1518 B shows it. Guests (vhost) take 9000.
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
                if self.guest is not None:
                    self.guest.quiet()
                return
            if self.guest is None:
                self._speak()
            else:
                time.sleep(0.2)  # a guest announces once; its ARP is on its way or lost
        missing = [h.name for h in self.hosts if h.mac not in known]
        raise RuntimeError(f"hosts not learned by the controller: {', '.join(missing)}")

    def _speak(self) -> None:
        for h in self.hosts:
            netns(h, "ping", "-c1", "-W1", self.hosts[-1 if h is not self.hosts[-1] else 0].ip, check=False)

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
            if self.guest is not None:
                self.guest.close()
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
            if config == "vtap-vxlan" and self.guest is not None:
                self._collector_mtu(COLLECTOR_MTU)
            for i in range(self.pairs):
                snd, rcv = self.host(f"snd{i + 1}"), self.host(f"rcv{i + 1}")
                resp = self.ctl.http.post("/api/v1/taps", json={
                    "name": f"bench{i + 1}", "src_ip": snd.ip, "dst_ip": rcv.sink_ip, "ip_proto": "udp", "dst_port": UDP_DPORT,
                    "monitor_ip": mon.ip, **BUDGETS[config]})
                resp.raise_for_status()
            self._wait_taps("active")

    def _collector_mtu(self, mtu: int) -> None:
        """A guest's port takes a larger MTU only while it is the VXLAN collector: measured
        here, OVS-DPDK delivered 64 B frames to a 9000-MTU vhost-user port at half the rate
        of a 1500-MTU one, so the monitor keeps 1500 for every other configuration."""
        port = self.host("mon").port
        self.ovs.vsctl("set", "interface", port, f"mtu_request={mtu}")
        deadline = time.monotonic() + 30
        while self.ovs.vsctl("get", "interface", port, "mtu").strip() != str(mtu):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{port} did not take MTU {mtu}")
            time.sleep(0.1)

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
            if config == "vtap-vxlan" and self.guest is not None:
                self._collector_mtu(1500)

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

    @contextmanager
    def traffic(self, size: int, rate_pps: int | None = None) -> Iterator[None]:
        """Every pair's sender sending `size`-byte frames for the block: at full speed, or
        at `rate_pps` (namespace hosts only)."""
        if self.guest is not None:
            if rate_pps:
                raise ValueError("guests send at full speed only (DPDK's pcap driver does not pace)")
            self.guest.send(size)
            try:
                yield
            finally:
                self.guest.quiet()
            return
        procs = []
        for i in range(self.pairs):
            snd, rcv = self.host(f"snd{i + 1}"), self.host(f"rcv{i + 1}")
            cmd = ["ip", "netns", "exec", snd.ns, "trafgen", "--dev", snd.dev, "--conf", str(self.trafgen_conf(snd, rcv, size)),
                   "--cpus", "1", "--no-sock-mem"]
            if rate_pps:
                cmd += pacing(rate_pps)
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True))
        try:
            yield
        finally:
            for p in procs:
                os.killpg(p.pid, signal.SIGINT)
            for p in procs:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)

    def measure(self, size: int, window: float, warmup: float, rate_pps: int | None = None) -> dict:
        """Run every pair's sender, read counters over the window."""
        with self.traffic(size, rate_pps):
            time.sleep(warmup)
            before = self._snapshot()
            t0 = time.monotonic()
            time.sleep(window)
            after = self._snapshot()
            dt = time.monotonic() - t0
        return self._rates(before, after, dt, size)

    def datapath_lookups(self) -> dict[str, int]:
        """Packets the userspace datapath processed (hit + missed) and lost to upcalls."""
        for line in self.ovs.appctl("dpctl/show").splitlines():
            if "lookups:" in line:
                return {k: int(v) for k, v in (kv.split(":") for kv in line.split("lookups:")[1].split())}
        return {}

    def _snapshot(self) -> dict:
        ports = self.port_stats()
        snap = {h.name: {"ns": self.counters(h), "ovs": ports.get(self.ofport[h.name], {})} for h in self.hosts}
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
