"""Server-sent events for the web UI: what changed among the policies, once a second.

Each event once carried every policy; at 10,000 policies the stream managed six events
in ten seconds, and at 100,000 it would carry tens of megabytes to say that little
moved. Now one `Board` per application looks at every policy's status and counters
(in heavy slices, `api/pacing.py`, so the switches keep at least half the loop) and
keeps their last rows in a `Ledger` (`model/deltas.py`); every second it publishes what
changed to every open stream. A stream begins with a `snapshot` (the rows it watches,
as they are) and goes on with `delta` events: new policies whole, the fields that moved
of the others, the ids of those gone, and the summary (policies by status). A stream may
watch a few policies only (`?ids=`: the UI's page), so that what it carries is bounded
by what changed among what it shows.

The board runs while a stream is open (and LINGER seconds after the last one closed), then
stops and forgets its rows. The page refetches the topology when `view_version` moves.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from vtap.api.auth import BEARER
from vtap.api.deps import AppTokens, Ctl, Heavy, viewer
from vtap.api.pacing import HeavyWork
from vtap.control.controller import Controller
from vtap.model.deltas import Delta, Ledger, Row, entry
from vtap.model.policy import Tap

log = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between two events of a stream
SWEEP_SLICE = 1000  # policies one heavy slice looks at (a few milliseconds)
WRITE_SLICE = 2000  # rows one heavy slice writes into an event
MAX_IDS = 1000  # policies one stream may watch by id
BEHIND = 30  # deltas a stream may have waiting before it is given a fresh snapshot instead
LINGER = 10.0  # seconds the board goes on after its last reader left
COUNTERS_SHARE = 3  # reading the switches' counters takes at most one part in this many of the time

router = APIRouter(prefix="/api/v1", tags=["events"], dependencies=[Depends(viewer)])


def row_of(ctl: Controller, tap: Tap, counters: dict[int, Mapping[str, int]], syncs: dict, reasons: dict[str, str]) -> Row:
    """A policy's row, in `model.deltas.FIELDS` order. Its status reason is the one
    string of that text in `reasons`: thousands of policies waiting for one switch
    keep one copy of why (the board keeps 100,000 rows)."""
    st = ctl.tap_status(tap.id, syncs)
    c = counters.get(tap.id, {"packets": 0, "bytes": 0})
    d = ctl.monitor_delivery(tap.id)
    ds = ctl.monitor_deliveries(tap.id).values() if d else ()
    tool = ctl.tool_counts.get(tap.id) or {}
    s = tap.spec
    return (s.name, s.enabled, st.state, reasons.setdefault(st.reason, st.reason), c["packets"], c["bytes"],
            sum(x.sent_packets for x in ds) if d else None, sum(x.delivered_packets for x in ds) if d else None,
            c.get("copies"), c.get("dropped"), s.monitor_pool, s.snaplen, s.sample, s.rate_limit_pps, s.transport,
            s.monitor_ip if s.tunnel else None,
            (s.tunnel_key if s.tunnel_key is not None else tap.id) if s.tunnel else None,
            s.erspan_version, tool.get("packets"), tool.get("alerts"))


@dataclass(eq=False)
class Reader:
    """One open stream: the policies it watches (None: all) and the deltas not yet written."""

    ids: set[int] | None
    waiting: deque = field(default_factory=deque)  # (seq, delta, summary, view_version)
    behind: bool = False  # fell more than BEHIND deltas behind: give it a snapshot
    woken: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, item: tuple) -> None:
        self.waiting.append(item)
        if len(self.waiting) > BEHIND:
            self.waiting.clear()
            self.behind = True
        self.woken.set()


class Board:
    """Every policy's last row, looked at again and again while a stream is open."""

    def __init__(self, ctl: Controller, heavy: HeavyWork) -> None:
        self.ctl, self.heavy = ctl, heavy
        self.ledger = Ledger()
        self.seq = 0  # of the last delta published
        self.readers: set[Reader] = set()
        self.swept = asyncio.Event()  # the first sweep is done: the rows are whole
        self._task: asyncio.Task | None = None
        self._idle: asyncio.TimerHandle | None = None  # the stop to come, no reader being left
        self._counters: dict[int, Mapping[str, int]] | None = None  # the last read, and when the next is due
        self._counters_due = 0.0

    def join(self, ids: set[int] | None) -> Reader:
        reader = Reader(ids)
        self.readers.add(reader)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return reader

    def leave(self, reader: Reader) -> None:
        """The last reader gone, the board stops LINGER seconds later, unless another
        comes meanwhile (the UI opens its stream again for each page it turns to: the
        board stays, and its rows, so the next snapshot need not wait for a sweep)."""
        self.readers.discard(reader)
        if not self.readers and self._task is not None and self._idle is None:
            self._idle = asyncio.get_running_loop().call_later(LINGER, self._stop)

    def _stop(self) -> None:
        """Stop looking and forget the rows (they are memory: 35 MB at 100,000 policies)."""
        self._idle = None
        if self.readers or self._task is None:
            return
        self._task.cancel()
        self._task = None
        self.ledger, self.swept, self._counters = Ledger(), asyncio.Event(), None

    def snapshot(self, reader: Reader) -> tuple[int, list[tuple[int, Row]]]:
        """The rows the reader watches as they are now, and the last delta they include.

        Taken in one step: the rows hold every change up to now, so the deltas waiting
        for the reader from before are dropped (applied after the snapshot, they would
        turn a row back for a moment)."""
        rows = self.ledger.rows
        taken = list(rows.items()) if reader.ids is None else [(i, rows[i]) for i in sorted(reader.ids) if i in rows]
        reader.waiting.clear()
        reader.behind = False
        return self.seq, taken

    async def _run(self) -> None:
        """Sweep after sweep (a second apart at most), and beside them an event a second:
        on a clock of its own, so that a sweep longer than a second (100,000 policies)
        does not slow the events, it only makes them carry its changes a little later."""
        loop = asyncio.get_running_loop()
        ticks = loop.create_task(self._tick())
        try:
            while True:
                started = loop.time()
                try:
                    await self._sweep()
                except Exception:  # a stream outlives one bad look (a switch gone mid-read...)
                    log.exception("looking at the policies for the event stream failed")
                if not self.swept.is_set():
                    self.ledger.take()  # every row is new: each reader begins with a snapshot of them instead
                    self.swept.set()
                await asyncio.sleep(max(0.0, started + INTERVAL - loop.time()))
        finally:
            ticks.cancel()

    async def _counters_now(self) -> dict[int, Mapping[str, int]]:
        """The policies' counters, read again from the switches once due. A read is one
        flow-stats request per switch for every tap rule, and parsing the replies costs
        the controller about half a second of CPU at 10,000 policies: so reads are
        spaced to take a third of the time at most (every second while they are cheap),
        and a sweep in between uses the last one."""
        loop = asyncio.get_running_loop()
        if self._counters is None or loop.time() >= self._counters_due:
            started = loop.time()
            self._counters = await self.ctl.tap_counters()
            self._counters_due = started + max(INTERVAL, COUNTERS_SHARE * (loop.time() - started))
        return self._counters

    async def _sweep(self) -> None:
        """Look at every policy once: the counters first (`_counters_now`), then the
        rows, `SWEEP_SLICE` at a time."""
        ctl = self.ctl
        counters, reasons = await self._counters_now(), {}
        async with self.heavy.slice():
            self.ledger.drop(self.ledger.rows.keys() - ctl.taps.keys())
            ids = list(ctl.taps)
        for start in range(0, len(ids), SWEEP_SLICE):
            async with self.heavy.slice():
                syncs = ctl.switch_syncs()
                for tap_id in ids[start:start + SWEEP_SLICE]:
                    tap = ctl.taps.get(tap_id)
                    if tap is not None:  # else deleted meanwhile: dropped by the next sweep
                        self.ledger.look(tap_id, row_of(ctl, tap, counters, syncs, reasons))

    async def _tick(self) -> None:
        """Publish what changed every INTERVAL, from the end of the first sweep on; a late
        tick is made up by a shorter wait, so that the events keep one a second."""
        loop = asyncio.get_running_loop()
        await self.swept.wait()
        due = loop.time()
        while True:
            self._publish()
            due = max(due + INTERVAL, loop.time() - INTERVAL)
            await asyncio.sleep(max(0.0, due - loop.time()))

    def _publish(self) -> None:
        self.seq += 1
        item = (self.seq, self.ledger.take(), self.ledger.summary(), self.ctl.view_version)
        for reader in self.readers:
            reader.push(item)


