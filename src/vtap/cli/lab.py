"""`vtap lab` and `vtap bench`: build a Mininet lab on a private OVS, and the benches
(data plane, control plane, foundation, relay) that measure one."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def cmd_lab(args: argparse.Namespace) -> int:
    from vtap.lab.run import lab, lab_cluster

    if args.cluster is not None:
        if args.cluster < 1 or args.etcd_members < 1:
            print("vtap lab: --cluster and --etcd-members take a number of at least 1", file=sys.stderr)
            return 2
        return lab_cluster(args.topo, args.cluster, args.etcd_members, args.run, args.ready_timeout)

    api = args.api
    if api is None:
        host = args.controller.rpartition(":")[0] or "127.0.0.1"
        api = f"http://{host}:8080"
    from vtap.lab.dpdk import DpdkUnavailable
    from vtap.lab.ids import IdsUnavailable

    try:
        return lab(args.topo, args.controller, args.run, None if args.no_wait else api, args.ready_timeout, args.of_tls,
                   args.chatter, args.join, args.datapath, args.ids)
    except DpdkUnavailable as exc:
        print(f"vtap lab: --datapath dpdk: {exc}", file=sys.stderr)
        return 1
    except IdsUnavailable as exc:
        print(f"vtap lab: --ids: {exc}", file=sys.stderr)
        return 1


def cmd_bench_dataplane(args: argparse.Namespace) -> int:
    from vtap.bench.dataplane import main as dataplane

    return dataplane(args)


def cmd_bench_seed(args: argparse.Namespace) -> int:
    from vtap.bench.seed import main as seed

    return seed(args)


def cmd_bench_controlplane(args: argparse.Namespace) -> int:
    from vtap.bench.controlplane import main as controlplane

    if args.cluster:
        from vtap.bench.cluster import main as cluster

        return cluster(args)

    return controlplane(args)


def cmd_bench_foundation(args: argparse.Namespace) -> int:
    from vtap.bench.foundation import main as foundation

    return foundation(args)


def cmd_bench_relay(args: argparse.Namespace) -> int:
    from vtap.bench.relay import main as relay

    return relay(args)


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


def cmd_bench_chaos(args: argparse.Namespace) -> int:
    from vtap.bench.chaos import run

    replay = Path(args.replay) if args.replay else None
    if replay is not None and not replay.is_file():
        print(f"vtap bench chaos: --replay {replay}: no such file", file=sys.stderr)
        return 2
    # SIGTERM ends the soak as Ctrl-C does: through the lab's teardown (OVS, etcd, the
    # controllers and the hosts stopped), not leaving them running.
    signal.signal(signal.SIGTERM, _interrupted)
    report = run(args.rounds, args.seed, args.cluster, Path(args.out), replay)
    print((Path(args.out) / "chaos.md").read_text())
    return 1 if report["violations"] else 0


def add_lab_parser(sub: argparse._SubParsersAction) -> None:
    l = sub.add_parser("lab", help="build a Mininet topology on a private userspace OVS")
    l.add_argument("--topo", required=True,
                   help="single,N | linear,N | tree,DEPTH,FANOUT | fattree,K | ring,N (with chords) | random,N,SEED (3-regular)")
    l.add_argument("--chatter", action="store_true",
                   help="every host sends ARP, IPv6 ND, mDNS and LLDP from the first second (before any switch connects)")
    l.add_argument("--join", default=None, metavar="random:SEED",
                   help="switches get their controller one by one, in a seeded random order with gaps (default: all at once)")
    l.add_argument("--controller", default="127.0.0.1:6653", help="controller HOST:PORT (default 127.0.0.1:6653)")
    l.add_argument("--datapath", choices=["netdev", "dpdk"], default="netdev",
                   help="netdev: OVS's userspace datapath on AF_PACKET ports (default); dpdk: OVS-DPDK, every port a "
                        "DPDK port polled by a PMD thread, on 1 GiB of hugepages it reserves and gives back")
    l.add_argument("--api", default=None, help="controller REST API to wait on (default http://HOST:8080)")
    l.add_argument("--no-wait", action="store_true", help="do not wait for the controller to see the topology")
    l.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for the controller (default 60)")
    l.add_argument("--run", default=None, help="run this command (e.g. pingall) and exit with its status")
    l.add_argument("--of-tls", metavar="PKI_DIR", default=None,
                   help="OpenFlow over TLS with certificates from ovs-pki in PKI_DIR (made there if missing)")
    l.add_argument("--cluster", type=int, default=None, metavar="N",
                   help="start an etcd and N `vtap serve` instances on loopback too, every switch connected to all "
                        "(ignores --controller/--api)")
    l.add_argument("--etcd-members", type=int, default=1, help="with --cluster: etcd members to start (default 1)")
    l.add_argument("--ids", action="append", default=[], metavar="HOST",
                   help="start Suricata on this host (a monitor), reading its interface, alerting on the lab's canary "
                        "rule; repeatable")
    l.set_defaults(func=cmd_lab)


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="measure: the seed's data-plane experiments, the control plane at scale, "
                          "bring-up and flow-mod rates")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    dp = bsub.add_parser("dataplane", help="Testbeds #1 and #2: no TAP vs OVS port mirror vs vtap, by packet size")
    dp.add_argument("--ports", choices=["afpacket", "afxdp"], default="afpacket", help="OVS port type (default afpacket)")
    dp.add_argument("--datapath", choices=["netdev", "dpdk"], default="netdev",
                    help="dpdk: OVS-DPDK, every port polled by a PMD thread (--ports is then moot)")
    dp.add_argument("--hosts", choices=["guests", "namespaces"], default="guests",
                    help="with --datapath dpdk: guests (default): the hosts are DPDK guests (dpdk-testpmd, virtio-user) on "
                         "vhost-user ports, as the seed's VMs; namespaces: network namespaces on veths, each switch port "
                         "a DPDK AF_PACKET port")
    dp.add_argument("--reps", type=int, default=3, help="repetitions per configuration and size (default 3)")
    dp.add_argument("--window", type=float, default=2.0, help="measurement window in seconds (default 2)")
    dp.add_argument("--quick", action="store_true", help="a ~1-minute smoke run: 2 sizes, 1 repetition, short windows")
    dp.add_argument("--out", default="bench/results", help="where JSON, Markdown and plots go (default bench/results)")
    dp.set_defaults(func=cmd_bench_dataplane)

    sd = bsub.add_parser("seed", help="the seed's Tables 5.1-5.6 beside our dataplane runs, as ratios, with one plot "
                                      "per table (reads what `vtap bench dataplane` wrote)")
    sd.add_argument("--results", default="bench/results", help="where the dataplane-*.json are (default bench/results)")
    sd.add_argument("--out", default=None, help="where seed-tables.md and the plots go (default: --results)")
    sd.add_argument("--quick", action="store_true", help="compare the --quick runs (dataplane-*-quick.json)")
    sd.set_defaults(func=cmd_bench_seed)

    cp = bsub.add_parser("controlplane", help="TAP policies at scale on fattree,4: latency, apply time, failover, restart")
    cp.add_argument("--latency", type=int, default=200, help="policies for the POST -> active latency (default 200)")
    cp.add_argument("--sizes", default="1000,10000", help="cumulative policy counts to apply (default 1000,10000)")
    cp.add_argument("--one-bridge", action="store_true", help="every policy taps at h1's edge switch")
    cp.add_argument("--topo", default="fattree,4", help="the fabric (default fattree,4; fattree,8: 80 switches, 128 hosts)")
    cp.add_argument("--quick", action="store_true", help="a short smoke run (20 latency samples, 200 policies)")
    cp.add_argument("--no-trace", action="store_true",
                    help="no traced run for the memory by structure (traced, fattree,8 could not keep its switches connected)")
    cp.add_argument("--cluster", action="store_true",
                    help="three instances on etcd instead: POST -> active through a follower, leader failover under 1,000 pps")
    cp.add_argument("--out", default="bench/results", help="where JSON and Markdown go (default bench/results)")
    cp.set_defaults(func=cmd_bench_controlplane)

    fd = bsub.add_parser("foundation", help="fat-tree convergence on a chatty network, controller RSS; flow-mods per second vs ovs-ofctl")
    fd.add_argument("--fattrees", default="4,6,8", help="fat-tree sizes k to bring up with chatter (default 4,6,8; --quick: 4)")
    fd.add_argument("--sizes", default="1000,10000", help="rules per flow-mod run (default 1000,10000)")
    fd.add_argument("--repeat", type=int, default=3, help="runs per size and mode; the median is reported (default 3)")
    fd.add_argument("--quick", action="store_true", help="a short smoke run: 100 and 1,000 rules, one run each")
    fd.add_argument("--out", default="bench/results", help="where JSON and Markdown go (default bench/results)")
    fd.set_defaults(func=cmd_bench_foundation)

    rl = bsub.add_parser("relay", help="LLDP transit of real links against a live relay between two hosts, idle and loaded")
    rl.add_argument("--seconds", type=float, default=20.0, help="sampling time per phase (default 20)")
    rl.add_argument("--out", default="bench/results", help="where JSON and Markdown go (default bench/results)")
    rl.set_defaults(func=cmd_bench_relay)

    ch = bsub.add_parser("chaos", help="faults in any order on fattree,4 under a tapped workload; invariants after each round")
    ch.add_argument("--rounds", type=int, default=30, help="rounds of one or two faults each (default 30)")
    ch.add_argument("--seed", type=int, default=1, help="what draws the schedule (default 1)")
    ch.add_argument("--cluster", action="store_true",
                    help="three instances on three etcd members: members killed and paused, etcd members stopped")
    ch.add_argument("--replay", default=None, metavar="FILE", help="run a saved schedule.json again, exactly")
    ch.add_argument("--out", default="bench/results/chaos", help="where chaos.json, chaos.md and schedule.json go")
    ch.set_defaults(func=cmd_bench_chaos)
