"""`vtap bench seed`: the seed's Tables 5.1-5.6 beside this machine's runs, as ratios.

The seed measured on its own hardware; absolute rates do not compare across machines,
ratios measured within one run do. So each of the seed's ratios (DPDK ÷ kernel path,
vtap ÷ port mirror, monitor ÷ receiver, 2 PMD ÷ 1 PMD) is set beside the same ratio from
`vtap bench dataplane` results: `vhost` (OVS-DPDK, DPDK guests on vhost-user ports: the
seed's set-up), `afxdp` and `afpacket` (OVS's userspace datapath on kernel sockets: this
machine has no OVS kernel module, so these stand for the seed's "normal OVS").

Everything here is pure: tables in, Markdown and plots out.
"""

from __future__ import annotations

import json
from pathlib import Path

SIZES = (64, 128, 256, 512, 1024, 1280, 1518)

# The seed's Tables 5.1-5.6, as printed: per size, (pps, Mbps) for each column.
SEED: dict[str, dict] = {
    "5.1": {"title": "port mirroring, normal OVS", "columns": ("rcv", "mon"), "rows": {
        64: (125413, 64, 125692, 58), 128: (125302, 128, 126002, 113), 256: (128196, 262, 128483, 247),
        512: (129237, 529, 129512, 513), 1024: (129799, 1063, 130029, 1049), 1280: (131518, 1346, 131677, 1334),
        1518: (128250, 1557, 128509, 1546)}},
    "5.2": {"title": "Group Table, normal OVS", "columns": ("rcv", "mon"), "rows": {
        64: (119962, 61, 120468, 56), 128: (119778, 122, 120086, 108), 256: (120927, 247, 121353, 233),
        512: (121864, 499, 122423, 485), 1024: (122393, 1002, 122700, 991), 1280: (122708, 1256, 122830, 1243),
        1518: (120632, 1464, 121240, 1455)}},
    "5.3": {"title": "port mirroring, OVS-DPDK", "columns": ("rcv", "mon"), "rows": {
        64: (2787450, 1427, 2697358, 1253), 128: (2620189, 2683, 2661700, 2387), 256: (2731848, 5594, 1717897, 3295),
        512: (2346705, 9612, 1754977, 6975), 1024: (1250409, 10243, 1267004, 10215),
        1280: (1078537, 11044, 1087539, 10997), 1518: (968994, 11767, 975531, 11723)}},
    "5.4": {"title": "Group Table, OVS-DPDK", "columns": ("rcv", "mon"), "rows": {
        64: (2904785, 1487, 2686912, 1247), 128: (2685778, 2750, 2685256, 2409), 256: (2779845, 5693, 1717954, 3304),
        512: (2370807, 9710, 1757060, 6984), 1024: (1255015, 10281, 1272086, 10257),
        1280: (1087108, 11131, 1096598, 11092), 1518: (977926, 11875, 984650, 11832)}},
    "5.5": {"title": "Group Table, OVS-DPDK, one PMD thread", "columns": ("rcv1", "rcv2", "mon"), "rows": {
        64: (1428289, 731, 1303902, 667, 2549178, 1183), 128: (1240971, 1270, 1219225, 1248, 2436770, 2185),
        256: (1355872, 2776, 1273592, 2608, 1726259, 3317), 512: (1179136, 4829, 1075859, 4406, 1751487, 6950),
        1024: (564215, 4622, 551638, 4519, 1072958, 8686), 1280: (489371, 5011, 481275, 4928, 952156, 9620),
        1518: (457422, 5554, 444207, 5394, 870952, 10468)}},
    "5.6": {"title": "Group Table, OVS-DPDK, two PMD threads", "columns": ("rcv1", "rcv2", "mon"), "rows": {
        64: (2824075, 1445, 2718243, 1391, 2343191, 1088), 128: (2654693, 2718, 2552526, 2613, 2356312, 2119),
        256: (2717280, 5564, 2637447, 5401, 1535653, 2952), 512: (2348520, 9619, 2294205, 9397, 1542191, 6133),
        1024: (1060279, 8685, 1030101, 8438, 1555016, 12555), 1280: (857901, 8784, 841325, 8615, 1527316, 15469),
        1518: (722424, 8773, 714475, 8676, 1420458, 17078)}},
}