def board_of(request: Request, ctl: Controller, heavy: HeavyWork) -> Board:
    """The application's board, made on the first stream."""
    board = getattr(request.app.state, "event_board", None)
    if board is None:
        board = request.app.state.event_board = Board(ctl, heavy)
    return board


def watched(ids: str | None) -> set[int] | None:
    """`?ids=` as a set: absent, every policy (None); empty, none; else the ids listed."""
    if ids is None:
        return None
    try:
        found = {int(i) for i in ids.split(",") if i.strip()}
    except ValueError:
        found = {-1}
    if any(i < 1 for i in found) or len(found) > MAX_IDS:
        raise HTTPException(422, [{"loc": ["query", "ids"], "type": "value_error",
                                   "msg": f"policy ids separated by commas, at most {MAX_IDS}"}])
    return found


async def _rows_json(rows: list[tuple[int, Row]], heavy: HeavyWork) -> str:
    """Whole rows as a JSON array, `WRITE_SLICE` at a time in heavy slices when many."""
    if len(rows) <= WRITE_SLICE:
        return json.dumps([entry(i, r) for i, r in rows])
    parts = []
    for start in range(0, len(rows), WRITE_SLICE):
        async with heavy.slice():
            parts.append(",".join(json.dumps(entry(i, r)) for i, r in rows[start:start + WRITE_SLICE]))
    return "[" + ",".join(p for p in parts if p) + "]"


