"""The throughput paths: transactions as canonical bytes (encoded and decoded
once), client request batches, one-copy backup pushes, and signed replies
encoded once. Each must be exactly equivalent to the slow form it replaces."""

from __future__ import annotations

import pytest

from ledger import Block, Transaction
from ledger.values import tx_root_of
from ledger.consensus import Reply, RequestsSubmitted, RequestSubmitted, Tick
from ledger.errors import WireError
from ledger.messages import ClientRequests, CommittedBlock, PrePrepare, Request, decode_message, encode_message
from ledger.replies import REPLIES_KIND, TxReplies
from ledger.values import MSG_TAG
from ledger_helpers import Client, cluster, heights
from trust import canonical
from trust.hashes import sha256


def _run(sim, t):
    sim.run_until(sim.now + t)


# ---------------------------------------------------------------- transactions as bytes


def test_tx_raw_is_its_canonical_encoding_and_from_bytes_is_memoised():
    c = Client("fast-raw")
    tx = c.tx({"nested": [1, b"x", None, True]})
    assert tx.raw == canonical.encode(tx.to_wire())
    assert tx.tx_id == sha256(tx.raw)
    again = Transaction.from_bytes(bytes(tx.raw))
    assert again == tx and again.tx_id == tx.tx_id and again.payload == tx.payload
    assert Transaction.from_bytes(bytes(tx.raw)) is again  # one object per byte string
    assert again.signing_bytes() == tx.signing_bytes() and again.verify_signature()


@pytest.mark.parametrize("payload", [0, None, "", "x" * 300, {"a": [1, 2, {"b": b"\x00" * 40}]}, [True, False, -5]])
def test_signing_bytes_sliced_from_raw_equal_the_encoded_signed_body(payload):
    c = Client("fast-signing")
    tx = c.tx(payload)
    for t in (tx, Transaction.from_bytes(bytes(tx.raw))):
        assert t.signing_bytes() == Transaction.signing_bytes_for(t.submitter, t.nonce, t.kind, t.payload)
    assert tx.verify_signature()


@pytest.mark.parametrize("raw", [
    b"", b"\xa0", b"\x01", canonical.encode({"submitter": "x", "nonce": -1, "kind": "k", "payload": 0, "sig": b""}),
    canonical.encode({"submitter": "x", "nonce": 1, "kind": "k", "payload": 0}),
    canonical.encode({"submitter": "x", "nonce": 1, "kind": "k", "payload": 0, "sig": "s"}),
    b"\xa5" + canonical.encode({"submitter": "x", "nonce": 1, "kind": "k", "payload": 0, "sig": b""})[1:] + b"\x00",
])
def test_from_bytes_refuses_what_from_wire_refuses_and_non_canonical_bytes(raw):
    with pytest.raises(WireError):
        Transaction.from_bytes(raw)


def test_non_canonical_tx_bytes_are_refused():
    tx = Client("fast-noncanon").tx(5)
    w = tx.to_wire()
    # nonce with a non-minimal head: same value, other bytes, so another tx id
    bad = bytearray(tx.raw)
    nonce_enc = canonical.encode(w["nonce"])
    i = bytes(bad).index(canonical.encode("nonce") + nonce_enc) + len(canonical.encode("nonce"))
    bad[i:i + len(nonce_enc)] = b"\x1b" + w["nonce"].to_bytes(8, "big")
    with pytest.raises(WireError):
        Transaction.from_bytes(bytes(bad))


def test_block_wire_carries_tx_bytes_and_accepts_the_map_form_of_old_stores():
    c = Client("fast-block")
    txs = tuple(c.tx(i) for i in range(3))
    sim = cluster()
    for tx in txs:
        sim.submit(tx, sim.ids)
    _run(sim, 2000)
    block, cert = sim.instances[0].replica.block_at(1)
    w = block.to_wire()
    assert all(type(t) is bytes for t in w["txs"])
    back = Block.from_wire(canonical.decode(canonical.encode(w)))
    assert back.block_hash() == block.block_hash() and back.txs == block.txs and back.tx_root_ok()
    legacy = {"header": w["header"], "txs": [t.to_wire() for t in block.txs]}
    old = Block.from_wire(canonical.decode(canonical.encode(legacy)))
    assert [t.tx_id for t in old.txs] == [t.tx_id for t in block.txs]
    assert tx_root_of(old.txs) == block.header.tx_root


def test_a_node_decodes_a_tx_once_for_its_request_and_its_block():
    c = Client("fast-once")
    tx = c.tx(1)
    req = decode_message(encode_message(Request(c.key.did, tx)))
    sim = cluster()
    sim.submit(tx, sim.ids)
    _run(sim, 2000)
    block, cert = sim.instances[0].replica.block_at(1)
    msg = decode_message(encode_message(PrePrepare(sim.instances[0].node_id, 0, 1, block)))
    assert msg.block.txs[0] is req.tx
    # a certified block's txs (backups, state transfer) are decoded apart, never memoised
    pushed = decode_message(encode_message(CommittedBlock(sim.instances[0].node_id, block, cert)))
    got = pushed.block.txs[0]
    assert got is not req.tx and got.to_wire() == req.tx.to_wire() and got.tx_id == req.tx.tx_id
    assert got.signing_bytes() == req.tx.signing_bytes() and got.raw == req.tx.raw


