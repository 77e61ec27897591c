"""`ProvenDirectory`, pure logic: a hand-built certified chain (real headers, real commit certificates
signed by 3 of 4 sealer keys, real sparse-Merkle proofs of registry states) behind a fake client whose
nodes can lag, serve old states, lie about their tip, or tamper with proofs.

Real services are in test_directory_proven_cluster.py; here the chain is small and in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any, Callable, Optional

import pytest

from ledger import BlockHeader, CommitCertificate, Genesis, Params
from ledger.values import commit_signing_bytes
from ledger.client import NodeUnavailable, StateProof, StateProofs
from ledger.contracts import ContractState, recompute_root
from ledger.contracts import _smt
from ledger.contracts.registry import did_key, ent_key, registry_closure
from ledger.errors import LedgerError
from pipelines.directory import DirectoryUnavailable, ProvenDirectory
from trust import canonical
from trust.identity import KeyPair

SEALERS = [KeyPair.from_seed(bytes([i + 1]) * 32) for i in range(4)]
GENESIS = Genesis.create("unit-chain", [k.did for k in SEALERS], params=Params(epoch_length=1000))
DEV = KeyPair.from_seed(b"\x21" * 32).did   # the device's first key
DEV2 = KeyPair.from_seed(b"\x22" * 32).did  # its key after a rotation
OTHER = KeyPair.from_seed(b"\x23" * 32).did  # never registered
NAMES = ["n0", "n1", "n2", "n3"]


def _enc(v: Any) -> bytes:
    return canonical.encode(v)


def _record(type_: str, org: str, keys: list, revoked: Optional[list] = None) -> dict:
    return {"type": type_, "org": org, "name": "", "keys": keys, "registered": [1, 0], "revoked": revoked,
            "reason": ""}


def _states() -> dict[int, dict[str, bytes]]:
    """Height -> state map. 1: org and device registered; 2: nothing for us (another tx);
    3: the device revoked; 4: an unrelated write; 5: nothing changes for the device."""
    org = _enc(_record("org", "o", [["did:key:org-admin", 1, 0]]))
    s1 = {ent_key("o"): org, did_key(DEV): _enc("dev-1"), ent_key("dev-1"): _enc(_record("device", "o", [[DEV, 1, 0]])),
          ent_key("dev-2"): _enc(_record("device", "o", [[DEV, 1, 1]]))}  # another device, never revoked
    s2 = dict(s1, **{"x/2": _enc(2)})
    s3 = dict(s2, **{ent_key("dev-1"): _enc(_record("device", "o", [[DEV, 1, 0]], revoked=[3, 0]))})
    s4 = dict(s3, **{"x/4": _enc(4)})
    s5 = dict(s4, **{"x/5": _enc(5)})
    return {1: s1, 2: s2, 3: s3, 4: s4, 5: s5}


def _tree(state: dict[str, bytes]) -> ContractState:
    kh = lambda k: hashlib.sha256(k.encode()).digest()  # noqa: E731
    tree = _smt.build((kh(k), hashlib.sha256(v).digest()) for k, v in state.items())
    return ContractState(state, tree, 0)


def _chain(states: dict[int, dict[str, bytes]], signers: int = 3) -> list[tuple[BlockHeader, CommitCertificate]]:
    out = []
    prev = GENESIS.genesis_hash()
    for h in sorted(states):
        hdr = BlockHeader(h, prev, bytes(32), recompute_root(states[h]), 0, 0, SEALERS[0].did, 1000 + h,
                          GENESIS.sealers.hash())
        hh = hdr.header_hash()
        sigs = tuple((k.did, k.sign(commit_signing_bytes(GENESIS.chain_id, 0, h, hh,
                                                         k.did))) for k in SEALERS[:signers])
        out.append((hdr, CommitCertificate(h, 0, hh, sigs)))
        prev = hh
    return out


STATES = _states()
CHAIN = _chain(STATES)


@dataclass
class FakeNode:
    """What one node answers. `tip`: its height (status, headers, proofs); `claim`: the tip its status
    claims (default `tip`); `proof_height`: serve proofs of this older state; `tamper(list) -> list`
    rewrites its proofs; `headers`: the chain it serves; `down`: refuses every request."""

    tip: int
    claim: Optional[int] = None
    proof_height: Optional[int] = None
    tamper: Optional[Callable[[list], list]] = None
    headers: list = field(default_factory=lambda: CHAIN)
    header_hash: Optional[bytes] = None
    down: bool = False


class FakeClient:
    def __init__(self, tips: list[int]) -> None:
        self.genesis = GENESIS
        self.nodes = [SimpleNamespace(name=n) for n in NAMES]
        self.node = {n: FakeNode(t) for n, t in zip(NAMES, tips)}
        self.calls: dict[str, int] = {"status": 0, "headers": 0, "proofs": 0}
        self.header_starts: list[int] = []

    def _up(self, node: str) -> FakeNode:
        n = self.node[node]
        if n.down:
            raise NodeUnavailable(f"{node} is down")
        return n

    def get_status(self, node: str) -> dict:
        self.calls["status"] += 1
        n = self._up(node)
        h = n.tip if n.claim is None else n.claim
        tip = n.headers[h - 1][0].header_hash().hex() if 1 <= h <= len(n.headers) else "00" * 32
        return {"height": h, "tip": tip}

    def get_header_page(self, start: int, end: Optional[int], node: str) -> list:
        self.calls["headers"] += 1
        self.header_starts.append(start)
        n = self._up(node)
        top = min(n.tip, len(n.headers), end if end is not None else n.tip)
        return n.headers[start - 1:min(top, start + 1)]  # pages of 2 headers

    def get_state_proofs(self, keys=(), dids=(), node=None) -> StateProofs:
        self.calls["proofs"] += 1
        n = self._up(node)
        h = n.proof_height if n.proof_height is not None else n.tip
        st = _tree(STATES[h])
        proofs = []
        for did in dids:
            for k in registry_closure(st, did):
                p = st.prove(k)
                proofs.append(StateProof(k, p["value"], h, None, p))
        if n.tamper is not None:
            proofs = n.tamper(proofs)
        hh = n.header_hash if n.header_hash is not None else n.headers[h - 1][0].header_hash()
        return StateProofs(h, hh, tuple(proofs))


def _directory(client: FakeClient, now: list[float], **kw) -> ProvenDirectory:
    kw.setdefault("ttl", 10.0)
    kw.setdefault("negative_ttl", 2.0)
    return ProvenDirectory(client, clock=lambda: now[0], **kw)


def test_resolves_active_then_revoked_from_fresh_proofs() -> None:
    c = FakeClient([2, 2, 2, 2])
    now = [0.0]
    d = _directory(c, now)
    k = d.resolve(DEV)
    assert k is not None and k.public_key == DEV and not k.revoked and k.entity == "dev-1"
    assert d.floor == 2
    assert d.resolve(OTHER) is None  # proven absent: not a registered device
    for n in c.node.values():
        n.tip = 3
    now[0] = 11  # past ttl and floor_ttl (5 s)
    assert d.resolve(DEV).revoked
    assert sum(d.refused.values()) == 0


def test_stale_proof_is_refused_and_the_next_node_asked() -> None:
    """n0 serves a correct proof of the state before the revocation; the others are at the revocation."""
    c = FakeClient([3, 3, 3, 3])
    c.node["n0"].proof_height = 2
    d = _directory(c, [0.0])
    k = d.resolve(DEV)
    assert k is not None and k.revoked
    assert d.refused["stale"] == 1 and d.floor == 3


def test_no_fresh_proof_anywhere_raises_transient_and_caches_nothing() -> None:
    c = FakeClient([3, 3, 3, 3])
    for n in c.node.values():
        n.proof_height = 2
    now = [0.0]
    d = _directory(c, now)
    with pytest.raises(DirectoryUnavailable) as info:
        d.resolve(DEV)
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, LedgerError)
    assert d.refused["stale"] == 4
    c.node["n2"].proof_height = None
    assert d.resolve(DEV).revoked  # nothing was cached from the failure


def test_one_node_at_the_tip_raises_the_floor_for_all() -> None:
    """Only n3 reports the revocation's height; n0..n2 (lagging or lying) are at 2 and serve proofs of
    2 — refused once the floor is 3, until one of them catches up."""
    c = FakeClient([2, 2, 2, 3])
    now = [0.0]
    d = _directory(c, now)
    c.node["n3"].tamper = lambda proofs: []  # n3 raises the floor but serves no usable proof
    with pytest.raises(DirectoryUnavailable):
        d.resolve(DEV)
    assert d.floor == 3
    assert d.refused["stale"] == 3 and d.refused["incomplete"] == 1
    c.node["n1"].tip = 3
    assert d.resolve(DEV).revoked


def test_floor_only_moves_forward_and_fetches_only_new_headers() -> None:
    c = FakeClient([3, 3, 3, 3])
    now = [0.0]
    d = _directory(c, now)
    d.refresh_floor()
    assert d.floor == 3 and c.header_starts == [1, 3]  # pages of 2: 1-2, 3
    for n in c.node.values():
        n.tip = 5
    c.node["n0"].tip = c.node["n0"].claim = 1  # a node far behind never lowers the floor
    c.header_starts.clear()
    now[0] = 6
    d.refresh_floor()
    assert d.floor == 5 and c.header_starts == [4]
    assert d.refused["bad-header"] == 0


def test_claimed_tip_that_cannot_be_backed_is_ignored() -> None:
    c = FakeClient([3, 3, 3, 3])
    c.node["n0"].claim = 99  # status says 99, headers stop at 3
    d = _directory(c, [0.0])
    assert d.resolve(DEV).revoked
    assert d.floor == 3 and d.refused["bad-header"] == 1


def test_headers_with_a_bad_certificate_do_not_raise_the_floor() -> None:
    states = {h: STATES[h] for h in (1, 2, 3)}
    forged = _chain({**states, 4: dict(STATES[3], **{did_key(DEV): _enc("x")})}, signers=2)  # 2 of 4: no quorum
    assert [h for h, _ in forged[:3]] == [h for h, _ in CHAIN[:3]]  # block 4 extends the real chain
    good = CHAIN[:3] + [forged[3]]
    c = FakeClient([3, 3, 3, 3])
    c.node["n0"].headers = good
    c.node["n0"].tip = 4
    d = _directory(c, [0.0])
    d.refresh_floor()
    assert d.floor == 3 and d.refused["bad-header"] == 1


def test_too_few_nodes_backing_a_tip_is_transient() -> None:
    c = FakeClient([3, 3, 3, 3])
    for n in ("n1", "n2", "n3"):
        c.node[n].down = True
    d = _directory(c, [0.0])
    with pytest.raises(DirectoryUnavailable, match="need 2"):
        d.resolve(DEV)
    c.node["n1"].down = False
    assert d.resolve(DEV).revoked


def _swap_value(key: str, value: bytes) -> Callable[[list], list]:
    return lambda proofs: [replace(p, value=value) if p.key == key else p for p in proofs]


def test_value_not_matching_its_proof_is_refused() -> None:
    """n0 rewrites the entity record to not revoked (the proof is for the revoked one)."""
    c = FakeClient([3, 3, 3, 3])
    c.node["n0"].tamper = _swap_value(ent_key("dev-1"), STATES[2][ent_key("dev-1")])
    d = _directory(c, [0.0])
    assert d.resolve(DEV).revoked
    assert d.refused["bad-proof"] == 1


def test_proof_for_another_key_is_refused() -> None:
    """n0 answers the device's entity key with a (valid) proof of another device's record (active)."""
    def other_key(proofs: list) -> list:
        st = _tree(STATES[3])
        p = st.prove(ent_key("dev-2"))
        return [replace(q, value=p["value"], proof=p) if q.key == ent_key("dev-1") else q for q in proofs]

    c = FakeClient([3, 3, 3, 3])
    c.node["n0"].tamper = other_key
    d = _directory(c, [0.0])
    assert d.resolve(DEV).revoked
    assert d.refused["bad-proof"] == 1


def test_proof_of_an_old_state_labelled_as_the_new_height_is_refused() -> None:
    """n0 claims height 3 (the certified header's hash) but proves the state of height 2."""
    def old_state(proofs: list) -> list:
        st = _tree(STATES[2])
        return [replace(p, value=st.prove(p.key)["value"], proof=st.prove(p.key)) for p in proofs]

    c = FakeClient([3, 3, 3, 3])
    c.node["n0"].tamper = old_state
    d = _directory(c, [0.0])
    assert d.resolve(DEV).revoked
    assert d.refused["bad-proof"] == 1


def test_missing_org_record_is_refused_not_defaulted() -> None:
    """Without the org's record, the org's revocation could not be seen: the answer is refused."""
    c = FakeClient([3, 3, 3, 3])
    c.node["n0"].tamper = lambda proofs: [p for p in proofs if p.key != ent_key("o")]
    d = _directory(c, [0.0])
    assert d.resolve(DEV).revoked
    assert d.refused["incomplete"] == 1


def test_header_hash_other_than_the_certified_one_is_refused() -> None:
    c = FakeClient([3, 3, 3, 3])
    c.node["n0"].header_hash = b"\x07" * 32
    d = _directory(c, [0.0])
    assert d.resolve(DEV).revoked
    assert d.refused["bad-header"] == 1


def test_rotated_key_resolves_to_the_key_of_the_time() -> None:
    rotated = dict(STATES[2], **{did_key(DEV2): _enc("dev-1"),
                                 ent_key("dev-1"): _enc(_record("device", "o", [[DEV, 1, 0], [DEV2, 3, 0]]))})
    states = {1: STATES[1], 2: STATES[2], 3: rotated}
    chain = _chain(states)
    c = FakeClient([3, 3, 3, 3])
    for n in c.node.values():
        n.headers = chain
    old_states = dict(STATES)
    STATES.update(states)
    try:
        d = _directory(c, [0.0])
        k = d.resolve(DEV)
        assert k is not None and k.public_key == DEV2 and not k.revoked
    finally:
        STATES.update(old_states)


def test_cache_expires_with_ttl_and_with_the_floor_it_was_judged_against() -> None:
    c = FakeClient([2, 2, 2, 2])
    now = [0.0]
    d = _directory(c, now, ttl=10.0, floor_ttl=4.0)
    assert not d.resolve(DEV).revoked  # floor refreshed at 0
    now[0] = 3.0
    d.invalidate(DEV)
    assert not d.resolve(DEV).revoked  # floor still from 0 (age 3 < 4): cached until 0 + 10, not 3 + 10
    proofs = c.calls["proofs"]
    for n in c.node.values():
        n.tip = 3
    now[0] = 9.9
    assert not d.resolve(DEV).revoked and c.calls["proofs"] == proofs  # cached
    now[0] = 10.0
    assert d.resolve(DEV).revoked and c.calls["proofs"] == proofs + 1
    assert d.resolve(OTHER) is None
    calls = c.calls["proofs"]
    now[0] = 11.0
    assert d.resolve(OTHER) is None and c.calls["proofs"] == calls  # negative answer cached 2 s
    now[0] = 12.5
    assert d.resolve(OTHER) is None and c.calls["proofs"] == calls + 1


def test_metrics_collector_reports_refusals_and_floor() -> None:
    c = FakeClient([3, 3, 3, 3])
    c.node["n0"].proof_height = 2
    d = _directory(c, [0.0])
    d.resolve(DEV)
    fams = {f.name: f for f in d.collect()}
    refused = {s.labels["reason"]: s.value for s in fams["sealstream_pipeline_directory_refused"].samples
               if s.name.endswith("_total")}
    assert refused["stale"] == 1 and refused["bad-proof"] == 0
    assert fams["sealstream_pipeline_directory_floor_height"].samples[0].value == 3
