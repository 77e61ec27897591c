"""The no-consensus bound of bench/ledger.py (bench/_ledger_bound.py): real responder
processes over TCP, driven by the real client. Never timings: what they answer."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from bench import ledger as bench_ledger
from bench._ledger_bound import RECEIPT, BoundTarget
from ledger.client import TxRefused

pytestmark = pytest.mark.services  # responder processes over TCP


def test_responders_verify_every_signature_and_answer_f_plus_1() -> None:
    target = BoundTarget()
    target.start(4, 4)
    try:
        assert len(target._procs) == 4

        async def go() -> None:
            client = target._aclient()
            receipts = await asyncio.gather(*(client.submit("kv.put", {"key": "k",
                                                                       "value": str(i)}) for i in range(20)))
            assert {(r.height, r.index, r.block_hash) for r in receipts} == {(RECEIPT["height"], 0, bytes(32))}
            assert all(len(r.nodes) >= 2 for r in receipts)  # f+1 of 4 matching signed replies
            good = client.make_tx("kv.put", {"key": "k", "value": "x"})
            forged = replace(good, signature=bytes(64))
            with pytest.raises(TxRefused) as refused:
                await client.submit_tx(forged)
            assert refused.value.code == "bad-signature"
            await target.aclose()

        asyncio.run(go())
    finally:
        target.stop()
    assert target._procs == {} and target._dir is None


def test_bench_reports_the_bound_beside_the_ceiling() -> None:
    args = bench_ledger.parse_args(["--duration", "0.5", "--warmup", "0.2", "--drain", "5", "--clients", "8",
                                    "--ceiling-seconds", "0.2", "--ceiling-runs", "1", "--nodes", "4",
                                    "--target", "bench._target:NoSuchTarget"])
    rep = bench_ledger.build_report(args)
    bound = rep["bound"]
    assert "unavailable" not in bound, bound
    assert bound["kind"] == "bound" and bound["success_rate"] == 1.0 and bound["runs"][0]["failed"] == 0
    assert rep["ratios"]["bound_over_ceiling"] == pytest.approx(bound["tx_per_s"] / rep["ceiling"]["ceiling_tx_per_s"])
    assert rep["ratios"]["ours_4_over_bound"] is None  # ours did not run
    assert bound["node_cpu_us_per_tx"]["sealer"] > 0  # each responder's CPU per answered tx
    text = bench_ledger.format_report(rep)
    assert "no-consensus bound (4 responders" in text and "bound/ceiling" in text