def test_certified_tx_bytes_skip_the_strict_decoder_but_not_the_memo():
    """Non-canonical tx bytes decode by the certified path (the certificate and tx root vouch for
    them there) but never through `Transaction.from_bytes`, even after the certified path saw them."""
    from ledger.values import _tx_from_certified_bytes

    tx = Client("fast-lax").tx(1)
    w = tx.to_wire()
    # same values, but the nonce as a non-minimal 8-byte integer: not canonical
    raw = tx.raw.replace(b"enonce" + canonical.encode(w["nonce"]), b"enonce\x1b" + w["nonce"].to_bytes(8, "big"))
    assert raw != tx.raw
    lax = _tx_from_certified_bytes(raw)
    assert lax.to_wire() == w and lax.tx_id != tx.tx_id  # other bytes, other id: the tx root would not match
    with pytest.raises(WireError):
        Transaction.from_bytes(raw)
    with pytest.raises(WireError):
        _tx_from_certified_bytes(b"\xff\x00")


# ---------------------------------------------------------------- request batches


def test_client_requests_round_trip():
    c = Client("fast-batch")
    txs = tuple(c.tx(i) for i in range(5))
    msg = decode_message(encode_message(ClientRequests(c.key.did, txs)))
    assert isinstance(msg, ClientRequests) and msg.txs == txs and msg.sender == c.key.did


def test_a_batch_is_one_event_one_block_and_refusals_are_answered():
    sim = cluster(max_block_txs=64)
    c = Client("fast-batch-event")
    good = [c.tx(i) for i in range(10)]
    forged = Transaction(good[0].submitter, 999, "kv.put", {"key": "k", "value": 0}, b"\x00" * 64)
    primary = sim.instances[0].replica
    primary.handle(Tick(sim.now))
    out = primary.handle(RequestsSubmitted(tuple(good) + (forged, good[3]), client="c1"))
    assert len(primary.mempool) == 10
    assert [e.result for e in out if isinstance(e, Reply)] == [{"error": "bad-signature"}]
    assert primary.drops["duplicate_request"] == 1
    # the same txs reach every sealer in one batch each; they commit in one block
    for inst in sim.instances[1:]:
        inst.replica.handle(Tick(sim.now))
        sim._effects(inst, inst.replica.handle(RequestsSubmitted(tuple(good), client="c1")))
    sim._effects(sim.instances[0], primary.handle(Tick(sim.now + 100)))
    sim.submitted.update({t.tx_id: t for t in good})
    _run(sim, 3000)
    assert set(heights(sim).values()) == {1}
    block, _ = primary.block_at(1)
    assert {t.tx_id for t in block.txs} == {t.tx_id for t in good}


def test_a_batch_in_the_simulator_commits_everywhere():
    sim = cluster(n_backups=1)
    c = Client("fast-batch-sim")
    sim.submit_many([c.tx(i) for i in range(7)], sim.ids)
    _run(sim, 3000)
    sim.check_liveness()
    assert len(set(heights(sim).values())) == 1


def test_cut_timer_is_armed_once_while_requests_wait():
    sim = cluster(max_block_txs=100, block_time_ms=50)
    c = Client("fast-cut")
    primary = sim.instances[0].replica
    primary.handle(Tick(sim.now))
    armed = 0
    for i in range(5):
        out = primary.handle(RequestSubmitted(c.tx(i), client=None))
        armed += sum(1 for e in out if type(e).__name__ == "SetTimer" and e.timer_id[0] == "cut")
    assert armed == 1


# ---------------------------------------------------------------- backups


def test_each_backup_gets_each_block_once_and_sealers_share_the_pushes():
    sim = cluster(n_backups=4)
    c = Client("fast-fanout")
    pushes: dict[str, int] = {}
    orig = sim._effects

    def spy(inst, effects):
        for e in effects:
            if type(e).__name__ == "Broadcast" and isinstance(e.msg, CommittedBlock):
                pushes[inst.name] = pushes.get(inst.name, 0) + len(e.to)
        return orig(inst, effects)

    sim._effects = spy
    for round_ in range(4):
        sim.submit(c.tx(round_), sim.ids)
        _run(sim, 1000)
    assert set(heights(sim).values()) == {4}
    assert sum(pushes.values()) == 4 * 4  # 4 blocks x 4 backups, one copy each
    assert len(pushes) == 4 and set(pushes.values()) == {4}  # every sealer pushed its share
    for inst in sim.instances[4:]:
        assert inst.replica.drops["stale_height"] == 0


