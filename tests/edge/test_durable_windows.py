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
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

from edge.spool import Spool
from ledger.cluster import free_ports
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


def _acked(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        s, v = line.split()
        out.append((s, int(v)))
    return out


def _pending(db_path: Path) -> int:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM pending_readings").fetchone()[0])
    finally:
        db.close()


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
    pending_at_kill = []
    for run in range(len(starts)):
        write_config(run)
        out = tmp_path / f"edge-{run}.log"
        proc = subprocess.Popen([sys.executable, "-m", "sealstream", "edge", "run", "--config", str(cfg)],
                                cwd=ROOT, env=env, stdout=open(out, "ab"), stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:  # until a few windows were cut and the open ones hold 10..40 readings
                assert proc.poll() is None, out.read_text()[-3000:]
                assert time.monotonic() < deadline, f"run {run}: not enough readings\n{out.read_text()[-3000:]}"
                n = len(_acked(logs[run]))
                if n > 3 * WINDOW and 10 <= n % WINDOW <= 40:
                    break
                time.sleep(0.001)
            if run < len(starts) - 1:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                pending_at_kill.append(_pending(db_path))
            else:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(60) == 0, out.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
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
    acked = [r for log in logs for r in _acked(log)]
    assert set(acked) <= set(spooled), "an acknowledged reading is not in any message"
    assert len(set(spooled) - set(acked)) <= len(pending_at_kill)  # only the reading in flight at each kill
    print(f"{len(acked)} acknowledged readings, {len(spooled)} spooled in {len(msgs)} messages, "
          f"pending at the kills {pending_at_kill}")
