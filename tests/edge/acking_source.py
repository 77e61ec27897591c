"""An in-test `edge.model.Source` (``type = "python"``, ``module = "acking_source"``) that records what the
agent acknowledged: readings of ``sensors`` of ``device`` every ``period_s``, values counting up from
``start``, emitted one at a time (the next only after `emit` returned), and each reading `emit`
returned True for appended as ``<sensor> <value>`` to ``ack_log`` (flushed: it survives a SIGKILL of
the agent, which this source runs in)."""

from __future__ import annotations

import asyncio
import time

from edge.model import Reading


class Acking:
    def __init__(self, name: str, device: str, sensors: list[str], period_s: float, start: int, ack_log: str) -> None:
        self.name, self.device, self.sensors, self.period_s = name, device, sensors, period_s
        self.start, self.ack_log = start, ack_log

    async def run(self, ctx) -> None:
        ctx.state("connected")
        n = self.start
        with open(self.ack_log, "a", buffering=1) as log:
            while True:
                for s in self.sensors:
                    now = int(time.time() * 1000)
                    if await ctx.emit(Reading(self.device, s, float(n), now, now)):
                        log.write(f"{s} {n}\n")
                        log.flush()
                n += 1
                await asyncio.sleep(self.period_s)


def from_config(name: str, section: dict) -> Acking:
    return Acking(name, section["device"], list(section.get("sensors", ["temperature"])),
                  float(section.get("period_s", 0.01)), int(section.get("start", 0)), str(section["ack_log"]))