# Which of our runs stands beside each table: (ports of the run, testbed key, configuration).
OURS = {
    "5.1": ("afpacket", "testbed1", "mirror"), "5.2": ("afpacket", "testbed1", "vtap"),
    "5.3": ("vhost", "testbed1", "mirror"), "5.4": ("vhost", "testbed1", "vtap"),
    "5.5": ("vhost", "testbed2", "pmd=0x2"), "5.6": ("vhost", "testbed2", "pmd=0x3"),
}
# Our columns' keys in a run's summaries.
KEYS = {"rcv": "rcv_pps", "mon": "mon_pps", "rcv1": "rcv_pps1", "rcv2": "rcv_pps2"}


def seed_pps(table: str, size: int, column: str) -> float:
    t = SEED[table]
    return t["rows"][size][2 * t["columns"].index(column)]


def our_pps(runs: dict[str, dict], table: str, size: int, column: str) -> float | None:
    """The median pps of our run standing beside `table`, or None if that run is missing."""
    ports, testbed, key = OURS[table]
    run = runs.get(ports)
    cell = run and run.get(testbed, {}).get(key, {}).get(str(size))
    return cell[KEYS[column]]["median"] if cell else None


def _cfg(runs: dict[str, dict], ports: str, config: str, size: int, key: str = "rcv_pps") -> float | None:
    cell = runs.get(ports, {}).get("testbed1", {}).get(config, {}).get(str(size))
    return cell[key]["median"] if cell else None


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(runs: dict[str, dict]) -> dict[str, dict[int, dict[str, float | None]]]:
    """Per ratio, per size: the seed's value and ours (None where a run is missing)."""
    out: dict[str, dict[int, dict[str, float | None]]] = {"dpdk_gain": {}, "vtap_vs_mirror": {},
                                                         "monitor_vs_receiver": {}, "two_pmd": {}}
    for s in SIZES:
        vhost = _cfg(runs, "vhost", "vtap", s)
        out["dpdk_gain"][s] = {
            "seed": seed_pps("5.4", s, "rcv") / seed_pps("5.2", s, "rcv"),
            "vhost ÷ afpacket": _div(vhost, _cfg(runs, "afpacket", "vtap", s)),
            "vhost ÷ afxdp": _div(vhost, _cfg(runs, "afxdp", "vtap", s)),
        }
        out["vtap_vs_mirror"][s] = {
            "seed, normal OVS": seed_pps("5.2", s, "rcv") / seed_pps("5.1", s, "rcv"),
            "seed, OVS-DPDK": seed_pps("5.4", s, "rcv") / seed_pps("5.3", s, "rcv"),
            **{ports: _div(_cfg(runs, ports, "vtap", s), _cfg(runs, ports, "mirror", s))
               for ports in ("vhost", "afxdp", "afpacket")},
        }
        out["monitor_vs_receiver"][s] = {
            "seed, OVS-DPDK": seed_pps("5.4", s, "mon") / seed_pps("5.4", s, "rcv"),
            **{ports: _div(_cfg(runs, ports, "vtap", s, "mon_pps"), _cfg(runs, ports, "vtap", s))
               for ports in ("vhost", "afxdp", "afpacket")},
        }
        total = {t: [our_pps(runs, t, s, c) for c in ("rcv1", "rcv2", "mon")] for t in ("5.5", "5.6")}
        ours = None if None in total["5.5"] + total["5.6"] else sum(total["5.6"]) / sum(total["5.5"])
        out["two_pmd"][s] = {
            "seed": sum(seed_pps("5.6", s, c) for c in ("rcv1", "rcv2", "mon"))
            / sum(seed_pps("5.5", s, c) for c in ("rcv1", "rcv2", "mon")),
            "vhost": ours,
        }
    return out


