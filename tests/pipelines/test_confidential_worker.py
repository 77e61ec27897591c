"""Confidential records through the real worker path (`IngestProcessor.process_batch` against the
real PostgreSQL and MinIO, no Kafka): the device SDK (`seal_confidential`) encrypts for the
recipients the policy has in force (a deterministic contracts chain), the worker checks, stores
and seals the ciphertext with no key, the key record lands apart at ``keys/<statement hash>``,
no plaintext marker reaches MinIO or the shared tables, and the named recipient opens and
proves what the pipeline stored while an outsider cannot."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psycopg
import pytest

from confidential.envelope import CONTENT_TYPE, KEYS_HEADER, OpenError, open_envelope
from confidential.keys import RecipientKey
from ledger.contracts.confidentiality import recipients_at
from pipelines.app import build_processor
from pipelines.checks import DeviceKey
from pipelines.devices import generate, seal
from pipelines.devices.confidential import seal_confidential
from pipelines.devices.payloads import Payload
from pipelines.worker import RawRecord, Seal
from storage.blobs import BlobStore
from storage import key_records
from storage.db import open_pool
from trust.identity import KeyPair

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ledger"))
from test_contracts_helpers import ACME, BETA, Chain, code

pytestmark = pytest.mark.services

MARKER = b"SEALSTREAM-PLAINTEXT-MARKER-7f3a"


class _Directory:
    def __init__(self, *keys: KeyPair) -> None:
        self._known = {k.did: DeviceKey(k.did, k.did, False) for k in keys}

    def resolve(self, did: str):
        return self._known.get(did)


def _raw(msg, offset: int, now: int) -> RawRecord:
    return RawRecord(msg.topic, 0, offset, msg.key, msg.value, list(msg.headers), now)


def _policy() -> tuple[Chain, RecipientKey, RecipientKey]:
    c = Chain()
    qa, buyer = RecipientKey.generate("acme.qa"), RecipientKey.generate("beta.buyer")
    assert code(c.one(ACME, "registry.register_enc_key", {"id": qa.id, "org": "acme", "key": qa.public.hex()})) is None
    assert code(c.one(BETA, "registry.register_enc_key", {"id": buyer.id, "org": "beta",
                                                           "key": buyer.public.hex()})) is None
    assert code(c.one(ACME, "policy.grant", {"stream": "line-3", "recipient": qa.id})) is None
    return c, qa, buyer


def test_confidential_records_are_stored_as_ciphertext_and_open_for_recipients(dev_settings) -> None:
    chain, qa, buyer = _policy()
    in_force = recipients_at(chain.app.state, "line-3", chain.height)
    assert [r.id for r in in_force] == ["acme.qa"]
    dev, plain_dev = KeyPair.generate(), KeyPair.generate()
    now = int(time.time() * 1000)
    ts = generate("timeseries", 1, "t", 1, now)
    secret_ts = Payload("timeseries", ts.content_type, ts.data + MARKER)   # Arrow stream + a trailing marker
    img = generate("image", 1, "i", 2, now)
    secret_img = Payload("image", img.content_type, img.data + MARKER)
    c1 = seal_confidential(dev, 1, now, secret_ts, stream="line-3", recipients=in_force)
    c2 = seal_confidential(dev, 2, now, secret_img, stream="line-3", recipients=in_force, chunk_size=4096)
    p1 = seal(plain_dev, 1, now, generate("timeseries", 1, "p", 1, now))    # a plain stream beside it
    for m in (c1, c2):
        assert m.statement.content_type == CONTENT_TYPE and MARKER not in m.value
        assert m.statement.payload_sha256 == __import__("hashlib").sha256(m.value).digest()
        assert all(MARKER not in v for _, v in m.headers)

    proc, pool = build_processor(dev_settings, _Directory(dev, plain_dev))
    try:
        out = proc.process_batch([_raw(c1, 0, now), _raw(c2, 1, now), _raw(p1, 2, now)])
        assert all(isinstance(r, Seal) for r in out), [getattr(r, "reason", None) for r in out]
        blobs = BlobStore.from_settings(dev_settings)
        # read back as the owner: the worker's role may only insert readings (security on)
        with psycopg.connect(dev_settings.postgres_dsn) as conn, \
                open_pool(dev_settings.postgres_dsn, max_size=1) as owner:
            for m in (c1, c2):
                h = m.statement.hash()
                n_rows = conn.execute("SELECT count(*) FROM readings WHERE statement_hash = %s", (h,)).fetchone()[0]
                n_blobs = conn.execute("SELECT count(*) FROM blobs WHERE statement_hash = %s", (h,)).fetchone()[0]
                assert (n_rows, n_blobs) == (0, 1)  # a confidential time series is never parsed into rows
                stored = blobs.get_raw(m.statement.payload_sha256)
                assert stored == m.value and MARKER not in stored
                record = key_records.read(owner, [h])[h]
                assert record == dict(m.headers)[KEYS_HEADER] and MARKER not in record
                row = conn.execute("SELECT canonical, signature FROM statements WHERE statement_hash = %s",
                                   (h,)).fetchone()
                assert MARKER not in bytes(row[0]) and MARKER not in bytes(row[1])
                # the named recipient opens and proves what the pipeline stored
                opened = open_envelope(stored, record, qa.id, qa.private, device=dev.did, seq=m.statement.seq,
                                       kind=m.statement.kind)
                assert opened.plaintext.endswith(MARKER)
                # a partner's recipient not granted, and the pipeline's operator (no key at all), cannot
                with pytest.raises(OpenError) as e:
                    open_envelope(stored, record, buyer.id, buyer.private)
                assert e.value.step == "not-a-recipient"
            assert conn.execute("SELECT count(*) FROM readings WHERE statement_hash = %s",
                                (p1.statement.hash(),)).fetchone()[0] > 0
        assert out[0].statement.hash() == c1.statement.hash()
        # erasure's primitive, as its role: the key record goes, the signed payload stays
        h2 = c2.statement.hash()
        with open_pool(dev_settings.postgres_dsn_for("erasure"), max_size=1) as eraser:
            assert key_records.destroy(eraser, [h2]) == (1, [])
            assert key_records.read(eraser, [h2]) == {h2: None}
            # a redelivery of the raw message (its ss-keys header still carries the record) restores nothing
            again = proc.process_batch([_raw(c2, 1, now)])
            assert isinstance(again[0], Seal) and again[0].redelivery
            assert key_records.read(eraser, [h2]) == {h2: None}
        assert blobs.get_raw(c2.statement.payload_sha256) == c2.value
    finally:
        proc.close()
        pool.close()


def test_open_record_names_each_step(dev_settings) -> None:
    """The reader's pure steps on what the worker stored (the CLI as a user runs it, on a real
    ledger, is tests/verify/test_confidential_e2e.py)."""
    from pipelines.opener import OpenFailure, open_record

    chain, qa, buyer = _policy()
    dev = KeyPair.generate()
    now = int(time.time() * 1000)
    img = generate("image", 1, "i", 3, now)
    m = seal_confidential(dev, 1, now, Payload("image", img.content_type, img.data + MARKER), stream="line-3",
                          recipients=recipients_at(chain.app.state, "line-3", chain.height))
    granted_at = chain.height
    assert code(chain.one(ACME, "policy.revoke", {"stream": "line-3", "recipient": qa.id})) is None
    proc, pool = build_processor(dev_settings, _Directory(dev))
    try:
        assert isinstance(proc.process_batch([_raw(m, 0, now)])[0], Seal)
    finally:
        proc.close()
        pool.close()
    # the policy as of a height: granted when sealed, revoked by the next block
    blobs = BlobStore.from_settings(dev_settings)
    h = m.statement.hash()
    with open_pool(dev_settings.postgres_dsn_for("erasure"), max_size=1) as eraser:
        payload, record = blobs.get_raw(m.statement.payload_sha256), key_records.read(eraser, [h])[h]
    assert record is not None
    st = chain.app.state
    assert open_record(m.statement, m.signature, payload, record, qa, stream_state=st, height=granted_at)
    for who, height, step in ((qa, chain.height, "recipient-revoked"), (buyer, chain.height, "not-a-recipient")):
        with pytest.raises(OpenFailure) as e:
            open_record(m.statement, m.signature, payload, record, who, stream_state=st, height=height)
        assert e.value.step == step
    # tampered ciphertext fails payload-hash for anyone; a tampered wrapped key fails decrypt
    bad = payload[:-1] + bytes([payload[-1] ^ 1])
    with pytest.raises(OpenFailure) as e:
        open_record(m.statement, m.signature, bad, record, qa)
    assert e.value.step == "payload-hash"
    tampered = record[:-1] + bytes([record[-1] ^ 1])
    with pytest.raises(OpenFailure) as e:
        open_record(m.statement, m.signature, payload, tampered, qa)
    assert e.value.step == "decrypt"
    assert open_record(m.statement, m.signature, payload, record, qa).plaintext == img.data + MARKER
    # a deleted key record: nothing opens it
    with open_pool(dev_settings.postgres_dsn_for("erasure"), max_size=1) as eraser:
        assert key_records.destroy(eraser, [h]) == (1, [])
        assert key_records.read(eraser, [h]) == {h: None}
    with pytest.raises(OpenFailure) as e:
        open_record(m.statement, m.signature, payload, None, qa)
    assert e.value.step == "decrypt"
