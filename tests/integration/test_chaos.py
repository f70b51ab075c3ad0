"""The chaos soak, short: three rounds of faults in any order (fixed seed) on fattree,4
under a tapped workload in both directions, and after each round the invariants — no
copy lost after settling, none twice or at the wrong monitor, every policy active, the
switches' tables equal to the compile (read back over OpenFlow and counted with
ovs-ofctl), the audit chain intact. `vtap bench chaos` runs the long soak."""

from __future__ import annotations

import json

from vtap.bench.chaos import run
from vtap.bench.chaos_plan import load

SEED = 5


def test_three_rounds_of_faults_leave_every_invariant_holding(tmp_path):
    report = run(3, SEED, False, tmp_path / "out", workdir=tmp_path / "lab")
    saved = json.loads((tmp_path / "out" / "chaos.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert [r["number"] for r in report["rounds"]] == [1, 2, 3]
    for r in report["rounds"]:
        assert r["violations"] == [], r
        assert r["copies_lost_after"] == 0 and r["settle_s"] is not None
    assert report["violations"] == 0
    # The schedule saved beside it replays this run exactly.
    seed, cluster, rounds = load(tmp_path / "out" / "schedule.json")
    assert (seed, cluster) == (SEED, False)
    assert [[f["kind"] for f in r["faults"]] for r in report["rounds"]] == [[f.kind for f in r.faults] for r in rounds]
    assert "| round | faults |" in (tmp_path / "out" / "chaos.md").read_text()
