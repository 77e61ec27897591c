"""The collector asks for every state value at one height, in chunks when there are many,
and asks again when the chain moved between chunks (pure logic, a fake ledger)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ledger.http_api import MAX_PROOF_KEYS
from urllib.parse import quote

from pipelines.collect import _MAX_QUERY, CollectError, Collector


class _Ledger:
    def __init__(self, heights: list[int]) -> None:
        self.heights, self.calls, self.queries = heights, [], []

    def get_state_proofs(self, keys=(), dids=()):
        self.calls.append((len(keys), len(dids)))
        self.queries.append("&".join([f"key={quote(k, safe='')}" for k in keys]
                                     + [f"did={quote(d, safe='')}" for d in dids]))
        h = self.heights.pop(0) if len(self.heights) > 1 else self.heights[0]
        return SimpleNamespace(height=h, proofs=[SimpleNamespace(key=k) for k in keys + dids])


def _collector(ledger) -> Collector:
    return Collector(store=None, reader=None, blobs=None, ledger=ledger)  # type: ignore[arg-type]


def test_few_keys_one_request() -> None:
    led = _Ledger([7])
    height, proofs = _collector(led)._state_proofs(("a", "b"), ("did:key:x",))
    assert height == 7 and len(proofs) == 3 and led.calls == [(2, 1)]


def test_many_dids_in_chunks_at_one_height() -> None:
    dids = tuple(f"did:key:{i}" for i in range(MAX_PROOF_KEYS))
    led = _Ledger([5, 6, 6, 6, 6, 6, 6, 6, 6, 6])  # the chain moves during the first round
    height, proofs = _collector(led)._state_proofs((), dids)
    assert height == 6 and len(proofs) == len(dids)
    assert all(k + 3 * d <= MAX_PROOF_KEYS for k, d in led.calls)
    assert all(len(q) <= _MAX_QUERY for q in led.queries)
    assert len(led.calls) == 8  # 4 chunks, asked twice


def test_real_dids_stay_under_the_request_line_limit() -> None:
    """did:key ids are ~56 characters: 300 of them (a batch of many devices) are split by length,
    not only by count, so no request line passes the node's HTTP limit."""
    from trust.identity import KeyPair

    dids = tuple(KeyPair.generate().did for _ in range(300))
    keys = tuple(f"anc/batch/gateway-0-{i:032x}" for i in range(40))
    led = _Ledger([9])
    height, proofs = _collector(led)._state_proofs(keys, dids)
    assert height == 9 and len(proofs) == len(keys) + len(dids)
    assert len(led.calls) > 1 and all(len(q) <= _MAX_QUERY for q in led.queries)


def test_a_chain_that_never_settles_is_an_error() -> None:
    dids = tuple(f"did:key:{i}" for i in range(MAX_PROOF_KEYS))
    led = _Ledger(list(range(100)))
    with pytest.raises(CollectError, match="moved"):
        _collector(led)._state_proofs((), dids)
