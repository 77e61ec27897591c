"""Durable open windows of a CONFIDENTIAL device, without plaintext on disk (edge.pending_seal).

`sealstream edge run` (a subprocess) with one confidential device (a recipient public key file) whose
sensor names carry a unique marker is SIGKILLed twice while its window is open (sealed pending rows
in the spool), restarted each time, then stopped with SIGTERM. Kafka is unreachable throughout, so
every message stays in the spool, exactly the records that would go to Kafka.

Afterwards: every reading the source saw acknowledged is in exactly one spooled message, and every
message opens for the recipient (the envelope, its key record, bound to the statement's device and
seq); the device's seqs are contiguous (none reused across the kills); no file of the spool
directory (database, WAL, key) holds the marker as bytes, hex or base64 at any kill or after.

Then, in process: a sealed pending row edited on disk and one moved to another device are refused
with a reason (`pending-auth`, counted, logged, kept in ``pending_refused``) while the agent starts
and spools the intact ones; a spool key that group or others may read is refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from confidential.device import public_key_doc
from confidential.envelope import KEYS_HEADER, open_envelope
from confidential.keys import RecipientKey
from durable_helpers import acked, count_rows, kill_mid_window_runs
from edge.agent import Agent
from edge.config import ConfidentialConfig, DeviceConfig, EdgeConfig, GroupConfig, SpoolConfig
from edge.pending_seal import PendingKey, PendingKeyError
from edge.signing import FileSigner
from edge.spool import Spool
from infra.process import free_ports
from trust.identity import KeyPair
from trust.statement import from_kafka_headers, verify_statement

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WINDOW = 50
MARK = "CONFWIN" + uuid.uuid4().hex
SENSORS = (f"setpoint-{MARK}", "pressure")

CONFIG = """
[edge]
factory = "durable-conf-test"
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
confidential = {{ stream = "line-9", recipients = ["qa.pub"] }}
[sources.tick]
type = "python"
module = "acking_source"
device = "press-1"
sensors = ["{s0}", "{s1}"]
period_s = 0.005
start = {start}
ack_log = "{ack_log}"
"""


def _holds(data: bytes) -> bool:
    m = MARK.encode()
    return any(f in data for f in (m, m.hex().encode(), base64.b64encode(m)[:-4]))


def _dirty(spool: Path) -> list[str]:
    return [str(p) for p in spool.rglob("*") if p.is_file() and _holds(p.read_bytes())]


def test_sigkill_mid_confidential_window_loses_nothing_and_writes_no_plaintext(tmp_path: Path) -> None:
    home = tmp_path / "edge"
    home.mkdir()
    qa = RecipientKey.generate("qa")
    (home / "qa.pub").write_text(json.dumps(public_key_doc(qa.id, qa.public)))
    cfg = home / "edge.toml"
    dead_port = free_ports(1)[0]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]), SEALSTREAM_LOG_LEVEL="WARNING",
               SEALSTREAM_KAFKA_SECURITY="0")
    starts = (0, 100_000, 200_000)
    logs = [tmp_path / f"acked-{i}.log" for i in range(len(starts))]  # outside the spool: it names the sensors

    def write_config(run: int) -> None:
        cfg.write_text(CONFIG.format(dead_port=dead_port, window=WINDOW, start=starts[run], ack_log=logs[run],
                                     s0=SENSORS[0], s1=SENSORS[1]))

    write_config(0)
    p = subprocess.run([sys.executable, "-m", "sealstream", "edge", "keygen", "--config", str(cfg), "--json"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    did = json.loads(p.stdout)["devices"][0]["did"]
    spool_dir = home / "spool"
    db_path = spool_dir / "spool.db"
    sealed_at_kill: list[int] = []
    plain_at_kill: list[int] = []

    def after_kill(run: int) -> None:
        sealed_at_kill.append(count_rows(db_path, "pending_sealed"))
        plain_at_kill.append(count_rows(db_path, "pending_readings"))
        assert _dirty(spool_dir) == [], f"plaintext in the spool at kill {run}"

    kill_mid_window_runs(cfg, env, logs, WINDOW, write_config, after_kill, tmp_path)
    assert all(n > 0 for n in sealed_at_kill), sealed_at_kill  # the kills were mid-window, and it was durable
    assert plain_at_kill == [0] * len(plain_at_kill)  # never in the plaintext table
    key_file = spool_dir / "pending.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert _dirty(spool_dir) == []

    sp = Spool(spool_dir)
    try:
        assert sp.pending_sealed == 0 and sp.pending_readings == 0 and sp.pending_refused == 0
        msgs = sp.pending(0, 1_000_000)
    finally:
        sp.close()
    assert msgs
    seqs = [m.seq for m in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # contiguous across the kills: no seq reused
    spooled: list[tuple[str, int]] = []
    for m in msgs:
        stmt, sig = from_kafka_headers(list(m.message.headers))
        assert stmt.device == did and verify_statement(stmt, sig) and stmt.matches_payload(m.message.value)
        assert not _holds(m.message.value)
        opened = open_envelope(m.message.value, dict(m.message.headers)[KEYS_HEADER], qa.id, qa.private,
                               device=did, seq=stmt.seq, kind="timeseries")
        table = pa.ipc.open_stream(opened.plaintext).read_all()
        assert 0 < table.num_rows <= WINDOW
        spooled += [(str(s), int(v)) for s, v in zip(table.column("sensor").to_pylist(),
                                                     table.column("value").to_pylist())]
    assert len(spooled) == len(set(spooled)), "a reading is in two messages"
    for s in SENSORS:
        values = [v for x, v in spooled if x == s]
        assert values == sorted(values)
        for start in starts:
            run_values = [v for v in values if start <= v < start + 100_000]
            assert run_values == list(range(start, start + len(run_values))), f"{s}: a gap in run from {start}"
    acknowledged = [r for log in logs for r in acked(log)]
    assert set(acknowledged) <= set(spooled), "an acknowledged reading is not in any message"
    assert len(set(spooled) - set(acknowledged)) <= len(sealed_at_kill)  # only the reading in flight at each kill
    print(f"{len(acknowledged)} acknowledged readings, {len(spooled)} spooled in {len(msgs)} sealed messages, "
          f"sealed pending at the kills {sealed_at_kill}")


def _conf_cfg(tmp: Path, qa: RecipientKey) -> EdgeConfig:
    (tmp / "qa.pub").write_text(json.dumps(public_key_doc(qa.id, qa.public)))
    conf = ConfidentialConfig("line-9", (tmp / "qa.pub",))
    dev = DeviceConfig("d", "timeseries", {}, (), confidential=conf)
    return EdgeConfig(tmp / "edge.toml", "tamper-test", SpoolConfig(tmp / "spool"), GroupConfig(readings=100,
                      seconds=600), {"d": dev, "e": DeviceConfig("e", "timeseries", {}, (), confidential=conf)}, {},
                      metrics_port=0)


def test_a_tampered_sealed_row_is_refused_with_a_reason(tmp_path: Path, caplog) -> None:
    qa = RecipientKey.generate("qa")
    cfg = _conf_cfg(tmp_path, qa)
    key = PendingKey.load_or_create(cfg.spool.pending_key_path)
    assert key.created and str(key.path) in repr(key)
    sp = Spool(cfg.spool.path)
    rows = [("tick", "d", f"s-{MARK}", float(i), 1_767_225_600_000 + i, 1_767_225_600_000 + i) for i in range(6)]
    ids = sp.add_pending(rows, [True] * len(rows), key)
    sp.close()
    assert _dirty(cfg.spool.path) == []
    db = sqlite3.connect(cfg.spool.path / "spool.db")
    blob = bytearray(db.execute("SELECT sealed FROM pending_sealed WHERE id = ?", (ids[1],)).fetchone()[0])
    blob[-20] ^= 1  # one bit of the ciphertext
    db.execute("UPDATE pending_sealed SET sealed = ? WHERE id = ?", (bytes(blob), ids[1]))
    db.execute("UPDATE pending_sealed SET device = 'e' WHERE id = ?", (ids[3],))  # moved to another device
    db.execute("UPDATE pending_sealed SET sealed = x'00' WHERE id = ?", (ids[4],))  # not a sealed row at all
    db.commit()
    db.close()

    signers = {"d": FileSigner(KeyPair.generate()), "e": FileSigner(KeyPair.generate())}
    agent = Agent(cfg, f"127.0.0.1:{free_ports(1)[0]}", sources=[], signers=signers, metrics_port=0)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(task, 60)

    with caplog.at_level(logging.ERROR, logger="edge.agent"):
        asyncio.run(scenario())
    refused = [r for r in caplog.records if "sealed pending reading was refused" in r.getMessage()]
    assert sorted((r.row, r.reason) for r in refused) == sorted(  # type: ignore[attr-defined]
        [(ids[1], "pending-auth"), (ids[3], "pending-auth"), (ids[4], "pending-malformed")])
    reg = agent.metrics.registry
    assert reg.get_sample_value("sealstream_edge_pending_refused_total", {"reason": "pending-auth"}) == 2
    assert reg.get_sample_value("sealstream_edge_pending_refused_total", {"reason": "pending-malformed"}) == 1
    sp = Spool(cfg.spool.path)
    try:
        assert sp.pending_sealed == 0 and sp.pending_refused == 3  # kept as evidence, out of the windows
        (msg,) = sp.pending(0, 100)
    finally:
        sp.close()
    opened = open_envelope(msg.message.value, dict(msg.message.headers)[KEYS_HEADER], qa.id, qa.private)
    values = pa.ipc.open_stream(opened.plaintext).read_all().column("value").to_pylist()
    assert values == [0.0, 2.0, 5.0]  # the intact rows, in order
    assert _dirty(cfg.spool.path) == []


def test_the_spool_key_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "spool" / "pending.key"
    first = PendingKey.load_or_create(path)
    again = PendingKey.load_or_create(path)
    assert first.created and not again.created and path.stat().st_mode & 0o777 == 0o600
    blob = first.seal("s", "d", 7, "t", 1.5, 10, 11)
    assert again.open("s", "d", 7, blob) == ("t", 1.5, 10, 11)  # the same key, read back
    os.chmod(path, 0o640)
    with pytest.raises(PendingKeyError) as e:
        PendingKey.load_or_create(path)
    assert e.value.reason == "key-insecure"
    os.chmod(path, 0o600)
    path.write_bytes(b"short")
    with pytest.raises(PendingKeyError) as e:
        PendingKey.load_or_create(path)
    assert e.value.reason == "key-invalid"
    assert not list(path.parent.glob(".*.tmp"))  # no temporary key left behind
