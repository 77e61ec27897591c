"""What audit rules cost a block: `ContractApp` execute + apply of ``audit.record`` txs.

    .venv/bin/python bench/audit.py [--blocks B] [--block-txs N] [--repeats R] [--json]

Configurations, interleaved R times (so other load hits them alike), medians quoted:

  anchor        ``anchors.anchor`` txs: the peer contract tx (the pipeline's steady load)
  record/0      ``audit.record`` with no rule deployed: the baseline of the audit contract
  record/3      one rule of each kind (window, rate, range), matching every op (each raises events)
  record/64     64 org rules + 64 consortium-wide rules (the most one op can meet), none matching

Per tx in microseconds (execute + apply, state root included; signatures are
the consensus core's and not counted), and the ratio to record/0. Fees are 0,
so the figures are the contracts' own work (a default fee adds about the same
to every kind; see docs/contracts.md "Cost").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import SealerSet, Transaction
from ledger.contracts import ContractApp, ContractsGenesis, GenesisEntity, GenesisOrg
from ledger.executor import BlockContext
from trust.identity import KeyPair


def _key(name: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.sha256(f"bench-audit-{name}".encode()).digest())


ADMIN, ORG, GW, NODE = _key("admin"), _key("org"), _key("gw"), _key("node")


def _genesis() -> ContractsGenesis:
    return ContractsGenesis(ADMIN.did, (GenesisOrg("acme", "Acme", ORG.did),),
                            (GenesisEntity("gw", "gateway", "acme", GW.did), GenesisEntity("n0", "node", "acme",
                                                                                           NODE.did)),
                            {}, {"*": 0})


def _rules(config: str) -> list[tuple[KeyPair, dict]]:
    if config == "record/3":
        return [(ORG, {"id": "w", "org": "acme", "kind": "window", "start": "06:00", "end": "06:01"}),
                (ORG, {"id": "r", "org": "acme", "kind": "rate", "max": 10, "per": "system"}),
                (ORG, {"id": "s", "org": "acme", "kind": "range", "param": "setpoint", "max": 0})]
    if config == "record/64":
        # none matches: each is selected out by system, the common case of many narrow rules
        return ([(ORG, {"id": f"o{i:02d}", "org": "acme", "kind": "rate", "max": 1, "match": {"system": f"x{i}"}})
                 for i in range(64)]
                + [(ADMIN, {"id": f"c{i:02d}", "org": "*", "kind": "range", "param": "p", "min": 0,
                            "match": {"system": f"y{i}"}}) for i in range(64)])
    return []


class _Run:
    def __init__(self, config: str, blocks: int, per_block: int) -> None:
        self.app = ContractApp(_genesis())
        self.nonce = 0
        self.height = 0
        self.sealers = SealerSet((NODE.did,))
        setup = [self._tx(k, "audit.deploy_rule", p) for k, p in _rules(config)]
        for i in range(0, len(setup), 64):
            self._apply(setup[i:i + 64])
        self.blocks = [[self._make(config, b * per_block + j) for j in range(per_block)] for b in range(blocks)]

    def _tx(self, k: KeyPair, kind: str, payload: dict) -> Transaction:
        self.nonce += 1
        return Transaction.create(k, self.nonce, kind, payload)

    def _make(self, config: str, i: int) -> Transaction:
        if config == "anchor":
            return self._tx(GW, "anchors.anchor", {"batch_id": f"b-{i}", "root": hashlib.sha256(b"%d" % i).digest(),
                                                   "tree_size": 64, "gateway": "gw", "window": [i, i + 1]})
        return self._tx(GW, "audit.record", {"org": "acme", "operator": f"op{i % 7}", "system": f"s{i % 5}",
                                             "op": "config", "params": {"setpoint": i % 100}})

    def _apply(self, txs: list[Transaction]) -> None:
        self.height += 1
        ctx = BlockContext(self.height, 0, 1_700_000_000_000 + 50 * self.height, NODE.did, False, self.sealers)
        ex = self.app.execute(ctx, txs)
        assert all(r["ok"] for r in ex.results), ex.results[0]
        self.app.apply(ex)

    def timed(self) -> float:
        """Microseconds per tx over every block."""
        t = time.perf_counter()
        for b in self.blocks:
            self._apply(b)
        return (time.perf_counter() - t) * 1e6 / sum(len(b) for b in self.blocks)


CONFIGS = ("anchor", "record/0", "record/3", "record/64")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--block-txs", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    samples: dict[str, list[float]] = {c: [] for c in CONFIGS}
    events: dict[str, int] = {}
    for _ in range(a.repeats):
        for c in CONFIGS:
            run = _Run(c, a.blocks, a.block_txs)
            samples[c].append(run.timed())
            events[c] = run.app.state.get("aud/meta", {"events": 0})["events"]
    med = {c: statistics.median(v) for c, v in samples.items()}
    base = med["record/0"]
    rows = [{"config": c, "us_per_tx": round(med[c], 1), "ratio_to_record0": round(med[c] / base, 2),
             "events_per_run": events[c], "samples": [round(x, 1) for x in samples[c]]} for c in CONFIGS]
    if a.json:
        print(json.dumps({"blocks": a.blocks, "block_txs": a.block_txs, "repeats": a.repeats, "rows": rows}, indent=2))
        return 0
    print(f"{a.blocks} blocks x {a.block_txs} txs, {a.repeats} interleaved repeats, medians (execute + apply)")
    print(f"{'config':<12}{'us/tx':>10}{'x record/0':>12}{'events':>10}")
    for r in rows:
        print(f"{r['config']:<12}{r['us_per_tx']:>10}{r['ratio_to_record0']:>12}{r['events_per_run']:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
