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
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vtap.bench.testbed import Testbed

SIZES = [64, 128, 256, 512, 1024, 1280, 1518]
CONFIGS = ["notap", "mirror", "vtap", "vtap-snaplen128", "vtap-sample8", "vtap-vxlan"]
SWEEP_CONFIGS = ["notap", "mirror", "vtap"]  # the offered-load sweep: without budgets

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
    tb = Testbed(workdir / "tb1", pairs=1, ports=ports, sizes=tuple(sizes)).start()
    try:
        if tb.afxdp_error:
            result["notes"].append(tb.afxdp_error)
            result["ports"] = "afpacket"
        result["testbed1"], result["threads_busy_pct"] = _testbed1(tb, sizes, reps, window, warmup)

        # Offered-load sweep at one size, relative to the no-TAP capacity just measured.
        capacity = result["testbed1"]["notap"][str(sweep_size)]["rcv_pps"]["median"] if str(sweep_size) in result["testbed1"]["notap"] else None
        if tb.guest is not None:
            result["notes"].append("no offered-load sweep: the guests send at full speed only (DPDK's pcap driver "
                                   "does not pace)")
        elif capacity:
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
    tb2 = Testbed(workdir / f"tb2-{mask}", pairs=2, ports=ports, pmd_mask=mask, sizes=tuple(sizes)).start()
    try:
        key = f"pmd={mask}" if tb2.ports in ("dpdk", "vhost") or (tb2.ports == "afxdp" and not tb2.afxdp_error) else "afpacket"
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
    with tb.traffic(size):
        time.sleep(warmup)
        return tb.cpu_busy(1.0)


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
    ports = args.ports
    if args.datapath == "dpdk":
        ports = "vhost" if args.hosts == "guests" else "dpdk"
    result = run(ports=ports, sizes=sizes, reps=reps, window=window, warmup=warmup, sweep_size=sizes[0],
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
