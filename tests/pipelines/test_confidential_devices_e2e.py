"""`sealstream devices run --confidential STREAM` end to end (issue 18), on real services.

A private Kafka and MinIO, a throwaway PostgreSQL database with the pipeline's schema, a 4-node
contracts ledger (anchoring) with a recipient registered and granted the stream, and the real
`sealstream pipeline worker` subprocess. The simulator resolves the recipients from the ledger
(proven), seals every payload of its devices, the worker stores and anchors the ciphertext, and
the recipient opens a stored record with `sealstream data open blob`; `sealstream data recipients`
prints the same recipients; nothing of the run in Kafka holds the plaintext's sensor names.
The refresh: `RecipientsInForce` on the same ledger picks up a grant once its period passed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from confidential.envelope import KeyRecord
from confidential.keys import RecipientKey, save_recipient_key
from infra.process import Child, free_ports
from pipelines.devices import Factory
from pipelines.devices.confidential import RecipientsInForce
from kafka_principals import enrol_factory
from infra.private_stack import PrivateStack
from resilience_helpers import Anchoring
from storage import key_records, migrate
from storage.db import open_pool
from test_confidential_noplaintext import _kafka_scan

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]


def _cli(env: dict, *args: str, timeout: float = 180) -> tuple[int, dict, str]:
    p = subprocess.run([sys.executable, "-m", "sealstream", *args, "--json"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from {args}: {p.stdout!r} {p.stderr!r}") from None
    return p.returncode, doc, p.stdout + p.stderr


def test_devices_run_confidential_is_stored_as_ciphertext_and_opens_for_the_recipient(stack, settings,
                                                                                       tmp_path: Path) -> None:
    from anchor_helpers import admin_client

    name = f"ss_confdev_{uuid.uuid4().hex[:8]}"
    admin_dsn = make_conninfo(settings.postgres_dsn, dbname="postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(settings.postgres_dsn, dbname=name)
    migrate(dsn)
    proc = None
    try:
        with PrivateStack(tmp_path / "private", base=settings, kafka=True, minio=True) as ps:
            s = ps.settings
            fac_name = f"cd-{uuid.uuid4().hex[:8]}"
            Factory.ensure(s, fac_name, 1, kinds=("timeseries", "image"))
            enrol_factory(s, fac_name)  # its Kafka principal factory-<name> on the private broker (security on)
            gateway = f"gw-{fac_name}"
            anchoring = Anchoring(s, gateway)
            try:  # the private ledger's nodes are stopped whatever fails below
                stream = f"line-{uuid.uuid4().hex[:6]}"
                qa, late = (RecipientKey.generate(f"{n}-{uuid.uuid4().hex[:6]}") for n in ("qa", "late"))
                qa_file = tmp_path / "qa.key"
                save_recipient_key(qa, qa_file)
                with admin_client(anchoring.cluster) as admin:
                    for k in (qa, late):
                        r = admin.submit("registry.register_enc_key", {"id": k.id, "org": "operator",
                                                                       "key": k.public.hex()})
                        assert r.refusal is None, r.refusal
                    assert admin.submit("policy.grant", {"stream": stream, "recipient": qa.id}).refusal is None
                env = dict(os.environ, SEALSTREAM_HOME=str(s.home),
                           SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap,
                           SEALSTREAM_MINIO_ENDPOINT=s.minio_address, SEALSTREAM_PG_DSN=dsn,
                           SEALSTREAM_PIPELINE_GATEWAY=gateway, SEALSTREAM_PIPELINE_ANCHOR_WINDOW_S="1",
                           SEALSTREAM_LOG_LEVEL="WARNING")
                log = tmp_path / "worker.log"
                proc = Child("pipeline worker", [
                    sys.executable, "-m", "sealstream", "pipeline", "worker", "--app-id",
                    f"{settings.pipeline_app_id}-cd-{uuid.uuid4().hex[:6]}",
                    "--directory", "manifest", "--factory", fac_name, "--metrics-port", str(free_ports(1)[0])],
                    log_path=log, env=env)
                try:
                    # the recipients file an edge agent would read: the same proven answer
                    out = tmp_path / "recipients.json"
                    rc, doc, text = _cli(env, "data", "recipients", "--stream", stream, "--out", str(out))
                    assert rc == 0, text
                    assert [r["id"] for r in doc["recipients"]] == [qa.id] and doc["height"] >= 1
                    assert json.loads(out.read_text()) == doc

                    rc, summary, text = _cli(env, "devices", "run", "--factory", fac_name, "--devices", "1",
                                             "--kinds", "timeseries,image", "--count", "6", "--rate", "0",
                                             "--confidential", stream)
                    assert rc == 0, text
                    assert summary["confidential"] == stream and summary["recipients"] == [qa.id]
                    assert summary["delivered"] == 6, summary
                    sent = [json.loads(line) for line in Path(summary["sent_log"]).read_text().splitlines()]
                    sent = [r for r in sent if r["run"] == summary["run_id"]]
                    hashes = [bytes.fromhex(r["statement_hash"]) for r in sent]
                    assert len(hashes) == 6
                    deadline = time.monotonic() + 180
                    while True:
                        with psycopg.connect(dsn) as conn:
                            anchored = conn.execute(
                                "SELECT count(*) FROM batch_leaves l JOIN batches b USING (batch_id) WHERE "
                                "b.anchor_state = 'anchored' AND l.statement_hash = ANY(%s)", (hashes,)).fetchone()[0]
                            stored = conn.execute("SELECT content_type FROM statements WHERE statement_hash = ANY(%s)",
                                                  (hashes,)).fetchall()
                        if anchored == len(hashes):
                            break
                        assert proc.alive(), proc.tail()
                        assert time.monotonic() < deadline, (anchored, log.read_text(errors="replace")[-3000:])
                        time.sleep(1)
                    # everything the pipeline stored is an envelope, with a key record for the recipient
                    assert {ct for ct, in stored} == {"application/vnd.sealstream.envelope.v1"}
                    with open_pool(dsn, max_size=1) as pool:
                        held = key_records.read(pool, hashes)
                    for h in hashes:
                        record = held[bytes(h)]
                        assert record is not None
                        assert [w.recipient for w in KeyRecord.from_bytes(record).wraps] == [qa.id]
                    # the recipient opens and proves a time series and an image
                    by_kind = {r["kind"]: bytes.fromhex(r["statement_hash"]) for r in sent}
                    assert set(by_kind) == {"timeseries", "image"}
                    plains = []
                    for kind, h in by_kind.items():
                        rc, opened, text = _cli(env, "data", "open", "blob", h.hex(), "--key", str(qa_file),
                                                "--out", str(tmp_path / f"{kind}.bin"))
                        assert rc == 0 and opened["ok"], text
                        plains.append((tmp_path / f"{kind}.bin").read_bytes())
                    # nothing in Kafka (any topic: key, value, headers) holds a slice of that plaintext
                    markers = [p[len(p) // 2:len(p) // 2 + 48] for p in plains]
                    hits = _kafka_scan(s, markers)
                    assert all(hits[m] == [] for m in markers), hits
                finally:
                    proc.stop(30)

                # a grant takes effect once the refresh period has passed (the proven path again)
                now = [0.0]
                rif = RecipientsInForce.from_settings(s, stream, refresh=10.0)
                rif._clock = lambda: now[0]
                rif._at = 0.0
                try:
                    assert rif.ids == [qa.id]
                    with admin_client(anchoring.cluster) as admin:
                        assert admin.submit("policy.grant", {"stream": stream, "recipient": late.id}).refusal is None
                    now[0] = 5.0
                    assert sorted(r.id for r in rif.current()) == [qa.id]  # not yet: within the period
                    now[0] = 10.0
                    assert sorted(r.id for r in rif.current()) == sorted([qa.id, late.id])
                    with admin_client(anchoring.cluster) as admin:
                        assert admin.submit("policy.revoke", {"stream": stream, "recipient": qa.id}).refusal is None
                    now[0] = 20.0
                    assert [r.id for r in rif.current()] == [late.id]
                    assert rif.refreshes == 2
                finally:
                    rif.close()
            finally:
                anchoring.close()
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
