"""A tiny in-test `edge.model.Source` (``type = "python"``, ``module = "ticker_source"``): readings of
``sensors`` of ``device`` every ``period_s``, values counting up from ``start`` (so a test can tell
exactly which readings exist); ``crash_after`` raises after that many readings (isolation tests);
``bad_every`` reports a bad input every that many readings."""

from __future__ import annotations

import asyncio
import time

from edge.model import Reading


class Ticker:
    def __init__(self, name: str, device: str, sensors: list[str], period_s: float, crash_after: int = 0,
                 bad_every: int = 0, limit: int = 0) -> None:
        self.name, self.device, self.sensors, self.period_s = name, device, sensors, period_s
        self.crash_after, self.bad_every, self.limit = crash_after, bad_every, limit
        self.n = 0

    async def run(self, ctx) -> None:
        ctx.state("connected")
        while not self.limit or self.n < self.limit:
            now = int(time.time() * 1000)
            for s in self.sensors:
                await ctx.emit(Reading(self.device, s, float(self.n), now, int(time.time() * 1000)))
            self.n += 1
            if self.bad_every and self.n % self.bad_every == 0:
                ctx.error("test-bad-input", f"reading {self.n}")
            if self.crash_after and self.n == self.crash_after:
                raise RuntimeError("ticker crashed on purpose")
            await asyncio.sleep(self.period_s)
        ctx.state("disconnected")
        await asyncio.Event().wait()


def from_config(name: str, section: dict) -> Ticker:
    return Ticker(name, section["device"], list(section.get("sensors", ["temperature"])),
                  float(section.get("period_s", 0.05)), int(section.get("crash_after", 0)),
                  int(section.get("bad_every", 0)), int(section.get("limit", 0)))
