"""Markdown tables and matplotlib plots for the benchmark results (in the seed's style)."""

from __future__ import annotations

import json
from pathlib import Path

LABELS = {"notap": "no TAP", "mirror": "OVS port mirror", "vtap": "vtap (group table)",
          "vtap-snaplen128": "vtap, snaplen 128", "vtap-sample8": "vtap, sample 8", "vtap-vxlan": "vtap (vxlan)"}
COLORS = {"notap": "tab:blue", "mirror": "tab:orange", "vtap": "tab:green"}


def write_results(result: dict, markdown: str, out: str | Path, name: str) -> int:
    """A bench's result as `out/name.json` and its tables as `out/name.md`, the tables
    printed too; the exit status (0)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
    return 0


def _m(cell: dict, key: str) -> float:
    return cell[key]["median"]


def _cell(cell: dict, key: str, fmt: str = "{:,.0f}") -> str:
    v = cell[key]
    if v["min"] == v["max"]:
        return fmt.format(v["median"])
    return f"{fmt.format(v['median'])} ({fmt.format(v['min'])}–{fmt.format(v['max'])})"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "–"


def dataplane_markdown(r: dict) -> str:
    tb1 = r["testbed1"]
    sizes = [str(s) for s in r["sizes"]]
    lines = _testbed1_lines(r, sizes) + _ratio_lines(tb1, sizes)
    if "vtap-snaplen128" in tb1 and "vtap-sample8" in tb1:
        lines += _budget_lines(tb1, sizes)
    if "vtap-vxlan" in tb1:
        lines += _vxlan_lines(tb1, sizes)
    busy = r.get("threads_busy_pct")
    if busy:
        lines += ["", "Busy ovs-vswitchd threads at full load (smallest size), % of one core: " + "; ".join(
            f"{LABELS[c]}: " + ", ".join(f"{t.split(':')[0]} {p}" for t, p in b.items()) for c, b in busy.items())]
    sweep = r.get("sweep")
    if sweep:
        lines += _sweep_lines(sweep)
    for key, data in r.get("testbed2", {}).items():
        lines += _testbed2_lines(key, data)
    return "\n".join(lines) + "\n"


def _testbed1_lines(r: dict, sizes: list[str]) -> list[str]:
    """Testbed #1's heading, notes and table: every configuration at every size."""
    tb1 = r["testbed1"]
    lines = [f"## Data plane, Testbed #1 (ports: {r['ports']}; {r['reps']} run(s) of {r['window_s']} s each, "
             "configurations interleaved; median (min–max))", ""]
    for note in r.get("notes", []):
        lines += [f"> {note}", ""]
    lines += ["| size (B) | config | generator tx pps | datapath processed pps | dropped at OVS's port sockets pps | receiver pps | receiver Mbps | monitor pps | monitor Mbps |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in sizes:
        for c in [c for c in LABELS if c in tb1]:
            cell = tb1[c][s]
            mon = _cell(cell, "mon_pps") if c != "notap" else "–"
            mon_mbps = _cell(cell, "mon_mbps", "{:,.1f}") if c != "notap" else "–"
            lines.append(f"| {s} | {LABELS[c]} | {_cell(cell, 'tx_pps')} | {_cell(cell, 'dp_processed_pps')} | {_cell(cell, 'socket_dropped_pps')} | "
                         f"{_cell(cell, 'rcv_pps')} | {_cell(cell, 'rcv_mbps', '{:,.1f}')} | {mon} | {mon_mbps} |")
    return lines


def _ratio_lines(tb1: dict, sizes: list[str]) -> list[str]:
    """Receiver and monitor rates of vtap and the port mirror against each other and no TAP."""
    lines = ["", "### Ratios (medians)", "",
             "| size (B) | rcv vtap ÷ no TAP | rcv mirror ÷ no TAP | monitor ÷ receiver, vtap | monitor ÷ receiver, mirror | vtap ÷ mirror, receiver | vtap ÷ mirror, monitor |",
             "|---|---|---|---|---|---|---|"]
    for s in sizes:
        n, m, v = tb1["notap"][s], tb1["mirror"][s], tb1["vtap"][s]
        lines.append(f"| {s} | {_ratio(_m(v, 'rcv_pps'), _m(n, 'rcv_pps'))} | {_ratio(_m(m, 'rcv_pps'), _m(n, 'rcv_pps'))} | "
                     f"{_ratio(_m(v, 'mon_pps'), _m(v, 'rcv_pps'))} | {_ratio(_m(m, 'mon_pps'), _m(m, 'rcv_pps'))} | "
                     f"{_ratio(_m(v, 'rcv_pps'), _m(m, 'rcv_pps'))} | {_ratio(_m(v, 'mon_pps'), _m(m, 'mon_pps'))} |")
    return lines


def _budget_lines(tb1: dict, sizes: list[str]) -> list[str]:
    """The copy budgets (snaplen 128, sample 8) beside plain vtap."""
    lines = ["", "### Copy budgets (medians; goals: snaplen 128 monitor Mbps at 1518 B ≤ 10% of plain vtap's; "
             "sample 8 receiver ≥ 0.95 × no TAP at saturation)", "",
             "| size (B) | rcv ÷ no TAP: vtap | rcv ÷ no TAP: snaplen 128 | rcv ÷ no TAP: sample 8 | monitor Mbps: vtap | "
             "monitor Mbps: snaplen 128 (÷ vtap) | monitor Mbps: sample 8 (÷ vtap) |",
             "|---|---|---|---|---|---|---|"]
    for s in sizes:
        n, v, c, p = (tb1[k][s] for k in ("notap", "vtap", "vtap-snaplen128", "vtap-sample8"))
        lines.append(f"| {s} | {_ratio(_m(v, 'rcv_pps'), _m(n, 'rcv_pps'))} | {_ratio(_m(c, 'rcv_pps'), _m(n, 'rcv_pps'))} | "
                     f"{_ratio(_m(p, 'rcv_pps'), _m(n, 'rcv_pps'))} | {_m(v, 'mon_mbps'):,.1f} | "
                     f"{_m(c, 'mon_mbps'):,.1f} ({_ratio(_m(c, 'mon_mbps'), _m(v, 'mon_mbps'))}) | "
                     f"{_m(p, 'mon_mbps'):,.1f} ({_ratio(_m(p, 'mon_mbps'), _m(v, 'mon_mbps'))}) |")
    return lines


def _vxlan_lines(tb1: dict, sizes: list[str]) -> list[str]:
    """vtap with a VXLAN collector beside vtap on the VLAN transport."""
    lines = ["", "### Remote collector: vtap (vxlan) beside the VLAN transport (medians)", "",
             "| size (B) | rcv ÷ no TAP: vtap (vlan) | rcv ÷ no TAP: vtap (vxlan) | monitor pps (vlan) | collector pps (vxlan) | "
             "collector ÷ receiver (vxlan) | collector Mbps (outer packets) |",
             "|---|---|---|---|---|---|---|"]
    for s in sizes:
        n, v, x = tb1["notap"][s], tb1["vtap"][s], tb1["vtap-vxlan"][s]
        lines.append(f"| {s} | {_ratio(_m(v, 'rcv_pps'), _m(n, 'rcv_pps'))} | {_ratio(_m(x, 'rcv_pps'), _m(n, 'rcv_pps'))} | "
                     f"{_m(v, 'mon_pps'):,.0f} | {_m(x, 'mon_pps'):,.0f} | {_ratio(_m(x, 'mon_pps'), _m(x, 'rcv_pps'))} | "
                     f"{_m(x, 'mon_mbps'):,.1f} |")
    return lines


def _sweep_lines(sweep: dict) -> list[str]:
    """The offered-load sweep at one size: no TAP, port mirror and vtap at each load."""
    lines = ["", f"### Offered-load sweep at {sweep['size']} B (share of the no-TAP capacity, {sweep['capacity_pps']:,.0f} pps; "
             "100% = generator unthrottled)", "",
             "| offered | config | generator tx pps | receiver pps | monitor pps | rcv ÷ tx | monitor ÷ receiver | (rcv ÷ tx) ÷ same without TAP |",
             "|---|---|---|---|---|---|---|---|"]
    for load in sweep["data"]["notap"]:
        for c in ("notap", "mirror", "vtap"):
            cell = sweep["data"][c][load]
            mon = _cell(cell, "mon_pps") if c != "notap" else "–"
            fid = _ratio(_m(cell, "mon_pps"), _m(cell, "rcv_pps")) if c != "notap" else "–"
            base = sweep["data"]["notap"][load]
            lines.append(f"| {float(load):.0%} | {LABELS[c]} | {_cell(cell, 'tx_pps')} | {_cell(cell, 'rcv_pps')} | {mon} | "
                         f"{_ratio(_m(cell, 'rcv_pps'), _m(cell, 'tx_pps'))} | {fid} | "
                         f"{_ratio(_m(cell, 'rcv_pps') / _m(cell, 'tx_pps'), _m(base, 'rcv_pps') / _m(base, 'tx_pps'))} |")
    return lines


def _testbed2_lines(key: str, data: dict) -> list[str]:
    """Testbed #2 (two pairs, one monitor) under one port setup `key`."""
    lines = ["", f"## Data plane, Testbed #2: two sender/receiver pairs, one monitor, vtap ({key})", "",
             "| size (B) | receiver 1 pps | receiver 1 Mbps | receiver 2 pps | receiver 2 Mbps | monitor pps | monitor Mbps |",
             "|---|---|---|---|---|---|---|"]
    for s, cell in data.items():
        lines.append(f"| {s} | {_cell(cell, 'rcv_pps1')} | {_cell(cell, 'rcv_mbps1', '{:,.1f}')} | {_cell(cell, 'rcv_pps2')} | "
                     f"{_cell(cell, 'rcv_mbps2', '{:,.1f}')} | {_cell(cell, 'mon_pps')} | {_cell(cell, 'mon_mbps', '{:,.1f}')} |")
    return lines


def plot_dataplane(r: dict, out: Path, name: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = r["sizes"]
    paths = []
    for metric, unit in (("pps", "packets per second"), ("mbps", "Mbps")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, who in zip(axes, ("rcv", "mon")):
            for c in ("notap", "mirror", "vtap"):
                if who == "mon" and c == "notap":
                    continue
                ys = [r["testbed1"][c][str(s)][f"{who}_{metric}"]["median"] for s in sizes]
                ax.plot(sizes, ys, marker="o", label=LABELS[c], color=COLORS[c])
            ax.set_title(("Receiver" if who == "rcv" else "Monitor") + f" ({r['ports']} ports)")
            ax.set_xlabel("packet size (bytes)")
            ax.set_xticks(sizes, [str(s) for s in sizes], rotation=45)
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.legend()
        axes[0].set_ylabel(unit)
        fig.tight_layout()
        path = out / f"{name}-{metric}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_dataplane(r: dict, out: Path, name: str) -> str:
    md = dataplane_markdown(r)
    plots = plot_dataplane(r, out, name)
    md += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    (out / f"{name}.md").write_text(md)
    return md