def test_a_backup_whose_pushing_sealer_is_down_still_catches_up():
    sim = cluster(n_backups=4)
    c = Client("fast-fanout-crash")
    sim.crash(sim.instances[3])  # a non-primary sealer: a quarter of the pushes never happen
    for round_ in range(6):
        sim.submit(c.tx(round_), [i.node_id for i in sim.instances if i.alive])
        _run(sim, 1500)
    _run(sim, 3000)
    hs = heights(sim)
    assert len(set(hs.values())) == 1 and min(hs.values()) == 6, hs


# ---------------------------------------------------------------- replies


def test_replies_bytes_equal_the_plain_canonical_forms():
    c = Client("fast-replies")
    answers = [(b"\x01" * 32, {"height": 3, "index": 0, "block": b"\x02" * 32, "result": {"ok": True}}),
               (b"\x03" * 32, {"error": "replay"})]
    r = TxReplies.of(c.key.did, answers).sign("chain-x", c.key.sign)
    body = {"node": c.key.did, "items": [[t, canonical.encode(a)] for t, a in answers]}
    assert r.signing_bytes("chain-x") == canonical.encode([MSG_TAG, "chain-x", REPLIES_KIND, body])
    frame = r.encode()
    assert frame == canonical.encode({"kind": REPLIES_KIND, "body": body, "sig": r.sig})
    back = TxReplies.decode(frame)
    assert back.__dict__["_body"] == canonical.encode(body)  # the slice, not a re-encoding
    assert back.answers() == answers and back.verify("chain-x", lambda d, m, s: c.key.did == d and
                                                     m == r.signing_bytes("chain-x") and s == r.sig)
    with pytest.raises(WireError):
        TxReplies.decode(canonical.encode({"kind": REPLIES_KIND, "sig": r.sig,
                                           "body": {"node": c.key.did, "items": [[b"\x01" * 32, answers[0][1]]]}}))


def _random_value(rnd, depth=0):
    k = rnd.randrange(8 if depth < 4 else 5)
    if k == 0:
        return rnd.randrange(-(2**64) + 1, 2**64) if rnd.random() < 0.3 else rnd.randrange(-1000, 1000)
    if k == 1:
        return "".join(chr(rnd.randrange(32, 0x3000)) for _ in range(rnd.randrange(30)))
    if k == 2:
        return rnd.randbytes(rnd.randrange(70))
    if k == 3:
        return rnd.choice([True, False, None])
    if k == 4:
        return rnd.randrange(2**63)
    if k == 5:
        return [_random_value(rnd, depth + 1) for _ in range(rnd.randrange(5))]
    return {f"k{rnd.randrange(50)}" if rnd.random() < 0.9 else "x" * rnd.randrange(40): _random_value(rnd, depth + 1)
            for _ in range(rnd.randrange(6))}


def test_the_certified_decoder_gives_exactly_the_strict_decoders_values_on_canonical_bytes():
    """What makes skipping the strict decoder for certified blocks sound: on canonical bytes both
    decoders yield the same values, types included (seeded random payloads of every canonical type)."""
    import random

    from ledger.values import _tx_from_certified_bytes

    rnd = random.Random(4)
    c = Client("fast-values")
    for _ in range(1500):
        tx = c.tx(_random_value(rnd))
        strict, lax = Transaction.from_bytes(tx.raw), _tx_from_certified_bytes(tx.raw)
        assert repr(lax.to_wire()) == repr(strict.to_wire()) and lax.tx_id == strict.tx_id
        assert lax.signing_bytes() == strict.signing_bytes()


# ---------------------------------------------------------------- commit-latency histogram


def test_block_observed_latency_histogram_exposes_what_prometheus_client_does():
    import random

    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from ledger.metrics import LATENCY_BUCKETS, NodeMetrics

    ref_registry = CollectorRegistry()
    ref = Histogram("sealstream_ledger_commit_latency_seconds", "x", ["node"], registry=ref_registry,
                    buckets=LATENCY_BUCKETS).labels("n0")
    ours = NodeMetrics("n0", lambda: {}, enabled=True).commit_latency
    rng = random.Random(7)
    # bucket bounds themselves (le is inclusive), zero, past the last bound, and a spread
    values = [*LATENCY_BUCKETS, 0.0, 45.0, *(rng.expovariate(8) for _ in range(2000))]
    for v in values[:20]:
        ref.observe(v)
        ours.observe(v)
    for v in values[20:]:
        ref.observe(v)
    ours.observe_many(values[20:])

    def series(text: str) -> dict[str, float]:
        out = {}
        for line in text.splitlines():
            if line.startswith("sealstream_ledger_commit_latency_seconds_") and "_created" not in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    want = series(generate_latest(ref_registry).decode())
    got = series(generate_latest(_registry_of(ours)).decode())
    assert got.keys() == want.keys() and len(want) == len(LATENCY_BUCKETS) + 3  # buckets, +Inf, count, sum
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name


def _registry_of(collector):
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    reg.register(collector)
    return reg
