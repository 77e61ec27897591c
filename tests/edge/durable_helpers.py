"""The SIGKILL-mid-window runs of the durable-window tests (test_durable_windows.py,
test_durable_confidential_windows.py): `sealstream edge run` with an `acking_source`, killed while a
window is open, restarted, and at the end stopped with SIGTERM."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Callable
from support.edge import EdgeAgent



def acked(path: Path) -> list[tuple[str, int]]:
    """The ``<sensor> <value>`` lines an `acking_source` wrote: the readings `emit` acknowledged."""
    if not path.exists():
        return []
    # only whole lines: read while the agent appends, the last one may not have its newline yet
    lines = path.read_text().split("\n")[:-1]
    return [(s, int(v)) for s, v in (line.split() for line in lines)]


def count_rows(db_path: Path, table: str) -> int:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


def kill_mid_window_runs(cfg: Path, env: dict, logs: list[Path], window: int, write_config: Callable[[int], None],
                         after_kill: Callable[[int], None], out_dir: Path) -> None:
    """One agent run per ack log: each waits until a few windows were cut and the open one holds 10..40
    readings (of ``window``), then is SIGKILLed (`after_kill(run)` called), except the last: SIGTERM."""
    for run in range(len(logs)):
        write_config(run)
        agent = EdgeAgent(cfg, env, out_dir / f"edge-{run}.log")
        try:
            deadline = time.monotonic() + 120
            while True:
                agent.check()
                assert time.monotonic() < deadline, f"run {run}: not enough readings\n{agent.tail()}"
                n = len(acked(logs[run]))
                if n > 3 * window and 10 <= n % window <= 40:
                    break
                time.sleep(0.001)
            if run < len(logs) - 1:
                agent.kill()
                after_kill(run)
            else:
                agent.stop_ok()
        finally:
            agent.kill()