TITLES = {
    "dpdk_gain": "DPDK ÷ kernel path, receiver pps, vtap (seed: Table 5.4 ÷ 5.2)",
    "vtap_vs_mirror": "vtap ÷ OVS port mirror, receiver pps (seed: 5.2 ÷ 5.1 and 5.4 ÷ 5.3)",
    "monitor_vs_receiver": "monitor ÷ receiver, pps, vtap (seed: Table 5.4)",
    "two_pmd": "2 PMD ÷ 1 PMD threads, Testbed #2, receivers + monitor pps (seed: Table 5.6 ÷ 5.5)",
}


def _fmt(v: float | None) -> str:
    return "–" if v is None else (f"×{v:.1f}" if v >= 2 else f"{v:.3f}")


def markdown(runs: dict[str, dict]) -> str:
    lines = ["## The seed's Tables 5.1–5.6 beside ours", "",
             "Ours: " + "; ".join(f"`{p}` {_describe(r)}" for p, r in sorted(runs.items())) + ".", ""]
    for name, rows in ratios(runs).items():
        cols = list(next(iter(rows.values())))
        lines += [f"### {TITLES[name]}", "", "| size (B) | " + " | ".join(cols) + " |",
                  "|---|" + "---|" * len(cols)]
        lines += [f"| {s} | " + " | ".join(_fmt(v[c]) for c in cols) + " |" for s, v in rows.items()]
        lines.append("")
    lines += ["### Each table, absolute (pps; the seed's machine and ours differ)", "",
              "| table | our run | size (B) | seed receiver(s) | ours | seed monitor | ours |", "|---|---|---|---|---|---|---|"]
    for table, (ports, testbed, key) in OURS.items():
        rcv_cols = [c for c in SEED[table]["columns"] if c != "mon"]
        for s in (64, 1518):
            seed_r = sum(seed_pps(table, s, c) for c in rcv_cols)
            ours_r = [our_pps(runs, table, s, c) for c in rcv_cols]
            ours_m = our_pps(runs, table, s, "mon")
            lines.append(f"| {table} {SEED[table]['title']} | {ports} {key} | {s} | {seed_r:,.0f} | "
                         f"{'–' if None in ours_r else f'{sum(ours_r):,.0f}'} | {seed_pps(table, s, 'mon'):,.0f} | "
                         f"{'–' if ours_m is None else f'{ours_m:,.0f}'} |")
    lines += ["", *(f"![seed-{t}](seed-{t.replace('.', '-')}.png)" for t in SEED)]
    return "\n".join(lines) + "\n"


def _describe(run: dict) -> str:
    return f"({run.get('reps', '?')} run(s) of {run.get('window_s', '?')} s, medians{', quick' if run.get('quick') else ''})"


def plot(runs: dict[str, dict], out: Path) -> list[Path]:
    """One plot per table: the seed's receiver(s) and monitor against ours, pps by size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for table, (ports, _, key) in OURS.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for column in SEED[table]["columns"]:
            style = "--" if column == "mon" else "-"
            ax.plot(SIZES, [seed_pps(table, s, column) for s in SIZES], style, marker="o", color="tab:gray",
                    label=f"seed {column}")
            ours = [our_pps(runs, table, s, column) for s in SIZES]
            points = [(s, v) for s, v in zip(SIZES, ours) if v is not None]
            if points:
                ax.plot(*zip(*points), style, marker="s", color="tab:green", label=f"ours ({ports}) {column}")
        ax.set_title(f"Table {table}: {SEED[table]['title']}", fontsize=9)
        ax.set_xlabel("frame size (B)")
        ax.set_ylabel("pps")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"seed-{table.replace('.', '-')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def load_runs(results: Path, quick: bool = False) -> dict[str, dict]:
    """The dataplane results in `results`, by port type (quick runs only if asked)."""
    runs = {}
    for ports in ("vhost", "afxdp", "afpacket"):
        path = results / f"dataplane-{ports}{'-quick' if quick else ''}.json"
        if path.exists():
            runs[ports] = json.loads(path.read_text())
    return runs


def main(args) -> int:
    results = Path(args.results)
    runs = load_runs(results, args.quick)
    if not runs:
        print(f"vtap bench seed: no dataplane-*.json in {results}: run `vtap bench dataplane` first", flush=True)
        return 2
    out = Path(args.out or results)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(runs)
    (out / "seed-tables.md").write_text(md)
    plot(runs, out)
    print(md)
    return 0