async def _changed_json(delta: Delta, heavy: HeavyWork) -> str:
    changed = [{"id": i, **fields} for i, fields in delta.changed.items()]
    if len(changed) <= WRITE_SLICE:
        return json.dumps(changed)
    parts = []
    for start in range(0, len(changed), WRITE_SLICE):
        async with heavy.slice():
            parts.append(",".join(json.dumps(c) for c in changed[start:start + WRITE_SLICE]))
    return "[" + ",".join(parts) + "]"


def _head(seq: int, summary: dict, view_version: int) -> str:
    return f'"seq": {seq}, "view_version": {view_version}, "summary": {json.dumps(summary)}'


async def snapshot_event(board: Board, reader: Reader) -> str:
    seq, rows = board.snapshot(reader)
    head = _head(seq, board.ledger.summary(), board.ctl.view_version)
    return f"event: snapshot\ndata: {{{head}, \"taps\": {await _rows_json(rows, board.heavy)}}}\n\n"


async def delta_event(item: tuple, reader: Reader, heavy: HeavyWork) -> str:
    seq, delta, summary, view_version = item
    if reader.ids is not None:
        delta = delta.only(reader.ids)
    added = await _rows_json(list(delta.added.items()), heavy)
    body = (f'{{{_head(seq, summary, view_version)}, "added": {added}, "changed": {await _changed_json(delta, heavy)}, '
            f'"removed": {json.dumps(sorted(delta.removed))}}}')
    return f"event: delta\ndata: {body}\n\n"


@router.get("/events")
async def events(request: Request, ctl: Ctl, tokens: AppTokens, heavy: Heavy,
                 creds: HTTPAuthorizationCredentials | None = Depends(BEARER),
                 ids: str | None = Query(None, description="watch only these policies (ids separated by commas, at "
                                                           f"most {MAX_IDS}; empty: none, the summary only); "
                                                           "absent: every policy")):
    """`text/event-stream`: first a `snapshot` event, {"seq", "view_version", "summary":
    {"total", "by_status", "set_version"}, "taps": [rows]}, then a `delta` event a second, {"seq",
    "view_version", "summary", "added": [rows], "changed": [{"id", and each field that
    moved}], "removed": [ids]}: what changed since the event before (applied in order to
    the snapshot, they give every row as it is). A row: {"id", "name", "enabled",
    "status", "status_reason", "packets", "bytes", "sent", "delivered", "copies",
    "dropped", "pool", "snaplen", "sample", "rate_limit_pps", "transport", "collector",
    "tunnel_key", "erspan_version", "received", "alerts"}: `packets`/`bytes` what the tap
    rules matched; `sent`, `delivered` the copies sent toward and delivered to the
    policy's monitors (null until compiled); `copies`, `dropped` a budgeted policy's
    copies and those its rate limit dropped; `pool` its monitor pool; `collector`,
    `tunnel_key`, `erspan_version` a tunnelled policy's (null otherwise); `received`,
    `alerts` at the tool, by its sensor (null without one). A stream that falls behind
    gets a new snapshot."""
    reader_ids = watched(ids)
    board = board_of(request, ctl, heavy)

    def allowed() -> bool:
        # The token is checked again before every event: a revoked or expired one ends the stream.
        return creds is not None and tokens.principal(creds.credentials) is not None

    async def stream():
        reader = board.join(reader_ids)
        try:
            await board.swept.wait()
            if allowed():
                yield await snapshot_event(board, reader)
            while allowed() and not await request.is_disconnected():
                await reader.woken.wait()
                reader.woken.clear()
                if reader.behind:
                    yield await snapshot_event(board, reader)
                while reader.waiting and allowed():
                    yield await delta_event(reader.waiting.popleft(), reader, heavy)
        finally:
            board.leave(reader)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
