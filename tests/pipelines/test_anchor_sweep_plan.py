"""Pure rules of deferral and the sweep (`pipelines._anchor_plan`, `pipelines._anchor_agent.sweep_settings`,
`GatewayFilter`): which seals of a window are cut, deferred or refused; which deferred seals may be acked;
which gateways the sweep batches; the statement ts round trip; the sweep's settings."""

from __future__ import annotations

import pytest

from pipelines._anchor_agent import SWEEP_GRACE_ENV, SWEEP_INTERVAL_ENV, GatewayFilter, sweep_settings
from pipelines._anchor_metrics import sweep_metrics
from pipelines._anchor_plan import (GATEWAY, UNBOUND, SealedLeaf, leaf_of_row, plan_batch, settle_deferred,
                                    sweep_gateways, triage)
from pipelines.metrics import PipelineMetrics
from storage.records import ms_to_datetime
from trust.hashes import sha256

STATUS = {"did:key:ours": GATEWAY, "did:key:later": UNBOUND, "did:key:dev": "device", "did:key:node": "node"}


def _leaf(i: int, gw: str | None) -> SealedLeaf:
    return SealedLeaf(sha256(bytes([i])), 1_700_000_000_000 + i, gw)


def test_triage_sorts_a_window_and_keeps_its_order() -> None:
    gws = ["did:key:ours", "did:key:later", "did:key:dev", None, "did:key:later", "did:key:node", "did:key:ours"]
    leaves = [_leaf(i, g) for i, g in enumerate(gws)]
    asked = []

    def status(did):
        asked.append(did)
        return GATEWAY if did is None else STATUS[did]

    t = triage(leaves, status)
    assert t.batch == (leaves[0], leaves[3], leaves[6])
    assert t.defer == (leaves[1], leaves[4])
    assert t.refuse == ((leaves[2], "device"), (leaves[5], "node"))
    assert asked == gws  # each seal judged once
    # every seal lands in exactly one of the three
    assert len(t.batch) + len(t.defer) + len(t.refuse) == len(leaves)
    assert triage([], status) == triage((), status)


def test_deferred_seals_are_acked_only_when_their_statement_is_stored_sealed() -> None:
    a, b, c = _leaf(1, "did:key:later"), _leaf(2, "did:key:later"), _leaf(3, "did:key:later")
    kept, absent = settle_deferred([a, b, c], {bytes(a.statement_hash): "did:key:later",
                                              bytes(c.statement_hash): "did:key:x"})
    assert kept == (a, c) and absent == (b,)
    assert settle_deferred([a], {}) == ((), (a,))
    assert settle_deferred([], {bytes(a.statement_hash): "g"}) == ((), ())


def test_sweep_batches_only_our_ledgers_gateways_and_reports_the_rest() -> None:
    counts = {"did:key:ours": 5, "did:key:later": 3, "did:key:dev": 2, "did:key:node": 1, None: 7}
    sweep, waiting = sweep_gateways(counts, lambda d: STATUS[d])
    assert sweep == ["did:key:ours"]
    assert waiting == {"unknown-gateway": {"did:key:later": 3}, "not-a-gateway": {"did:key:dev": 2, "did:key:node": 1}}
    # once the late gateway is registered, its statements are swept too
    STATUS2 = {**STATUS, "did:key:later": GATEWAY}
    sweep, waiting = sweep_gateways(counts, lambda d: STATUS2[d])
    assert sweep == ["did:key:later", "did:key:ours"] and waiting["unknown-gateway"] == {}
    assert sweep_gateways({}, lambda d: GATEWAY) == ([], {"unknown-gateway": {}, "not-a-gateway": {}})


def test_a_swept_statement_gives_the_leaf_its_seal_gives() -> None:
    """The sweep rebuilds leaves from ``statements.ts``: the same ms as the seal's ``ts``, so a batch cut
    by the sweep is the batch the agent would have cut from the same seals."""
    seals = [_leaf(i, "did:key:ours") for i in range(6)] + [SealedLeaf(sha256(b"x"), 1_699_999_999_999, None)]
    rows = [leaf_of_row(bytes(lf.statement_hash), ms_to_datetime(lf.ts_ms), lf.gateway) for lf in seals]
    assert [(r.statement_hash, r.ts_ms) for r in rows] == [(lf.statement_hash, lf.ts_ms) for lf in seals]
    assert plan_batch(rows, "gw-1") == plan_batch(seals, "gw-1")
    assert leaf_of_row(b"\x00" * 32, ms_to_datetime(0), None).ts_ms == 0


