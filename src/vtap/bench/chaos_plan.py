"""The chaos soak's schedule: which faults strike in which round, in what order, for
how long, and what the API changes meanwhile. Pure: a seed and the lab's names in, a
list of rounds out, so that a failing run replays exactly (`vtap bench chaos --replay`).

Faults come together and in any order: each round draws one or two, each starting at
its own offset into the round's window and lasting its own time, so a link may go down
while the controller restarts, or a switch's connection be cut while an etcd member is
away.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

# What each kind does (vtap.lab.faults does it):
#   link          an inter-switch link down, then up
#   ofcut         a switch's OpenFlow connections cut (its controllers removed, then given back)
#   switch        a switch restarted: its bridge deleted and made again (its rules lost)
#   controller    the controller stopped (SIGTERM) and started again        [one instance]
#   member_kill   a cluster member killed with -9, then started again       [cluster]
#   member_pause  a cluster member paused with SIGSTOP, then SIGCONT        [cluster]
#   etcd_stop     an etcd member stopped, then started again                [cluster]
SINGLE = ("link", "ofcut", "switch", "controller")
CLUSTER = ("link", "ofcut", "switch", "member_kill", "member_pause", "etcd_stop")
CHURN = ("create", "update", "delete")
HOLD_S = (0.5, 3.0)  # how long a fault lasts
START_S = (0.0, 2.0)  # when, into the round's window, it strikes


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str  # a link "e1-a1", a switch "e3", a member ("leader", "follower" or "c1"), an etcd member "m2", "" for the one controller
    at_s: float  # into the window
    hold_s: float


@dataclass(frozen=True)
class Round:
    number: int
    faults: tuple[Fault, ...]
    churn: str  # create | update | delete: the churn policy, changed through the API in the window
    churn_at_s: float


def plan(seed: int, rounds: int, *, cluster: bool, links: list[str], switches: list[str],
         members: list[str] = (), etcd_members: list[str] = ()) -> list[Round]:
    """`rounds` rounds drawn from `seed` over the lab's inter-switch `links` ("s1-s5"),
    `switches`, and with `cluster`, its `members` and `etcd_members`."""
    rng = random.Random(seed)
    kinds = CLUSTER if cluster else SINGLE
    targets = {"link": links, "ofcut": switches, "switch": switches, "controller": [""],
               "member_kill": list(members), "member_pause": list(members), "etcd_stop": list(etcd_members)}
    out = []
    for number in range(1, rounds + 1):
        chosen = rng.sample(kinds, rng.choice((1, 1, 2)))  # a third of the rounds: two faults at once
        faults = tuple(sorted((Fault(kind, rng.choice(targets[kind]), round(rng.uniform(*START_S), 2),
                                     round(rng.uniform(*HOLD_S), 2)) for kind in chosen), key=lambda f: f.at_s))
        out.append(Round(number, faults, CHURN[(number - 1) % len(CHURN)], round(rng.uniform(*START_S), 2)))
    return out


def save(path: str | Path, seed: int, cluster: bool, rounds: list[Round]) -> None:
    Path(path).write_text(json.dumps({"seed": seed, "cluster": cluster, "rounds": [asdict(r) for r in rounds]}, indent=1))


def load(path: str | Path) -> tuple[int, bool, list[Round]]:
    """(seed, cluster, rounds) of a saved schedule; ValueError naming what is wrong."""
    try:
        data = json.loads(Path(path).read_text())
        rounds = [Round(r["number"], tuple(Fault(**f) for f in r["faults"]), r["churn"], r["churn_at_s"])
                  for r in data["rounds"]]
        seed, cluster = int(data["seed"]), bool(data["cluster"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--replay {path}: not a chaos schedule ({exc})") from None
    for r in rounds:
        for f in r.faults:
            if f.kind not in (CLUSTER if cluster else SINGLE):
                raise ValueError(f"--replay {path}: round {r.number}: unknown fault {f.kind!r}")
        if r.churn not in CHURN:
            raise ValueError(f"--replay {path}: round {r.number}: unknown churn {r.churn!r}")
    return seed, cluster, rounds
