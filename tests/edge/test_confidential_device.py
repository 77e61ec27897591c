"""Confidential devices on the edge (issue 18), pure: the config's ``confidential`` table, the
recipients file / public key files, `edge.sdk.seal_confidential` (opens for the recipient, passes
the ingest checks on the ciphertext), and `Recipients` re-reading a recipients file that changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from confidential.device import RecipientsFileError, load_recipients, public_key_doc, recipients_doc
from confidential.envelope import CONTENT_TYPE, KEYS_HEADER, open_envelope
from confidential.keys import RecipientKey
from edge.config import ConfigError, check_config, load_config
from edge.sdk import EDGE_RECEIVED_HEADER, Recipients, seal_confidential, timeseries_payload
from edge.signing import FileSigner
from trust.identity import KeyPair, save_keypair
from trust.statement import from_kafka_headers, verify_statement

BASE = """
[edge]
factory = "plant-a"
[devices.press-1]
kind = "timeseries"
key = {{ file = "keys/press-1.key" }}
{conf}
[sources.cam]
type = "files"
device = "press-1"
path = "incoming"
"""


def _cfg(tmp: Path, conf: str) -> Path:
    (tmp / "keys").mkdir(exist_ok=True)
    if not (tmp / "keys" / "press-1.key").exists():
        save_keypair(tmp / "keys" / "press-1.key", KeyPair.generate())
    p = tmp / "edge.toml"
    p.write_text(BASE.format(conf=conf))
    return p


def _rfile(tmp: Path, stream: str, *keys: RecipientKey, name: str = "recipients.json") -> Path:
    p = tmp / name
    p.write_text(json.dumps(recipients_doc(stream, 7, [(k.id, "operator", k.public) for k in keys])))
    return p


def test_config_takes_a_recipients_file_or_public_key_files(tmp_path: Path) -> None:
    qa, buyer = RecipientKey.generate("qa"), RecipientKey.generate("buyer")
    _rfile(tmp_path, "line-3", qa)
    cfg = load_config(_cfg(tmp_path, 'confidential = { stream = "line-3", recipients = "recipients.json" }'))
    conf = cfg.devices["press-1"].confidential
    assert conf is not None and conf.stream == "line-3" and conf.recipients == tmp_path / "recipients.json"
    assert check_config(tmp_path / "edge.toml") == []
    (tmp_path / "qa.pub").write_text(json.dumps(public_key_doc(qa.id, qa.public)))
    (tmp_path / "buyer.pub").write_text(json.dumps(public_key_doc(buyer.id, buyer.public)))
    cfg = load_config(_cfg(tmp_path, 'confidential = { stream = "line-3", recipients = ["qa.pub", "buyer.pub"] }'))
    conf = cfg.devices["press-1"].confidential
    assert conf is not None
    assert load_recipients(conf.recipients, "line-3") == [(qa.id, qa.public), (buyer.id, buyer.public)]
    assert check_config(tmp_path / "edge.toml") == []


def test_config_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(_cfg(tmp_path, 'confidential = { stream = "line-3", recipients = "ledger" }'))
    assert "sealstream data recipients" in str(e.value) and "devices.press-1.confidential.recipients" in str(e.value)
    with pytest.raises(ConfigError):
        load_config(_cfg(tmp_path, 'confidential = { recipients = [], extra = 1 }'))
    # a recipients file of another stream, or missing: check_config says so
    _rfile(tmp_path, "line-4", RecipientKey.generate("qa"))
    probs = check_config(_cfg(tmp_path, 'confidential = { stream = "line-3", recipients = "recipients.json" }'))
    assert [p.path for p in probs] == ["devices.press-1.confidential.recipients"] and "line-4" in probs[0].message
    os.unlink(tmp_path / "recipients.json")
    assert check_config(tmp_path / "edge.toml")[0].path == "devices.press-1.confidential.recipients"


def test_load_recipients_refuses_what_nobody_could_open(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    for doc in ({"v": 1, "stream": "s", "recipients": []}, {"v": 2, "stream": "s", "recipients": []},
                {"v": 1, "stream": "s", "recipients": [{"id": "a", "key": "00"}]},
                {"v": 1, "stream": "s", "recipients": [{"id": "a", "key": "11" * 32}, {"id": "a", "key": "22" * 32}]}):
        p.write_text(json.dumps(doc))
        with pytest.raises(RecipientsFileError):
            load_recipients(p, "s")
    p.write_text("not json")
    with pytest.raises(RecipientsFileError):
        load_recipients(p, "s")


def test_sdk_seal_confidential_opens_for_the_recipient_and_signs_the_envelope() -> None:
    kp = KeyPair.generate()
    qa = RecipientKey.generate("qa")
    payload = timeseries_payload([(1767225600000, "secret-setpoint", 61.8)])
    msg = seal_confidential(FileSigner(kp), 5, 1767225600000, "timeseries", "application/vnd.apache.arrow.stream",
                            payload, stream="line-3", recipients=[(qa.id, qa.public)], received_ms=1767225600013)
    assert b"secret-setpoint" not in msg.value and all(b"secret-setpoint" not in v for _, v in msg.headers)
    names = [k for k, _ in msg.headers]
    assert names[-2:] == [KEYS_HEADER, EDGE_RECEIVED_HEADER] and msg.topic == "iiot.timeseries.raw"
    stmt, sig = from_kafka_headers(list(msg.headers))
    assert stmt == msg.statement and stmt.content_type == CONTENT_TYPE and verify_statement(stmt, sig, kp.did)
    opened = open_envelope(msg.value, dict(msg.headers)[KEYS_HEADER], qa.id, qa.private, device=kp.did, seq=5,
                           kind="timeseries")
    assert opened.plaintext == payload


def test_recipients_reload_when_the_file_changes(tmp_path: Path) -> None:
    qa, late = RecipientKey.generate("qa"), RecipientKey.generate("late")
    p = _rfile(tmp_path, "line-3", qa)
    rc = Recipients("line-3", p)
    assert [i for i, _ in rc.current()] == [qa.id]
    p2 = _rfile(tmp_path, "line-3", qa, late, name="new.json")
    os.replace(p2, p)
    assert sorted(i for i, _ in rc.current()) == sorted([qa.id, late.id])
    p.write_text("broken")  # an unusable file keeps the last good list
    assert sorted(i for i, _ in rc.current()) == sorted([qa.id, late.id])