def test_sweep_settings_from_settings_environment_or_defaults() -> None:
    assert sweep_settings(environ={}) == (60.0, 15.0)
    assert sweep_settings(environ={SWEEP_GRACE_ENV: "2.5", SWEEP_INTERVAL_ENV: "0"}) == (2.5, 0.0)
    assert sweep_settings(environ={SWEEP_GRACE_ENV: ""}) == (60.0, 15.0)

    class S:
        pipeline_anchor_sweep_grace_s = 7
        pipeline_anchor_sweep_interval_s = None  # not set: the environment decides

    assert sweep_settings(S(), environ={SWEEP_GRACE_ENV: "1", SWEEP_INTERVAL_ENV: "3"}) == (7.0, 3.0)
    with pytest.raises(ValueError, match=SWEEP_GRACE_ENV):
        sweep_settings(environ={SWEEP_GRACE_ENV: "soon"})
    with pytest.raises(ValueError, match=SWEEP_INTERVAL_ENV):
        sweep_settings(environ={SWEEP_INTERVAL_ENV: "-1"})


class _Registry:
    """Answers `resolve_key` as a ledger node does (``{"resolution": {...}}``, None if never bound)."""

    def __init__(self) -> None:
        self.bound: dict[str, str] = {}
        self.calls = 0

    def resolve_key(self, did: str):
        self.calls += 1
        if did == "did:key:down":
            raise ConnectionError("no node answered")
        t = self.bound.get(did)
        return None if t is None else {"state_height": 3, "resolution": {"type": t, "status": "active"}}


def test_gateway_filter_status_and_its_caches() -> None:
    reg = _Registry()
    reg.bound.update({"did:key:gw": "gateway", "did:key:dev": "device"})
    f = GatewayFilter(reg, "did:key:own", ttl=60.0, negative_ttl=0.0)
    assert f.status("did:key:own") == GATEWAY and f.status(None) == GATEWAY and reg.calls == 0
    assert (f.status("did:key:gw"), f.status("did:key:dev"), f.status("did:key:new")) == (GATEWAY, "device", UNBOUND)
    assert f.known("did:key:gw") and not f.known("did:key:new") and not f.known("did:key:dev")
    n = reg.calls
    assert f.status("did:key:gw") == GATEWAY and reg.calls == n  # a gateway is cached for `ttl`
    reg.bound["did:key:new"] = "gateway"  # registered later: seen at once (negative ttl 0)
    assert f.status("did:key:new") == GATEWAY
    with pytest.raises(ConnectionError):  # an outage is not an answer: the caller retries, nothing is cached
        f.status("did:key:down")
    cached = GatewayFilter(reg, "did:key:own", negative_ttl=3600.0)
    assert cached.status("did:key:late2") == UNBOUND
    reg.bound["did:key:late2"] = "gateway"
    assert cached.status("did:key:late2") == UNBOUND  # still within the negative ttl


def test_sweep_metrics_register_once_and_are_off_with_the_workers() -> None:
    m = PipelineMetrics()
    a, b = sweep_metrics(m), sweep_metrics(m)
    assert a is b
    a.deferred.labels("unknown-gateway").inc(3)
    a.sweep_found.inc(2)
    a.sweep_waiting.labels("not-a-gateway").set(4)
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in m.registry.collect() for s in fam.samples}
    assert got[("sealstream_pipeline_anchor_deferred_total", (("reason", "unknown-gateway"),))] == 3
    assert got[("sealstream_pipeline_anchor_sweep_found_total", ())] == 2
    assert got[("sealstream_pipeline_anchor_sweep_waiting", (("reason", "not-a-gateway"),))] == 4
    off = PipelineMetrics.switched(False)
    s = sweep_metrics(off)
    s.deferred.labels("x").inc()
    s.sweep_waiting.labels("y").set(1)
    assert not [x for fam in off.registry.collect() for x in fam.samples]
    sweep_metrics(None).sweep_found.inc()
