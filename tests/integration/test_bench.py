"""Smoke runs of `vtap bench dataplane --quick`, `vtap bench controlplane --quick`,
`vtap bench foundation --quick` and a short `vtap bench relay`, so the benchmark code
cannot rot. They check that every row was produced, not any speed; and `vtap bench seed`
on the quick runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "vtap", "bench", *args], capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.parametrize("args, name", [(["--datapath", "netdev"], "afpacket"),
                                        (["--datapath", "dpdk"], "vhost"),  # DPDK guests on vhost-user ports
                                        (["--datapath", "dpdk", "--hosts", "namespaces"], "dpdk")])
def test_dataplane_quick_produces_every_row(tmp_path, args, name):
    res = _run("dataplane", "--quick", *args, "--out", str(tmp_path), timeout=300)
    r = json.loads((tmp_path / f"dataplane-{name}-quick.json").read_text())
    assert r["ports"] == name
    assert r["sizes"] == [64, 1518]
    for config in ("notap", "mirror", "vtap", "vtap-snaplen128", "vtap-sample8", "vtap-vxlan"):
        for size in ("64", "1518"):
            cell = r["testbed1"][config][size]
            assert cell["tx_pps"]["median"] > 0 and cell["rcv_pps"]["median"] > 0, (config, size)
            if config != "notap":
                assert cell["mon_pps"]["median"] > 0, (config, size)
    assert r["testbed1"]["notap"]["64"]["mon_pps"]["median"] < 10  # nothing copied without a TAP
    cut, plain = r["testbed1"]["vtap-snaplen128"]["1518"], r["testbed1"]["vtap"]["1518"]
    # Each cut copy carries 128 of 1518 bytes: compared per copy, not in throughput, which
    # a loaded machine moves both ways (CI once had the plain run at 1.4 Gbit/s).
    per_copy = lambda c: c["mon_mbps"]["median"] / c["mon_pps"]["median"]
    assert per_copy(cut) < 0.2 * per_copy(plain), (cut, plain)
    assert "Copy budgets" in res.stdout and "Remote collector" in res.stdout
    if name == "vhost":  # the guests cannot pace: no sweep, and the note says why
        assert r["sweep"] == {} and any("no offered-load sweep" in n for n in r["notes"])
    else:
        assert set(r["sweep"]["data"]["vtap"]) == {"0.1", "1.0"}
    assert r["testbed2"] and all(set(v) == {"64", "1518"} for v in r["testbed2"].values())
    for suffix in ("pps.png", "mbps.png", "md"):
        assert (tmp_path / f"dataplane-{name}-quick{'-' if suffix.endswith('png') else '.'}{suffix}").stat().st_size > 0
    assert "Ratios" in res.stdout and "[##" in res.stderr  # the table, and a progress bar


def test_controlplane_quick_produces_every_row(tmp_path):
    _run("controlplane", "--quick", "--out", str(tmp_path), timeout=600)
    r = json.loads((tmp_path / "controlplane-quick.json").read_text())
    assert r["latency_ms"]["n"] == 20 and r["latency_ms"]["p50"] > 0
    assert [a["policies"] for a in r["apply"]] == [200]
    assert r["apply"][0]["switch_flows"] > 200 and r["apply"][0]["controller_rss_mib"] > 0
    f = r["copy_failover"]
    assert f["copies"] > 0 and not math.isnan(f["gap_ms"])
    assert r["latency_loaded_ms"]["n"] == 10 and r["latency_loaded_ms"]["installed"] == 200
    e = r["event_stream"]
    assert e["events"] >= 2 and e["peak_rss_mib"] > 0 and e["first_event_bytes"] > 0
    assert 0 < e["first_event_s"] < e["seconds"] and e["events_per_s_after_first"] > 0
    assert r["restart_all_active_s"] > 0 and r["ceiling_ofctl_bundle"]["rules"] > 0
    assert r["apply"][0]["restart"]["rss_settled_mib"] > 0
    steps = r["apply"][0]["restart"]["startup"]
    assert 0 < steps["imported"] < steps["store_loaded"] < steps["first_compile"] <= steps["rules_confirmed"], steps
    m = r["memory"]
    assert m["policies"] == 200 and m["traced_mib"] > 1 and m["by_structure"][0]["mib"] > 0
    d = r["declarative"]
    assert d["policies"] == 200 and d["all_active_s"] > 0 and d["same_again_unchanged"] == 200 and d["update_one_ms"] > 0
    assert d["rss_active_mib"] > 0 and d["rss_settled_mib"] > 0
    assert (tmp_path / "controlplane-quick.md").read_text().startswith("### POST")


def test_foundation_quick_produces_every_row(tmp_path):
    res = _run("foundation", "--quick", "--out", str(tmp_path), timeout=300)
    r = json.loads((tmp_path / "foundation-quick.json").read_text())
    (f,) = r["fattrees"]
    assert (f["k"], f["switches"], f["hosts"], f["links"]) == (4, 20, 16, 64)
    assert f["pingall_loss_pct"] == 0 and f["controller_rss_mib"] > 0
    assert 0 < f["converged_after_last_connect_s"] <= f["converged_after_first_connect_s"]
    assert f["packet_ins_per_s_during"] > 0 and f["packet_ins_per_switch_s_after"] > 0  # LLDP at least
    assert r["repeat"] == 1 and [row["rules"] for row in r["flowmods"]] == [100, 1000]
    for row in r["flowmods"]:
        for mode in ("vtap_bundle", "vtap_one_by_one", "ofctl", "ofctl_bundle"):
            assert row[f"{mode}_per_s"] > 0, (row["rules"], mode)
        assert "vtap_bundle_vs_ofctl_bundle" in row
    md = (tmp_path / "foundation-quick.md").read_text()
    assert md.startswith("### Coming up on a network that talks") and "| 4 | 20 | 16 | 64 |" in md
    assert "### Flow-mods per second" in md
    assert "| 100 |" in md and "| 1,000 |" in md and md in res.stdout


def test_relay_times_real_and_relayed_links(tmp_path):
    """The open limit of the threat model, measured: a live relay between h1 and h3 makes
    a link both ways, and both kinds of link get LLDP transit times."""
    res = _run("relay", "--seconds", "4", "--out", str(tmp_path), timeout=300)
    r = json.loads((tmp_path / "relay.json").read_text())
    assert r["relayed_links"] == 2 and r["relayed_link_made_in_s"] < 30
    phases = r["phases"]
    assert phases["idle, no relay"]["real"]["samples"] >= 4 and phases["idle, no relay"]["relayed"]["samples"] == 0
    for phase in ("idle, relay on", "both cores busy, relay on"):
        assert phases[phase]["real"]["samples"] > 0 and phases[phase]["relayed"]["samples"] > 0
        assert 0 < phases[phase]["relayed"]["min_ms"] <= phases[phase]["relayed"]["max_ms"]
    assert "relay adds" in res.stdout
