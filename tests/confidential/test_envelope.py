"""The confidential envelope v1: the committed vectors (rebuilt byte for byte, opened with
`cryptography` and with an independent RFC 9180 implementation), the corruption matrix (every
corruption fails at its named step), key files, and the statement over the ciphertext."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from confidential import envelope as E
from confidential.envelope import (
    KeyRecord,
    OpenError,
    Wrap,
    open_envelope,
    parse_envelope,
    seal,
)
from confidential.keys import (
    KeyFileError,
    RecipientKey,
    load_recipient_key,
    save_recipient_key,
)
from trust import canonical
from trust.statement import Statement

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "envelope_v1.json").read_text())
CASES = {c["name"]: c for c in VECTORS["cases"]}


def fixed_random(inp: dict):
    values = iter([bytes.fromhex(inp["data_key"]), bytes.fromhex(inp["salt"])])
    return lambda n: next(values)


def keys_of(case: dict) -> list[RecipientKey]:
    return [RecipientKey.from_seed(r["id"], bytes.fromhex(r["secret"])) for r in case["input"]["recipients"]]


# ---------------------------------------------------------------- RFC 9180, independently


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + t, i + 1
    return out[:length]


def rfc9180_open_base(enc: bytes, ct: bytes, sk: X25519PrivateKey, info: bytes) -> bytes:
    """RFC 9180 single-shot OpenBase for DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM,
    written from the RFC (sections 4, 4.1, 5.1, 5.2, 6.1), aad empty."""
    kem_suite = b"KEM" + struct.pack(">H", 0x0020)
    suite = b"HPKE" + struct.pack(">HHH", 0x0020, 0x0001, 0x0002)

    def lx(sid, salt, label, ikm):
        return _extract(salt, b"HPKE-v1" + sid + label + ikm)

    def le(sid, prk, label, info_, n):
        return _expand(prk, struct.pack(">H", n) + b"HPKE-v1" + sid + label + info_, n)

    dh = sk.exchange(X25519PublicKey.from_public_bytes(enc))
    kem_context = enc + sk.public_key().public_bytes_raw()
    shared = le(kem_suite, lx(kem_suite, b"", b"eae_prk", dh), b"shared_secret", kem_context, 32)
    ksc = b"\x00" + lx(suite, b"", b"psk_id_hash", b"") + lx(suite, b"", b"info_hash", info)
    secret = lx(suite, shared, b"secret", b"")
    key, nonce = le(suite, secret, b"key", ksc, 32), le(suite, secret, b"base_nonce", ksc, 12)
    return AESGCM(key).decrypt(nonce, ct, b"")


# ---------------------------------------------------------------- vectors


@pytest.mark.parametrize("name", sorted(CASES))
def test_vector_rebuilds_byte_for_byte(name: str) -> None:
    c = CASES[name]
    inp, out = c["input"], c["output"]
    sealed = seal(bytes.fromhex(inp["plaintext"]), stream=inp["stream"], device=inp["device"], seq=inp["seq"],
                  kind=inp["kind"], content_type=inp["content_type"],
                  recipients=[(r.id, r.public) for r in keys_of(c)], chunk_size=inp["chunk_size"],
                  random=fixed_random(inp))
    assert sealed.envelope.hex() == out["envelope"]
    env = parse_envelope(sealed.envelope)
    assert env.header_bytes.hex() == out["header"] and env.header_hash.hex() == out["header_hash"]
    assert env.digest.hex() == out["envelope_sha256"] == hashlib.sha256(sealed.envelope).hexdigest()
    assert env.chunks == out["chunks"]
    salt, pt = bytes.fromhex(inp["salt"]), bytes.fromhex(inp["plaintext"])
    assert out["commitment"] == hashlib.sha256(salt + pt).hexdigest() == env.commitment.hex()
    header = canonical.decode(env.header_bytes)
    assert header == {"v": 1, "alg": "A256GCM-CHUNKED", "stream": inp["stream"], "device": inp["device"],
                      "seq": inp["seq"], "kind": inp["kind"], "content_type": inp["content_type"], "size": len(pt),
                      "chunk_size": inp["chunk_size"], "commitment": env.commitment}
    # the chunks, from the documented nonce and AAD alone
    aes, n, body = AESGCM(bytes.fromhex(inp["data_key"])), env.chunks, env.body
    step = inp["chunk_size"] + 16
    got = b"".join(aes.decrypt(i.to_bytes(12, "big"), body[i * step:(i + 1) * step],
                               b"sealstream/envelope/v1/chunk\x00" + env.header_hash + struct.pack(">Q", i)
                               + (b"\x01" if i == n - 1 else b"\x00")) for i in range(n))
    assert got == pt
    # a fresh seal of the same input differs (fresh data key, salt and HPKE ephemeral keys)
    again = seal(pt, stream=inp["stream"], device=inp["device"], seq=inp["seq"], kind=inp["kind"],
                 content_type=inp["content_type"], recipients=[(r.id, r.public) for r in keys_of(c)],
                 chunk_size=inp["chunk_size"])
    assert again.envelope != sealed.envelope


@pytest.mark.parametrize("name", sorted(CASES))
def test_vector_key_record_opens_for_every_recipient(name: str) -> None:
    c = CASES[name]
    inp, out = c["input"], c["output"]
    raw, record = bytes.fromhex(out["envelope"]), bytes.fromhex(out["key_record"])
    keys = KeyRecord.from_bytes(record)
    assert keys.to_bytes() == record and keys.envelope.hex() == out["envelope_sha256"]
    assert [w.recipient for w in keys.wraps] == sorted(r["id"] for r in inp["recipients"])
    env = parse_envelope(raw)
    for rk in keys_of(c):
        opened = open_envelope(raw, record, rk.id, rk.private, device=inp["device"], seq=inp["seq"], kind=inp["kind"])
        assert opened.plaintext.hex() == inp["plaintext"] and opened.salt.hex() == inp["salt"]
        # the same wrap opened by the RFC 9180 construction written out in this test
        w = keys.wrap_for(rk.id)
        assert len(w.ct) == 112 and w.key == rk.public
        info = E.wrap_info(inp["stream"], inp["device"], inp["seq"], env.header_hash, rk.id)
        assert info == b"sealstream/envelope/v1/wrap\x00" + canonical.encode(
            {"v": 1, "stream": inp["stream"], "device": inp["device"], "seq": inp["seq"],
             "header": env.header_hash, "recipient": rk.id})
        assert rfc9180_open_base(w.ct[:32], w.ct[32:], rk.private, info).hex() == inp["data_key"] + inp["salt"]


# ---------------------------------------------------------------- the corruption matrix


def _flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 0x01]) + b[i + 1:]


def _reheader(raw: bytes, **changes) -> bytes:
    hlen = struct.unpack(">I", raw[4:8])[0]
    hb = canonical.encode({**canonical.decode(raw[8:8 + hlen]), **changes})
    return E.MAGIC + struct.pack(">I", len(hb)) + hb + raw[8 + hlen:]


def _chunk_span(raw: bytes, i: int) -> tuple[int, int]:
    env = parse_envelope(raw)
    start = 8 + len(env.header_bytes) + i * (env.chunk_size + 16)
    return start, min(start + env.chunk_size + 16, len(raw))


def _repoint(record: KeyRecord, raw: bytes) -> KeyRecord:
    """The strongest attacker: key records are not signed, so it re-points one at its forgery."""
    return KeyRecord(hashlib.sha256(raw).digest(), record.wraps)


def _corruptions(c: dict):
    out = c["output"]
    raw = bytes.fromhex(out["envelope"])
    rec = KeyRecord.from_bytes(bytes.fromhex(out["key_record"]))
    n = out["chunks"]
    yield "magic", _flip(raw, 0), None, "envelope-format"
    yield "header-length", raw[:4] + struct.pack(">I", struct.unpack(">I", raw[4:8])[0] + 1) + raw[8:], None, \
        "envelope-format"
    yield "header-byte", _flip(raw, 9), None, "envelope-format"       # the map's first key: not canonical
    yield "appended-byte", raw + b"\x00", None, "envelope-format"
    yield "truncated-byte", raw[:-1], None, "envelope-format"
    yield "other-seq", _reheader(raw, seq=1002), None, "decrypt"
    yield "other-stream", _reheader(raw, stream="elsewhere"), None, "decrypt"
    yield "other-commitment", _reheader(raw, commitment=b"\x00" * 32), None, "decrypt"
    for i in range(n):
        a, b = _chunk_span(raw, i)
        if b - a > 16:
            yield f"chunk-{i}-ciphertext", _flip(raw, a), None, "decrypt"
        yield f"chunk-{i}-tag", _flip(raw, b - 1), None, "decrypt"
    if n >= 2:
        a0, b0 = _chunk_span(raw, 0)
        a1, b1 = _chunk_span(raw, 1)
        if b1 - a1 == b0 - a0:
            yield "chunks-swapped", raw[:a0] + raw[a1:b1] + raw[a0:b0] + raw[b1:], None, "decrypt"
        env = parse_envelope(raw)
        # the last chunk dropped and the header shortened to match: the new final chunk is not marked final
        short = _reheader(raw[:_chunk_span(raw, n - 1)[0]], size=(n - 1) * env.chunk_size)
        yield "final-chunk-dropped", short, None, "decrypt"
    w0 = rec.wraps[0]
    yield "wrap-enc", raw, KeyRecord(rec.envelope, (Wrap(w0.recipient, w0.key, _flip(w0.ct, 0)),) + rec.wraps[1:]), \
        "decrypt"
    yield "wrap-ciphertext", raw, KeyRecord(rec.envelope, (Wrap(w0.recipient, w0.key, _flip(w0.ct, 40)),)
                                            + rec.wraps[1:]), "decrypt"
    yield "wrap-tag", raw, KeyRecord(rec.envelope, (Wrap(w0.recipient, w0.key, _flip(w0.ct, 111)),)
                                     + rec.wraps[1:]), "decrypt"
    yield "wrap-truncated", raw, KeyRecord(rec.envelope, (Wrap(w0.recipient, w0.key, w0.ct[:-1]),) + rec.wraps[1:]), \
        "decrypt"
    yield "record-other-envelope", raw, KeyRecord(b"\x00" * 32, rec.wraps), "decrypt"
    yield "record-without-recipient", raw, KeyRecord(rec.envelope, rec.wraps[1:]), "not-a-recipient"


@pytest.mark.parametrize("name", sorted(CASES))
def test_corruption_matrix(name: str) -> None:
    c = CASES[name]
    rk = keys_of(c)[0]
    rec = KeyRecord.from_bytes(bytes.fromhex(c["output"]["key_record"]))
    seen = []
    for what, raw, record, step in _corruptions(c):
        record = record or _repoint(rec, raw)
        with pytest.raises(OpenError) as info:
            open_envelope(raw, record, rk.id, rk.private)
        assert info.value.step == step, (what, str(info.value))
        seen.append(what)
    assert {"magic", "chunk-0-tag", "wrap-enc", "record-without-recipient"} <= set(seen)
    # and a forged envelope never matches the statement the device signed over the original
    st = Statement.for_payload(c["input"]["device"], 1001, 1_700_000_000_000, c["input"]["kind"], E.CONTENT_TYPE,
                               bytes.fromhex(c["output"]["envelope"]))
    for _what, raw, _r, _s in _corruptions(c):
        if raw != bytes.fromhex(c["output"]["envelope"]):
            assert not st.matches_payload(raw)


@pytest.mark.parametrize("name", sorted(CASES))
def test_key_record_corruption_matrix(name: str) -> None:
    """Every single-byte change of the stored key record, and wraps moved between recipients or
    re-labelled with another key: never opens, always a named step (the record is not signed, so
    this is what anyone holding the object store can try)."""
    c = CASES[name]
    raw = bytes.fromhex(c["output"]["envelope"])
    rec_bytes = bytes.fromhex(c["output"]["key_record"])
    keys = keys_of(c)
    want = open_envelope(raw, rec_bytes, keys[0].id, keys[0].private).plaintext
    steps = set()
    for i in range(len(rec_bytes)):
        bad = _flip(rec_bytes, i)
        try:
            got = open_envelope(raw, bad, keys[0].id, keys[0].private)
        except OpenError as exc:
            assert exc.step in ("decrypt", "not-a-recipient"), (i, str(exc))
            steps.add(exc.step)
            continue
        # a flip inside another recipient's wrap leaves ours intact: it must still open to the same bytes
        assert got.plaintext == want, i
    assert "decrypt" in steps
    rec = KeyRecord.from_bytes(rec_bytes)
    mine = rec.wrap_for(keys[0].id)
    assert mine is not None
    # our wrap relabelled with another public key (the device's record says whom it wrapped to)
    other = X25519PrivateKey.generate().public_key().public_bytes_raw()
    relabelled = KeyRecord(rec.envelope, tuple(Wrap(w.recipient, other, w.ct) if w is mine else w for w in rec.wraps))
    with pytest.raises(OpenError) as info:
        open_envelope(raw, relabelled, keys[0].id, keys[0].private)
    assert info.value.step == "not-a-recipient"
    if len(keys) > 1:  # another recipient's wrap under our name and key: sealed to their key, it opens with no other
        theirs = rec.wrap_for(keys[1].id)
        assert theirs is not None
        moved = KeyRecord(rec.envelope, tuple(sorted(
            [Wrap(keys[0].id, keys[0].public, theirs.ct)] + [w for w in rec.wraps if w.recipient not in
                                                            (keys[0].id,)], key=lambda w: w.recipient)))
        with pytest.raises(OpenError) as info:
            open_envelope(raw, moved, keys[0].id, keys[0].private)
        assert info.value.step == "decrypt"


def test_statement_binding_and_commitment_steps() -> None:
    c = CASES["video-chunks"]
    inp = c["input"]
    raw = bytes.fromhex(c["output"]["envelope"])
    rec = KeyRecord.from_bytes(bytes.fromhex(c["output"]["key_record"]))
    rk, other = keys_of(c)[0], RecipientKey.from_seed("outsider", hashlib.sha256(b"outsider").digest())
    for field, value in (("device", "did:key:z6MkOther"), ("seq", 1002), ("kind", "image")):
        with pytest.raises(OpenError) as e:
            open_envelope(raw, rec, rk.id, rk.private, **{field: value})
        assert e.value.step == "envelope-binding"
    # an outsider: no wrap under its name; under a recipient's name its key is not the one wrapped to
    for rid in ("outsider", rk.id):
        with pytest.raises(OpenError) as e:
            open_envelope(raw, rec, rid, other.private)
        assert e.value.step == "not-a-recipient"
    # a wrap renamed to another recipient id (the info binds the name)
    w = rec.wrap_for(rk.id)
    renamed = KeyRecord(rec.envelope, tuple(sorted(rec.wraps[1:] + (Wrap("zz-alias", w.key, w.ct),),
                                                   key=lambda x: x.recipient)))
    with pytest.raises(OpenError) as e:
        open_envelope(raw, renamed, "zz-alias", rk.private)
    assert e.value.step == "decrypt"
    # a recipient who knows the data key re-wraps it with another salt: decrypts, but not the signed plaintext
    env = parse_envelope(raw)
    info = E.wrap_info(env.stream, env.device, env.seq, env.header_hash, rk.id)
    forged = E.SUITE.encrypt(bytes.fromhex(inp["data_key"]) + b"\x00" * 32, rk.private.public_key(), info=info)
    bad = KeyRecord(rec.envelope, tuple(Wrap(x.recipient, x.key, forged) if x.recipient == rk.id else x
                                        for x in rec.wraps))
    with pytest.raises(OpenError) as e:
        open_envelope(raw, bad, rk.id, rk.private)
    assert e.value.step == "plaintext-commitment"
    for junk in (b"", b"\xa0", canonical.encode({"v": 1, "envelope": b"x", "wraps": []}), b"\x00" * 40):
        with pytest.raises(OpenError) as e:
            KeyRecord.from_bytes(junk)
        assert e.value.step == "decrypt"


def test_seal_refuses_what_nobody_could_open() -> None:
    r = RecipientKey.generate("r")
    kw = {"stream": "s", "device": "did:key:x", "seq": 1, "kind": "image", "content_type": "image/png"}
    with pytest.raises(ValueError):
        seal(b"x", recipients=[], **kw)
    with pytest.raises(ValueError):
        seal(b"x", recipients=[("r", r.public), ("r", r.public)], **kw)
    with pytest.raises(ValueError):
        seal(b"x", recipients=[("r", r.public)], chunk_size=8, **kw)
    big = os.urandom(300_000)
    s = seal(big, recipients=[("r", r.public)], **kw)
    assert parse_envelope(s.envelope).chunks == 5 and len(s.envelope) > len(big)
    assert open_envelope(s.envelope, s.keys, "r", r.private).plaintext == big
    assert big[1000:1064] not in s.envelope and big[1000:1064] not in s.keys.to_bytes()


def test_recipient_key_files(tmp_path: Path) -> None:
    k = RecipientKey.generate("acme.qa")
    p = tmp_path / "acme.qa.key"
    save_recipient_key(k, p)
    assert (p.stat().st_mode & 0o777) == 0o600
    assert load_recipient_key(p).public == k.public and load_recipient_key(p).id == "acme.qa"
    assert k.private.private_bytes_raw().hex() not in repr(k)
    with pytest.raises(KeyFileError):
        save_recipient_key(k, p)
    p.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_recipient_key(p)
    p.chmod(0o600)
    doc = json.loads(p.read_text())
    doc["public"] = RecipientKey.generate("x").public.hex()
    p.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="does not match"):
        load_recipient_key(p)
