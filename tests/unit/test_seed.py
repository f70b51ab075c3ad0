"""The seed's tables as transcribed, and the ratios set beside ours (pure)."""

from __future__ import annotations

import pytest

from vtap.bench.seed import OURS, SEED, SIZES, markdown, our_pps, ratios, seed_pps


@pytest.mark.parametrize("table", sorted(SEED))
def test_transcribed_receiver_rates_agree_with_their_own_throughput(table):
    """Each receiver's Mbps is its pps times the frame size: a mistyped digit shows."""
    t = SEED[table]
    for size, row in t["rows"].items():
        for column in (c for c in t["columns"] if c != "mon"):
            i = 2 * t["columns"].index(column)
            assert row[i + 1] == pytest.approx(row[i] * size * 8 / 1e6, rel=0.02), (table, size, column)


def _summary(value: float) -> dict:
    return {"median": value, "min": value, "max": value}


def _run(rcv: dict[str, float], mon_share: float = 1.0, tb2: dict[str, float] | None = None) -> dict:
    testbed1 = {config: {str(s): {"rcv_pps": _summary(v), "mon_pps": _summary(v * mon_share)} for s in SIZES}
                for config, v in rcv.items()}
    testbed2 = {key: {str(s): {"rcv_pps1": _summary(v), "rcv_pps2": _summary(v), "mon_pps": _summary(2 * v)}
                      for s in SIZES} for key, v in (tb2 or {}).items()}
    return {"reps": 3, "window_s": 2.0, "testbed1": testbed1, "testbed2": testbed2}


def test_ratios_divide_the_runs_that_stand_beside_each_table():
    runs = {"vhost": _run({"vtap": 3_000_000, "mirror": 2_000_000}, 0.5, {"pmd=0x2": 100, "pmd=0x3": 150}),
            "afpacket": _run({"vtap": 100_000, "mirror": 200_000}),
            "afxdp": _run({"vtap": 300_000, "mirror": 300_000})}
    r = ratios(runs)
    assert r["dpdk_gain"][64]["vhost ÷ afpacket"] == 30
    assert r["dpdk_gain"][64]["vhost ÷ afxdp"] == 10
    assert r["dpdk_gain"][64]["seed"] == pytest.approx(2904785 / 119962)
    assert r["vtap_vs_mirror"][1518]["vhost"] == 1.5
    assert r["vtap_vs_mirror"][1518]["afpacket"] == 0.5
    assert r["monitor_vs_receiver"][256]["vhost"] == 0.5
    assert r["monitor_vs_receiver"][256]["seed, OVS-DPDK"] == pytest.approx(1717954 / 2779845)
    assert r["two_pmd"][512]["vhost"] == 1.5


def test_a_missing_run_is_a_dash_not_a_number():
    runs = {"vhost": _run({"vtap": 1.0, "mirror": 1.0})}
    r = ratios(runs)
    assert r["dpdk_gain"][64]["vhost ÷ afpacket"] is None
    assert r["two_pmd"][64]["vhost"] is None
    assert our_pps(runs, "5.1", 64, "rcv") is None
    text = markdown(runs)
    assert "| 64 | ×24.2 | – | – |" in text
    assert all(f"seed-{t.replace('.', '-')}.png" in text for t in OURS)


def test_seed_pps_reads_the_named_column():
    assert seed_pps("5.5", 64, "rcv2") == 1303902
    assert seed_pps("5.6", 1518, "mon") == 1420458


def test_the_committed_tables_come_from_the_committed_runs():
    """bench/results/seed-tables.md (which the README quotes) is what `vtap bench seed`
    makes of the dataplane results beside it: rerun it after a new dataplane run."""
    from pathlib import Path

    from vtap.bench.seed import load_runs

    results = Path(__file__).resolve().parents[2] / "bench" / "results"
    runs = load_runs(results)
    assert set(runs) == {"vhost", "afxdp", "afpacket"}
    assert markdown(runs) == (results / "seed-tables.md").read_text()
    assert ratios(runs)["dpdk_gain"][64]["vhost ÷ afpacket"] > 8  # the seed's range begins at ×8
