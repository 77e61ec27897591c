"""Durable open windows: the agent (`sealstream edge run`, a subprocess) is SIGKILLed twice while its
windows are open, restarted each time, then stopped with SIGTERM. Kafka is unreachable throughout, so
every message stays in the spool and can be read from it.

Afterwards: no reading is pending, every reading `emit` acknowledged (the source's ack log) is in
exactly one signed, spooled message, per sensor the values are in emit order and contiguous within a
run (a source emits the next reading only after the previous one was acknowledged, so a gap would be
an acknowledged reading lost), at most the one reading in flight at each kill is spooled without
being logged as acknowledged, the device's seqs are contiguous (none reused), and every statement
verifies and matches its payload.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from durable_helpers import acked, count_rows, kill_mid_window_runs
from edge.spool import Spool
from infra.process import free_ports
from trust.statement import from_kafka_headers, verify_statement

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WINDOW = 50
SENSORS = ("temperature", "pressure")

CONFIG = """
[edge]
factory = "durable-test"
metrics_port = 0
kafka_bootstrap = "127.0.0.1:{dead_port}"
[edge.spool]
path = "spool"
[edge.group]
readings = {window}
seconds = 600
[devices.press-1]
kind = "timeseries"
key = {{ file = "keys/press-1.key" }}
sensors = ["temperature", "pressure"]
[sources.tick]
type = "python"
module = "acking_source"
device = "press-1"
sensors = ["temperature", "pressure"]
period_s = 0.005
start = {start}
ack_log = "{ack_log}"
"""


def test_sigkill_mid_window_loses_no_acknowledged_reading(tmp_path: Path) -> None:
    home = tmp_path / "edge"
    home.mkdir()
    cfg = home / "edge.toml"
    dead_port = free_ports(1)[0]
    # Kafka is unreachable throughout (the spool is under test), so no Kafka credentials are needed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]), SEALSTREAM_LOG_LEVEL="WARNING",
               SEALSTREAM_KAFKA_SECURITY="0")
    starts = (0, 100_000, 200_000)
    logs = [tmp_path / f"acked-{i}.log" for i in range(len(starts))]

    def write_config(run: int) -> None:
        cfg.write_text(CONFIG.format(dead_port=dead_port, window=WINDOW, start=starts[run], ack_log=logs[run]))

    write_config(0)
    p = subprocess.run([sys.executable, "-m", "sealstream", "edge", "keygen", "--config", str(cfg)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    db_path = home / "spool" / "spool.db"
    pending_at_kill: list[int] = []
    kill_mid_window_runs(cfg, env, logs, WINDOW, write_config,
                         lambda run: pending_at_kill.append(count_rows(db_path, "pending_readings")), tmp_path)
    assert all(n > 0 for n in pending_at_kill), pending_at_kill  # the kills were mid-window

    sp = Spool(home / "spool")
    try:
        assert sp.pending_readings == 0  # SIGTERM cut every window
        msgs = sp.pending(0, 1_000_000)
    finally:
        sp.close()
    assert msgs
    seqs = [m.seq for m in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # in id order, contiguous: no seq reused or skipped
    spooled: list[tuple[str, int]] = []
    for m in msgs:
        stmt, sig = from_kafka_headers(list(m.message.headers))
        assert stmt == m.message.statement and stmt.seq == m.seq
        assert verify_statement(stmt, sig) and stmt.matches_payload(m.message.value)
        table = pa.ipc.open_stream(m.message.value).read_all()
        assert 0 < table.num_rows <= WINDOW
        spooled += [(str(s), int(v)) for s, v in zip(table.column("sensor").to_pylist(),
                                                     table.column("value").to_pylist())]
    assert len(spooled) == len(set(spooled)), "a reading is in two messages"
    for s in SENSORS:  # emit order kept, and no acknowledged reading missing inside a run
        values = [v for x, v in spooled if x == s]
        assert values == sorted(values)
        for start in starts:
            run_values = [v for v in values if start <= v < start + 100_000]
            assert run_values == list(range(start, start + len(run_values))), f"{s}: a gap in run from {start}"
    acknowledged = [r for log in logs for r in acked(log)]
    assert set(acknowledged) <= set(spooled), "an acknowledged reading is not in any message"
    assert len(set(spooled) - set(acknowledged)) <= len(pending_at_kill)  # only the reading in flight at each kill
    print(f"{len(acknowledged)} acknowledged readings, {len(spooled)} spooled in {len(msgs)} messages, "
          f"pending at the kills {pending_at_kill}")
