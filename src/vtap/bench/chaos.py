"""`vtap bench chaos`: faults in any order on fattree,4 under a steady tapped workload,
and after each round the invariants that must hold once the network has settled.

The workload: two flows with sequence numbers, h1 -> h16 and h16 -> h1 (UDP), and four
policies on them — `fwd` (h1 -> h16 to h9) and `overlap` (everything from h1, to h10)
both copy the first flow; `budget` (h16 -> h1, truncated to 96 bytes, to h11) and
`tunnel` (h16 -> h1 in GRE to the collector h12) the second. A fifth, `churn`, is
created, changed and deleted through the API while the faults strike.

A round: captures start at both receivers and the four monitors, both flows send
through the window while the round's faults (`chaos_plan`) strike and are undone, then
the bench waits until the network has settled (every switch connected and in sync,
every link known, every port's role known, every policy `active`, every switch's tables
equal to the compile), and both flows send again. Then, per round:

- every original that reached its receiver was copied exactly once to each monitor
  whose policy matches it, none twice and none to a monitor whose policies do not match:
  in the fault's window, the copies lost are counted (a switch restarting loses what
  crosses it); after settling, one lost is a violation;
- no policy is left in a transitional state; the tables equal the compile (the
  controller reads every switch back over OpenFlow, `GET /api/v1/devices/{dpid}/drift`,
  and `ovs-ofctl` counts the same rules independently);
- the audit chain verifies.

`--out DIR` gets `chaos.json` (rounds, `violations`), `chaos.md` (the table) and
`schedule.json`, which `--replay` runs again exactly.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from vtap.bench.chaos_checks import Settled, check_tables, check_audit, wait_settled
from vtap.bench.chaos_plan import Round, load, plan, save
from vtap.lab.collector import decap
from vtap.lab.faults import strike, switch_links
from vtap.lab.session import LabSession
from vtap.lab.topos import parse_topo
from vtap.lab.traffic import Capture, Flow, marked, send_from

INTERVAL_S = 0.004  # each flow: 250 packets a second
AFTER = 200  # packets per flow sent once settled
GRE_KEY = 77
CHURN_RETRY_S = 20.0
# A host no flow or policy concerns: what reaches it was flooded (a destination unknown for
# a moment, as a switch or the controller restarts), and reaches every host alike.
BYSTANDER = "h5"


def _mac(i: int) -> str:
    return f"00:00:00:00:00:{i:02x}"


def _own_mac(host: str) -> bytes:
    return bytes.fromhex(_mac(int(host[1:])).replace(":", ""))


def _ip(i: int) -> str:
    return f"10.0.0.{i}"


FLOWS = {"f1": ("h1", "h16", Flow(_mac(1), _mac(16), _ip(1), _ip(16), "udp", 4000, 5001)),
         "f2": ("h16", "h1", Flow(_mac(16), _mac(1), _ip(16), _ip(1), "udp", 4001, 5002))}
POLICIES = {  # name -> (spec, monitor host, the flow it copies)
    "fwd": (dict(src_ip=_ip(1), dst_ip=_ip(16), ip_proto="udp", dst_port=5001, monitor_ip=_ip(9)), "h9", "f1"),
    "overlap": (dict(src_ip=_ip(1), monitor_ip=_ip(10)), "h10", "f1"),
    "budget": (dict(src_ip=_ip(16), dst_ip=_ip(1), ip_proto="udp", monitor_ip=_ip(11), snaplen=96), "h11", "f2"),
    "tunnel": (dict(src_ip=_ip(16), dst_ip=_ip(1), ip_proto="udp", monitor_ip=_ip(12), transport="gre",
                    tunnel_key=GRE_KEY), "h12", "f2"),
}
CHURN = {"name": "chaos-churn", "src_ip": _ip(2), "dst_ip": _ip(15), "ip_proto": "udp", "monitor_ip": _ip(13)}


class ChurnRefused(Exception):
    """The API refused the churn for a reason retrying does not change."""


@dataclass
class RoundResult:
    number: int
    faults: list[dict]
    churn: str
    window_s: float = 0.0
    settle_s: float | None = None  # from the last fault undone to settled
    waited_for: str = ""  # what kept the network from settling last
    originals_lost_in_window: int = 0
    copies_lost_in_window: int = 0
    copies_lost_after: int = 0
    originals_flooded: int = 0  # seen by the bystander: flooded to every host while a destination was unknown
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # a fault or a churn that could not be done (a 503 while etcd is away)


def _tag(flow: str, number: int, phase: str) -> str:
    return f"{flow}r{number}{phase}"


class Soak:
    """One lab and its policies, driven round after round."""

    def __init__(self, lab: LabSession):
        self.lab = lab
        self.churn_exists = False
        self._port = 1000

    def api(self):
        return self.lab.leader().http

    def add_policies(self) -> None:
        for name, (spec, _, _) in POLICIES.items():
            resp = self.api().post("/api/v1/taps", json={"name": f"chaos-{name}", **spec})
            if resp.status_code != 201:
                raise RuntimeError(f"policy chaos-{name}: {resp.status_code} {resp.text}")

    def churn(self, op: str, notes: list[str]) -> None:
        """Create, change or delete the churn policy, as an operator would: again until
        it is done (the controller may be restarting, etcd away), for `CHURN_RETRY_S`."""
        deadline = time.monotonic() + CHURN_RETRY_S
        while True:
            try:
                self._churn_once(op)
                return
            except ChurnRefused as exc:
                notes.append(f"churn {op} refused: {exc}")
                return
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                if time.monotonic() > deadline:
                    notes.append(f"churn {op} not done in {CHURN_RETRY_S:g} s: {exc}")
                    return
                time.sleep(0.3)

    def _churn_once(self, op: str) -> None:
        http = self.api()
        listed = http.get("/api/v1/taps", timeout=5)
        listed.raise_for_status()
        churn_id = next((t["id"] for t in listed.json() if t["name"] == CHURN["name"]), None)
        if op == "delete" and churn_id is not None:
            resp, want = http.delete(f"/api/v1/taps/{churn_id}", timeout=5), 204
        elif op == "update" and churn_id is not None:
            resp, want = http.put(f"/api/v1/taps/{churn_id}", json={**CHURN, "dst_port": self.port_counter()}, timeout=5), 200
        elif op != "delete":  # create, or update of one a failed round left absent
            if churn_id is not None:
                http.delete(f"/api/v1/taps/{churn_id}", timeout=5).raise_for_status()
            resp, want = http.post("/api/v1/taps", json=CHURN, timeout=5), 201
        else:
            self.churn_exists = False
            return
        if resp.status_code in (502, 503, 504):  # etcd away, no leader yet: again
            raise RuntimeError(f"{resp.status_code} {resp.text[:200]}")
        if resp.status_code != want:  # a refusal the bench did not expect: said, not retried
            raise ChurnRefused(f"{resp.status_code} {resp.text[:200]}")
        self.churn_exists = op != "delete"

    def port_counter(self) -> int:
        self._port += 1
        return self._port

    def captures(self, number: int) -> dict[str, Capture]:
        hosts = {h for h, _, _ in FLOWS.values()} | {m for _, m, _ in POLICIES.values()} | {BYSTANDER}
        return {h: Capture(self.lab.net[h], self.lab.workdir / f"chaos-{number}-{h}.pcap").start() for h in sorted(hosts)}

    def send(self, number: int, phase: str, count: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=send_from, args=(self.lab.net[src], flow, _tag(name, number, phase), count),
                                    kwargs={"interval": INTERVAL_S}, daemon=True)
                   for name, (src, _, flow) in FLOWS.items()]
        for t in threads:
            t.start()
        return threads

    def timeline(self, rnd: Round, t0: float, errors: list[str]) -> float:
        """Strike and undo the round's faults, and churn, each at its time; the time the
        last fault was undone."""
        events = [(f.at_s, "strike", f) for f in rnd.faults] + [(rnd.churn_at_s, "churn", None)]
        events += [(f.at_s + f.hold_s, "undo", f) for f in rnd.faults]
        undo: dict[int, object] = {}
        churner = None
        last = t0
        for at, what, fault in sorted(events, key=lambda e: e[0]):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            try:
                if what == "strike":
                    undo[id(fault)] = strike(self.lab, fault.kind, fault.target)
                elif what == "undo":
                    undo.pop(id(fault))()
                    last = time.monotonic()
                else:  # beside the faults: it may have to wait for what they took away
                    churner = threading.Thread(target=self.churn, args=(rnd.churn, errors), daemon=True)
                    churner.start()
            except Exception as exc:  # the fault itself failed: said, and the round goes on
                errors.append(f"{what} {fault.kind}: {exc}")
        if churner is not None:
            churner.join()
        return last

    def round(self, rnd: Round) -> RoundResult:
        result = RoundResult(rnd.number, [asdict(f) for f in rnd.faults], rnd.churn)
        window = max(f.at_s + f.hold_s for f in rnd.faults) + 1.5
        result.window_s = round(window, 2)
        caps = self.captures(rnd.number)
        try:
            t0 = time.monotonic()
            sent = int(window / INTERVAL_S)
            senders = self.send(rnd.number, "a", sent)
            last = self.timeline(rnd, t0, result.notes)
            settled: Settled = wait_settled(self.lab, len(POLICIES) + self.churn_exists)
            for t in senders:
                t.join()
            result.settle_s = round(settled.at - last, 2) if settled.ok else None
            result.waited_for = settled.waited_for
            result.violations += settled.problems
            for t in self.send(rnd.number, "b", AFTER):
                t.join()
        finally:
            # What each host received: not what it sent itself (tcpdump sees both ways).
            frames = {h: [f for _, f in c.stop() if f[6:12] != _own_mac(h)] for h, c in caps.items()}
        self.count(rnd.number, frames, result, sent)
        result.violations += check_tables(self.lab) + check_audit(self.api())
        return result

    def count(self, number: int, frames: dict[str, list[bytes]], result: RoundResult, sent: int) -> None:
        """Copies lost (in the window, after settling), twice, or at the wrong monitor."""
        seen: dict[tuple[str, str], Counter] = {}  # (host, tag) -> seq -> times
        for host, got in frames.items():
            for f in got:
                if host == POLICIES["tunnel"][1]:
                    inner = decap(f)
                    f = inner[2] if inner and inner[:2] == ("gre", GRE_KEY) else f
                mark = marked(f)
                if not mark or not mark.partition(":")[0].endswith((f"r{number}a", f"r{number}b")):
                    continue
                tag, _, seq = mark.partition(":")
                sender = FLOWS.get(tag[:2], ("h0",))[0]
                if f[6:12] == _own_mac(sender):  # not an ICMP error quoting it (h16 has no UDP listener)
                    seen.setdefault((host, tag), Counter())[int(seq)] += 1
        for name, (src, dst, _) in FLOWS.items():
            copiers = {m for _, m, flow in POLICIES.values() if flow == name}
            for phase in "ab":
                tag = _tag(name, number, phase)
                originals = seen.get((dst, tag), Counter())
                flooded = seen.get((BYSTANDER, tag), Counter())  # every host got these once more
                result.originals_flooded += len(flooded)
                for host, counts in ((h, c) for (h, t), c in seen.items() if t == tag and h != BYSTANDER):
                    wrong = [q for q in counts if host not in copiers and host != dst and q not in flooded]
                    if wrong:
                        result.violations.append(f"{len(wrong)} copies of {name} at {host}, whose policies do not match it")
                    twice = [q for q, n in counts.items() if n > 1 + (q in flooded)]
                    if twice:
                        result.violations.append(f"{host} got {len(twice)} packets of {tag} twice")
                lost = sum(len(set(originals) - set(seen.get((m, tag), ()))) for m in copiers)
                if phase == "a":
                    result.copies_lost_in_window += lost
                    result.originals_lost_in_window += sent - len(originals)
                else:
                    result.copies_lost_after += lost
                    if lost:
                        result.violations.append(f"{lost} copies of {name} lost after settling")


def summary(results: list[RoundResult]) -> dict:
    """Per fault kind: copies lost within its windows, and time to settle (p50, max)."""
    kinds: dict[str, list[RoundResult]] = {}
    for r in results:
        for f in r.faults:
            kinds.setdefault(f["kind"], []).append(r)
    out = {}
    for kind, rs in sorted(kinds.items()):
        settle = [r.settle_s for r in rs if r.settle_s is not None]
        out[kind] = {"rounds": len(rs), "copies_lost_in_window": sum(r.copies_lost_in_window for r in rs),
                     "settle_p50_s": round(statistics.median(settle), 2) if settle else None,
                     "settle_max_s": max(settle) if settle else None}
    return out


def markdown(seed: int, cluster: bool, results: list[RoundResult]) -> str:
    lines = [f"Chaos soak: fattree,4, {'a cluster of 3 on 3 etcd members' if cluster else 'one controller'}, "
             f"seed {seed}, {len(results)} rounds, {sum(len(r.violations) for r in results)} violations", "",
             "| round | faults | churn | settle s | originals lost (window) | flooded | copies lost (window) | copies lost after | violations |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        faults = "; ".join(f"{f['kind']} {f['target']} @{f['at_s']}s for {f['hold_s']}s".replace("  ", " ") for f in r.faults)
        lines.append(f"| {r.number} | {faults} | {r.churn} | {r.settle_s if r.settle_s is not None else 'no'} | "
                     f"{r.originals_lost_in_window} | {r.originals_flooded} | {r.copies_lost_in_window} | {r.copies_lost_after} | "
                     f"{'; '.join(r.violations) or 0} |")
    lines += ["", "| fault | rounds | copies lost in its windows | settle p50 s | settle max s |", "|---|---|---|---|---|"]
    for kind, s in summary(results).items():
        lines.append(f"| {kind} | {s['rounds']} | {s['copies_lost_in_window']} | {s['settle_p50_s']} | {s['settle_max_s']} |")
    return "\n".join(lines) + "\n"


def run(rounds: int, seed: int, cluster: bool, out: Path, replay: Path | None = None, workdir: Path | None = None) -> dict:
    """The soak; what it writes to `out` (chaos.json), also returned."""
    # A replayed schedule says whether it ran on a cluster, and a bad file is refused
    # before anything is built.
    replayed = load(replay) if replay is not None else None
    if replayed is not None:
        seed, cluster, _ = replayed
    out.mkdir(parents=True, exist_ok=True)
    own_workdir = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="vtap-chaos-"))
    lab = LabSession(parse_topo("fattree,4"), workdir, chatter=True, seed=seed, serve_args=("--tunnels", "local"),
                     cluster=3 if cluster else 0, etcd_members=3 if cluster else 1)
    with lab:
        lab.net.pingAll(timeout="1")  # every host known
        if replayed is not None:
            schedule = replayed[2]
        else:
            schedule = plan(seed, rounds, cluster=cluster, links=switch_links(lab), switches=[s.name for s in lab.net.switches],
                            members=["leader", "follower"],  # resolved when the fault strikes
                            etcd_members=[m for m, _, _ in lab.etcd.members] if lab.etcd else [])
        save(out / "schedule.json", seed, cluster, schedule)
        soak = Soak(lab)
        soak.add_policies()
        first = wait_settled(lab, len(POLICIES))
        if not first.ok:
            raise RuntimeError(f"the lab did not settle before the first round: {first.problems}")
        results = []
        for rnd in schedule:
            results.append(soak.round(rnd))
            r = results[-1]
            print(f"round {r.number}: {', '.join(f['kind'] for f in r.faults)}; settled in {r.settle_s} s"
                  f"{f' (last waited for: {r.waited_for})' if r.waited_for else ''}; "
                  f"copies lost {r.copies_lost_in_window} in the window, {r.copies_lost_after} after; "
                  f"violations {len(r.violations)} {r.violations or ''}{' notes: ' + '; '.join(r.notes) if r.notes else ''}",
                  flush=True)
    report = {"seed": seed, "cluster": cluster, "rounds": [asdict(r) for r in results],
              "violations": sum(len(r.violations) for r in results), "by_fault": summary(results)}
    (out / "chaos.json").write_text(json.dumps(report, indent=1))
    (out / "chaos.md").write_text(markdown(seed, cluster, results))
    if own_workdir and not report["violations"]:
        shutil.rmtree(workdir, ignore_errors=True)  # kept when something failed: its captures and logs
    else:
        print(f"captures and logs kept in {workdir}", flush=True)
    return report
