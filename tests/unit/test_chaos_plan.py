"""The chaos soak's schedule: the same seed gives the same rounds, a saved schedule
replays exactly, and every fault names a target the lab has."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from vtap.bench.chaos_plan import CLUSTER, SINGLE, load, plan, save

LINKS = ["s1-s5", "s2-s6", "s5-s9"]
SWITCHES = ["s1", "s2", "s5", "s9"]


@given(st.integers(0, 2**32), st.integers(1, 40), st.booleans())
def test_a_seed_gives_one_schedule_and_it_replays_exactly(tmp_path_factory, seed, rounds, cluster):
    kw = dict(cluster=cluster, links=LINKS, switches=SWITCHES, members=["c0", "c1", "c2"], etcd_members=["m0", "m1", "m2"])
    got = plan(seed, rounds, **kw)
    assert got == plan(seed, rounds, **kw) and len(got) == rounds
    path = tmp_path_factory.mktemp("plan") / "schedule.json"
    save(path, seed, cluster, got)
    assert load(path) == (seed, cluster, got)
    for r in got:
        assert 1 <= len(r.faults) <= 2 and len({f.kind for f in r.faults}) == len(r.faults)
        assert [f.at_s for f in r.faults] == sorted(f.at_s for f in r.faults)
        for f in r.faults:
            assert f.kind in (CLUSTER if cluster else SINGLE)
            assert f.target in {"link": LINKS, "ofcut": SWITCHES, "switch": SWITCHES, "controller": [""],
                                "member_kill": ["c0", "c1", "c2"], "member_pause": ["c0", "c1", "c2"],
                                "etcd_stop": ["m0", "m1", "m2"]}[f.kind]
            assert 0.5 <= f.hold_s <= 3.0


def test_every_kind_and_every_churn_comes_up_in_a_long_run():
    rounds = plan(1, 30, cluster=False, links=LINKS, switches=SWITCHES)
    assert {f.kind for r in rounds for f in r.faults} == set(SINGLE)
    assert {r.churn for r in rounds} == {"create", "update", "delete"}


def test_a_bad_replay_file_is_named(tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text('{"seed": 1, "cluster": false, "rounds": [{"number": 1, "faults": '
                   '[{"kind": "meteor", "target": "", "at_s": 0, "hold_s": 1}], "churn": "create", "churn_at_s": 0}]}')
    with pytest.raises(ValueError, match="round 1: unknown fault 'meteor'"):
        load(bad)
    bad.write_text("[]")
    with pytest.raises(ValueError, match="not a chaos schedule"):
        load(bad)
    with pytest.raises(ValueError, match="not a chaos schedule"):
        load(tmp_path / "missing.json")


def test_a_bad_replay_is_refused_before_any_lab_is_built(tmp_path):
    from vtap.bench.chaos import run

    bad = tmp_path / "s.json"
    bad.write_text("[]")
    with pytest.raises(ValueError, match="not a chaos schedule"):
        run(1, 1, False, tmp_path / "out", replay=bad, workdir=tmp_path / "lab")
    assert not (tmp_path / "lab").exists() and not (tmp_path / "out").exists()
