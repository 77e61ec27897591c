"""What a backup spends applying one committed block, per transaction: old code vs new, same run.

A backup (a node outside the epoch's sealer set) receives each block once as
a signed `CommittedBlock` frame and does what `ledger.node.Node` does with
it: decode the frame, hand it to its `Replica` (check the certificate and
the carried previous certificate, check tx root, nonces and dedup, execute,
commit) and append the block to its SQLite `BlockStore` (fsynced). This
script times exactly that path in-process (no network, no other node
competing for the CPU), for the code in this checkout and for the ledger of
an older commit (``--baseline REV``, exported with ``git archive`` into a
temporary directory), in alternating subprocesses, and prints medians.

The chain is built once per process: 4 sealers + 1 backup, `BENCH_PARAMS`,
KV app, blocks of ``--txs`` ``kv.put`` transactions from as many distinct
clients (each ~``--tx-size`` bytes of value, as `bench/ledger.py` sends),
each block carrying its predecessor's certificate. The tx-decoding memo is
cleared before timing, so every tx is decoded as on a real backup (which has
never seen it before).

    .venv/bin/python bench/_backup_apply.py                       # vs HEAD~0 of ledger/ before this file's commit
    .venv/bin/python bench/_backup_apply.py --baseline f69ae42 --repeats 5 --blocks 40 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `bench/ledger.py` would shadow the `ledger` package: import it from PYTHONPATH (the code under test) or ROOT
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(ROOT))

__all__ = ["measure", "main"]


def _build(n_blocks: int, n_txs: int, tx_size: int) -> tuple[Any, list[bytes], Any]:
    """A valid chain as CommittedBlock frames (each pushed by one sealer), and the genesis."""
    import hashlib

    from ledger import Block, BlockHeader, CommitCertificate, Genesis, KVExecutor, Transaction
    from ledger.values import commit_signing_bytes, epoch_of, is_epoch_end, tx_root_of
    from bench._ledger_target import BENCH_PARAMS
    from ledger.executor import BlockContext
    from ledger.messages import CommittedBlock, encode_message
    from trust.identity import KeyPair

    def key(name: str) -> KeyPair:
        return KeyPair.from_seed(hashlib.sha256(name.encode()).digest())

    sealers = [key(f"bench-sealer-{i}") for i in range(4)]
    backup = key("bench-backup")
    genesis = Genesis.create("bench-backup-apply", [k.did for k in sealers] + [backup.did], 4, BENCH_PARAMS)
    clients = [key(f"bench-client-{i}") for i in range(n_txs)]
    ex = KVExecutor()
    p = genesis.params
    prev, last_cert = genesis.genesis_hash(), None
    frames = []
    value = "v" * max(1, tx_size - 40)
    for h in range(1, n_blocks + 1):
        txs = tuple(Transaction.create(c, h, "kv.put", {"key": "bench", "value": f"{h}:{i}:{value}"})
                    for i, c in enumerate(clients))
        e = epoch_of(h, p.epoch_length)
        proposer = genesis.sealers.primary(0)
        t = 1_000 + h
        ctx = BlockContext(h, e, t, proposer, is_epoch_end(h, p.epoch_length), genesis.sealers, genesis, prev,
                           last_cert, genesis.sealers if last_cert is not None else None)
        run = ex.execute(ctx, txs)
        ex.apply(run)
        hdr = BlockHeader(h, prev, tx_root_of(txs), run.state_root, e, 0, proposer, t, genesis.sealers.hash(),
                          run.next_sealers, None if last_cert is None else last_cert.cert_hash())
        block = Block(hdr, txs, last_cert)
        bh = block.block_hash()
        cert = CommitCertificate(h, 0, bh, tuple(sorted(
            (k.did, k.sign(commit_signing_bytes(genesis.chain_id, 0, h, bh, k.did))) for k in sealers[:3])))
        pusher = sealers[h % 4]
        frames.append(encode_message(CommittedBlock(pusher.did, block, cert).sign(genesis.chain_id, pusher.sign)))
        prev, last_cert = bh, cert
    return genesis, frames, backup


def measure(n_blocks: int, n_txs: int, tx_size: int, profile: str | None = None) -> dict[str, float]:
    """Apply the chain on a fresh backup as `Node` does; CPU µs per tx (process time).

    With `profile`, the timed loop runs under cProfile and its stats go to that file."""
    import cProfile
    from ledger import values
    from ledger._verify import CachedVerifier
    from ledger.consensus import CommitBlock, MessageReceived, Replica, Tick
    from ledger.messages import decode_message
    from ledger.store import BlockStore

    genesis, frames, backup = _build(n_blocks, n_txs, tx_size)
    senders = [decode_message(f).sender for f in frames]
    values._tx_from_bytes.cache_clear()
    tmp = Path(tempfile.mkdtemp(prefix="sealstream-backup-apply-"))
    try:
        store = BlockStore.open(tmp / "blocks.db", genesis)
        replica = Replica(genesis, backup.did, backup.sign, verify=CachedVerifier(), archive=store, now=10_000)
        prof = cProfile.Profile() if profile else None
        if prof is not None:
            prof.enable()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for sender, frame in zip(senders, frames):
            msg = decode_message(frame)
            replica.handle(Tick(10_000))
            for e in replica.handle(MessageReceived(sender, msg)):
                if isinstance(e, CommitBlock):
                    store.append(e.block, e.cert, e.results)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if prof is not None:
            prof.disable()
            prof.dump_stats(profile)
        assert replica.height == n_blocks and store.height == n_blocks, (replica.height, store.height)
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = n_blocks * n_txs
    return {"cpu_us_per_tx": cpu / n * 1e6, "wall_us_per_tx": wall / n * 1e6}


def _export(rev: str) -> Path:
    """The `ledger/` and `trust/` packages of `rev`, in a temporary directory."""
    out = Path(tempfile.mkdtemp(prefix="sealstream-baseline-"))
    arch = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "ledger", "trust"], check=True,
                          capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=arch, check=True)
    return out


def _run_child(pythonpath: Path, args: argparse.Namespace) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    cmd = [sys.executable, __file__, "--child", "--blocks", str(args.blocks), "--txs", str(args.txs),
           "--tx-size", str(args.tx_size)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tempfile.gettempdir())
    if res.returncode != 0:
        raise SystemExit(f"child failed ({pythonpath}):\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="f69ae42", help="git revision whose ledger/ is the baseline")
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--txs", type=int, default=256, help="transactions per block")
    ap.add_argument("--tx-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", metavar="FILE", help="profile the current code's apply loop once (cProfile stats)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.blocks, args.txs, args.tx_size)))
        return 0
    if args.profile:
        print(json.dumps(measure(args.blocks, args.txs, args.tx_size, profile=args.profile)))
        return 0
    base = _export(args.baseline)
    try:
        runs: dict[str, list[dict[str, float]]] = {"baseline": [], "current": []}
        for _ in range(args.repeats):  # alternate, so drift in machine load hits both
            runs["baseline"].append(_run_child(base, args))
            runs["current"].append(_run_child(ROOT, args))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("cpu_us_per_tx", "wall_us_per_tx")}
           for k, v in runs.items()}
    report = {"baseline_rev": args.baseline, "blocks": args.blocks, "txs_per_block": args.txs,
              "tx_size": args.tx_size, "repeats": args.repeats, "median": med, "runs": runs,
              "cpu_ratio_current_over_baseline": med["current"]["cpu_us_per_tx"] / med["baseline"]["cpu_us_per_tx"],
              "loadavg": os.getloadavg()}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"backup apply, {args.blocks} blocks x {args.txs} txs, medians of {args.repeats} "
              f"(load {report['loadavg'][0]:.1f})")
        for k in ("baseline", "current"):
            print(f"  {k:9s} {med[k]['cpu_us_per_tx']:7.1f} µs CPU/tx  {med[k]['wall_us_per_tx']:7.1f} µs wall/tx"
                  + (f"  ({args.baseline})" if k == "baseline" else ""))
        print(f"  current/baseline CPU: {report['cpu_ratio_current_over_baseline']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
