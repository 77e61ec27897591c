"""A recording `SourceContext` and a way to run a source in a test (tests/edge/test_sources_*.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Callable

from edge.model import Item, Reading

WAIT_S = 20.0  # a guard against a hung test, never a timing assertion


class RecordingContext:
    """Records what a source emits, its errors (reason, detail) and its states, in order."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.errors: list[tuple[str, str]] = []
        self.states: list[str] = []
        self._changed = asyncio.Event()

    async def emit(self, item: Item) -> bool:
        self.items.append(item)
        self._changed.set()
        return True

    def error(self, reason: str, detail: str = "") -> None:
        self.errors.append((reason, detail))
        self._changed.set()

    def state(self, state: str) -> None:
        self.states.append(state)
        self._changed.set()

    # -- for assertions --------------------------------------------------------------------
    @property
    def readings(self) -> list[Reading]:
        return [i for i in self.items if isinstance(i, Reading)]

    def reasons(self) -> Counter:
        return Counter(r for r, _ in self.errors)

    def values(self, device: str | None = None, sensor: str | None = None) -> list[tuple]:
        """(device, sensor, value, ts_ms) of the readings, optionally of one device/sensor."""
        return [(r.device, r.sensor, r.value, r.ts_ms) for r in self.readings
                if (device is None or r.device == device) and (sensor is None or r.sensor == sensor)]

    async def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
        """Until `predicate()` holds; fails naming `what` and what was recorded after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"gave up waiting for {what}; readings={self.values()} "
                                     f"errors={self.errors} states={self.states}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))

    async def wait_state(self, state: str, count: int = 1) -> None:
        await self.wait_for(f"state {state!r} x{count}", lambda: self.states.count(state) >= count)


async def _stop(task: asyncio.Task) -> None:
    """Cancels the source's task; it must end within WAIT_S (a source that swallows cancellation fails)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=WAIT_S)
    if not done:
        stack = "".join(f"  {f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}\n" for f in task.get_stack())
        raise AssertionError(f"the source's run() did not end {WAIT_S:.0f} s after it was cancelled:\n{stack}")
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()


@contextlib.asynccontextmanager
async def running(source, ctx: RecordingContext):
    """Runs `source.run(ctx)` as a task for the block; then cancels it and checks it ended only by that."""
    task = asyncio.create_task(source.run(ctx))
    try:
        yield task
    except BaseException:
        await _stop(task)
        raise
    if task.done():
        exc = None if task.cancelled() else task.exception()
        raise AssertionError(f"the source's run() ended before it was cancelled: {exc!r}")
    await _stop(task)
