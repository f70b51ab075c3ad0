"""The event loop's turns, counted: for tests that check a long job gives the loop back."""

from __future__ import annotations

import asyncio


class LoopTurns:
    """`async with LoopTurns() as turns:` runs a task that counts one at each turn of the
    loop (`turns.count`), from its first turn to the block's end."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "LoopTurns":
        self._task = asyncio.create_task(self._count())
        await asyncio.sleep(0)  # its first turn
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()

    async def _count(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)
