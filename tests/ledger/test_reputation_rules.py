"""Reputation: the pure rules, sealer ranking, and the evidence and heartbeat
transactions (every refusal code) on a `ContractApp` and a `KVExecutor` chain
driven block by block without consensus."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from ledger import CommitCertificate, Genesis, Params, Transaction
from ledger.values import epoch_of, is_epoch_end
from ledger.contracts import ContractApp, ContractsGenesis
from ledger.contracts import reputation as rep
from ledger.contracts.evidence import EquivocationEvidence
from ledger.executor import BlockContext, KVExecutor
from ledger.messages import Commit, Prepare, preprepare_signing_bytes
from trust import canonical
from trust.identity import KeyPair

P = Params(epoch_length=5, sealer_count=2, rep_initial=5000, rep_max=6000, rep_floor=2000, rep_sign_reward=400,
           rep_offline_after=3, rep_offline_penalty=1000, rep_equivocation_penalty=4500,
           rep_heartbeat_reward=100, rep_heartbeat_interval=2)
R = rep.Rules.of(P)
KEYS = [KeyPair.from_seed(hashlib.sha256(f"rep-node-{i}".encode()).digest()) for i in range(4)]
DIDS = [k.did for k in KEYS]
G = Genesis.create("rep-chain", DIDS, 2, P)
ADMIN = KeyPair.from_seed(hashlib.sha256(b"rep-admin").digest())
OUTSIDER = KeyPair.from_seed(hashlib.sha256(b"rep-outsider").digest())


def _hash(h: int) -> bytes:
    return hashlib.sha256(f"block-{h}".encode()).digest()


class Chain:
    """An app fed blocks directly; block h+1 carries a 'certificate' of h signed by `signers`."""

    def __init__(self, app) -> None:
        self.app = app
        self.h = 0
        self.sealers = G.sealers
        self.prev = G.sealers
        self.nonce = 0

    def block(self, txs=(), signers: tuple[str, ...] | None = None):
        self.h += 1
        h = self.h
        lc = None
        if h > 1:
            who = self.prev.members if signers is None else signers
            lc = CommitCertificate(h - 1, 0, _hash(h - 1), tuple((d, b"s") for d in who))
        ctx = BlockContext(h, epoch_of(h, P.epoch_length), 1000 + h, self.sealers.members[0],
                           is_epoch_end(h, P.epoch_length), self.sealers, G, _hash(h - 1), lc,
                           self.prev if lc is not None else None)
        ex = self.app.execute(ctx, list(txs))
        self.app.apply(ex)
        self.prev = self.sealers  # the set that certified this block
        if ex.next_sealers is not None:
            self.sealers = ex.next_sealers
        return ex

    def tx(self, key: KeyPair, kind: str, payload: dict) -> Transaction:
        self.nonce += 1
        return Transaction.create(key, self.nonce, kind, payload)

    def score(self, did: str) -> int:
        got = self.app.rep_history.at(self.h).get(did)
        return R.initial if got is None else got["score"]


def contracts_chain() -> Chain:
    return Chain(ContractApp(ContractsGenesis.for_ledger(G, ADMIN.did, fees={"*": 0})))


# ---------------------------------------------------------------- pure rules


def test_rules_reward_capped_offline_penalty_every_m_misses() -> None:
    rec = rep.default_record(R)
    rec = rep.after_signed(rec, R)
    assert rec["score"] == 5400
    assert rep.after_signed(rep.after_signed(rec, R), R)["score"] == 6000  # capped at rep_max
    for _ in range(2):
        rec = rep.after_missed(rec, R)
    assert rec == {"score": 5400, "missed": 2, "hb": 0, "offences": 0}
    rec = rep.after_missed(rec, R)  # the third miss in a row costs the penalty
    assert rec["score"] == 4400 and rec["missed"] == 0
    assert rep.after_missed(rep.after_missed(rec, R), R)["missed"] == 2
    assert rep.after_signed({**rec, "missed": 2}, R)["missed"] == 0  # signing resets the streak
    low = rep.after_offence({**rec, "score": 100}, R)
    assert low["score"] == 0 and low["offences"] == 1  # never negative
    assert rep.after_heartbeat(rec, R, 17) == {**rec, "score": 4500, "hb": 17}


def test_rank_top_k_ties_by_genesis_order_floor_excludes() -> None:
    scores = [("a", 5000), ("b", 7000), ("c", 7000), ("d", 1999), ("e", 9000)]
    assert rep.rank(scores, 3, 2000) == ("b", "c", "e")  # result in genesis order
    assert rep.rank(scores, 2, 2000) == ("b", "e")  # b beats c on the tie: earlier in genesis
    assert rep.rank(scores, 5, 2000) == ("a", "b", "c", "e")  # d is under the floor
    assert rep.rank([("d", 1)], 2, 2000) == ()


# ---------------------------------------------------------------- on a chain


@pytest.mark.parametrize("make", [contracts_chain, lambda: Chain(KVExecutor())], ids=["contracts", "kv"])
def test_certificates_drive_scores_and_sealer_sets(make) -> None:
    c = make()
    s0, s1 = DIDS[0], DIDS[1]
    c.block()  # block 1 carries no certificate
    assert c.score(s0) == R.initial
    c.block()  # block 2 carries block 1's, signed by both sealers
    assert c.score(s0) == c.score(s1) == 5400
    for _ in range(3):
        c.block(signers=(s0,))  # s1 missing from 3 certificates in a row
    assert c.h == 5 and c.score(s0) == 6000 and c.score(s1) == 4400
    # block 5 ended epoch 0: s1 (4400) loses its seat to node 2 (initial 5000, earlier than node 3)
    assert c.sealers.members == (s0, DIDS[2])


def test_contracts_and_kv_apply_the_same_rules() -> None:
    a, b = contracts_chain(), Chain(KVExecutor())
    for signers in [None, None, (DIDS[0],), (DIDS[0],), (DIDS[0],), None, (DIDS[2],)]:
        a.block(signers=signers)
        b.block(signers=signers)
        assert a.app.rep_history.at(a.h) == b.app.rep_history.at(b.h)
        assert a.sealers == b.sealers


def _evidence(key: KeyPair, kind: str = "commit", view: int = 0, height: int = 1,
              a: bytes = b"\x01" * 32, b: bytes = b"\x02" * 32) -> EquivocationEvidence:
    cls = {"commit": Commit, "prepare": Prepare}.get(kind)
    sig = []
    for d in (a, b):
        if cls is not None:
            msg = cls(key.did, view, height, d).sign(G.chain_id, key.sign)
            sig.append(msg.sig)
        else:  # a pre-prepare signs the digest of its block: sign the same bytes directly
            sig.append(key.sign(preprepare_signing_bytes(G.chain_id, view, height, d, key.did)))
    return EquivocationEvidence(key.did, view, height, a, sig[0], b, sig[1], kind)


def _result(c: Chain, tx: Transaction) -> dict:
    return c.block([tx]).results[0]


@pytest.mark.parametrize("kind", ["preprepare", "prepare", "commit"])
def test_evidence_lowers_sharply_once_per_offence(kind: str) -> None:
    c = contracts_chain()
    c.block()
    c.block()
    before = c.score(DIDS[1])
    ev = _evidence(KEYS[1], kind)
    res = _result(c, c.tx(KEYS[0], "reputation.evidence", ev.to_payload()))
    assert res["ok"] is True and res["score"] == max(0, before + R.sign_reward - R.equivocation_penalty)
    # the same offence again (also in another message kind, or digests swapped): refused, no change
    score = c.score(DIDS[1])
    for again in (ev, _evidence(KEYS[1], "prepare" if kind != "prepare" else "commit", b=b"\x03" * 32),
                  replace(ev, digest_a=ev.digest_b, sig_a=ev.sig_b, digest_b=ev.digest_a, sig_b=ev.sig_a)):
        res = _result(c, c.tx(KEYS[2], "reputation.evidence", again.to_payload()))
        assert res["code"] == "EVIDENCE_REPLAYED"
    assert c.score(DIDS[1]) == min(R.max, score + 3 * R.sign_reward)  # only its signing counted


def test_evidence_refusals_have_stable_codes() -> None:
    c = contracts_chain()
    c.block()
    good = _evidence(KEYS[0])
    cases = {
        "BAD_SIGNATURE": replace(good, sig_b=bytes(64)).to_payload(),  # forged second signature
        "NOT_CONFLICTING": _evidence(KEYS[0], b=b"\x01" * 32).to_payload(),  # one digest signed twice
        "NOT_A_SEALER": _evidence(KEYS[3]).to_payload(),  # node 3 is a backup in epoch 0
        "UNKNOWN_NODE": _evidence(OUTSIDER).to_payload(),
        "BAD_EVIDENCE": {**good.to_payload(), "kind": "checkpoint"},
    }
    for code, payload in cases.items():
        res = _result(c, c.tx(KEYS[1], "reputation.evidence", payload))
        assert res.get("code") == code, (code, res)
    # evidence signed for another chain does not verify here either
    other = KeyPair.from_seed(b"\x09" * 32)
    assert _result(c, c.tx(KEYS[1], "reputation.evidence", {**good.to_payload(), "sig_a": other.sign(b"x")}))[
        "code"] == "BAD_SIGNATURE"
    assert _result(c, c.tx(KEYS[1], "reputation.evidence", {**good.to_payload(), "extra": 1}))["code"] == "BAD_EVIDENCE"
    assert c.score(DIDS[0]) > R.initial  # nothing above lowered it


def test_heartbeats_raise_a_backup_slowly_with_codes() -> None:
    c = contracts_chain()
    for _ in range(3):
        c.block()
    backup = KEYS[3]
    ok = _result(c, c.tx(backup, "reputation.heartbeat", {"height": 3, "hash": _hash(3)}))
    assert ok["ok"] is True and ok["score"] == R.initial + R.heartbeat_reward
    codes = [
        ({"height": 4, "hash": _hash(4)}, KEYS[0], "IS_SEALER"),
        ({"height": 4, "hash": _hash(4)}, backup, "HEARTBEAT_TOO_SOON"),  # one per 2 blocks: 3, then 5
        ({"height": 5, "hash": _hash(99)}, backup, "BAD_HEARTBEAT"),
        ({"height": 99, "hash": _hash(99)}, backup, "STALE_HEARTBEAT"),
        ({"height": 5, "hash": _hash(5)}, OUTSIDER, "NOT_A_NODE"),
        ({"height": 5}, backup, "BAD_PAYLOAD"),
    ]
    for payload, key, code in codes:
        res = _result(c, c.tx(key, "reputation.heartbeat", payload))
        assert res.get("code") == code, (code, res)
    assert c.score(backup.did) == R.initial + R.heartbeat_reward  # refusals changed nothing
    assert _result(c, c.tx(backup, "reputation.heartbeat", {"height": 5, "hash": _hash(5)}))["ok"] is True


def test_a_revoked_node_is_not_eligible() -> None:
    c = contracts_chain()
    c.block()
    res = _result(c, c.tx(ADMIN, "registry.revoke", {"id": "node2"}))
    assert res["ok"] is True
    while c.h % P.epoch_length:
        c.block(signers=(DIDS[0],))
    # node 1 missed and fell behind; node 2 would be next but is revoked: node 3 takes the seat
    assert c.score(DIDS[1]) < R.initial
    assert c.sealers.members == (DIDS[0], DIDS[3])


def test_reputation_off_refuses_its_transactions() -> None:
    g = Genesis.create("rep-off", DIDS, 2, Params())
    app = ContractApp(ContractsGenesis.for_ledger(g, ADMIN.did))
    ctx = BlockContext(1, 0, 1, DIDS[0], False, g.sealers, g, _hash(0))
    ex = app.execute(ctx, [Transaction.create(KEYS[3], 1, "reputation.heartbeat", {"height": 1, "hash": _hash(0)})])
    assert ex.results[0]["code"] == "REPUTATION_OFF"


def test_history_answers_heights_and_prunes() -> None:
    h = rep.History(keep=2)
    assert h.at(5) == {}

    for height in (3, 6, 9):
        h.note(height, {rep.NODE_PREFIX + "d": canonical.encode({"score": height})})
    assert h.at(7) == {"d": {"score": 6}} and h.at(100) == {"d": {"score": 9}}
    assert h.at(4) is None  # pruned
