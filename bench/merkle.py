"""Benchmark trust.merkle against the bare hashlib floor and pymerkle.

    .venv/bin/python bench/merkle.py [--leaves N] [--repeats R] [--proofs K] [--json]

Every measurement runs R times, interleaved (floor, ours, pymerkle, floor,
...) so that load from other processes hits all of them alike; the table
quotes medians and the ratios are taken between medians.

Floors ("the same hashes, nothing else"):
  sha256-only   N-1 SHA-256 calls over pre-built 65-byte node inputs: the cost
                of the hashing alone on this machine (no concatenation, no
                tree bookkeeping).
  bare loop     a plain for-loop computing the same RFC 9162 node hashes
                level by level, as one would write it without a library.
  bare verify   hashing along each audit path with no checks or direction
                logic: the floor of proof verification.
Targets (from the issue): root building >= 90% of the bare-loop rate; proof
verification >= 100k proofs/s.  Misses are reported, not hidden.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trust import merkle

try:  # optional comparison
    import pymerkle
except ImportError:  # pragma: no cover
    pymerkle = None

_sha = hashlib.sha256


def bare_sha_only(msgs: list[bytes]) -> None:
    sha = _sha
    for m in msgs:
        sha(m).digest()


def bare_loop_root(leaf_hashes: list[bytes]) -> bytes:
    """The same node hashes as RFC 9162, in a plain loop."""
    sha = _sha
    level = leaf_hashes
    right = None
    while len(level) > 1:
        nxt = []
        n = len(level)
        for i in range(0, n - 1, 2):
            nxt.append(sha(b"\x01" + level[i] + level[i + 1]).digest())
        if n & 1:
            tail = level[-1]
            right = tail if right is None else sha(b"\x01" + tail + right).digest()
        level = nxt
    top = level[0]
    return top if right is None else sha(b"\x01" + top + right).digest()


def bare_verify(items: list[tuple[bytes, list[bytes]]]) -> None:
    sha = _sha
    for leaf, proof in items:
        r = leaf
        for h in proof:
            r = sha(b"\x01" + h + r).digest()


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--proofs", type=int, default=20_000, help="random leaves to prove/verify per repeat")
    ap.add_argument("--no-pymerkle", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = ap.parse_args(argv)
    n, reps, k = args.leaves, args.repeats, min(args.proofs, args.leaves)
    use_pm = pymerkle is not None and not args.no_pymerkle
    load_before = os.getloadavg()

    # Inputs (not timed): N statement-hash-like entries and their leaf hashes.
    entries = [_sha(i.to_bytes(8, "big")).digest() for i in range(n)]
    leaf_hashes = merkle.leaf_hashes(entries)
    node_msgs = [b"\x01" + os.urandom(64) for _ in range(max(n - 1, 0))]
    rng = random.Random(7)
    indexes = [rng.randrange(n) for _ in range(k)]

    expected_root = merkle.root(leaf_hashes)
    assert bare_loop_root(leaf_hashes) == expected_root, "bare loop disagrees with trust.merkle"
    tree = merkle.MerkleTree(leaf_hashes)
    proofs = [tree.inclusion_proof(i) for i in indexes]
    old_sizes = [rng.randrange(1, n + 1) for _ in range(k)]

    samples: dict[str, list[float]] = {}
    per: dict[str, tuple[int, str]] = {}

    def add(name: str, seconds: float, count: int | None = None, unit: str | None = None) -> None:
        if count is None:
            count, unit = (n, "leaves/s") if not per_proof[0] else (k, "proofs/s")
        per[name] = (count, unit or "")
        samples.setdefault(name, []).append(seconds)

    per_proof = [False]

    pm_tree = None
    pm_root = None
    pm_proofs = None
    for _ in range(reps):
        per_proof[0] = False
        # --- root building ---------------------------------------------------
        add("sha256-only floor (N-1 hashes)", timed(lambda: bare_sha_only(node_msgs)))
        add("bare loop root (N-1 hashes)", timed(lambda: bare_loop_root(leaf_hashes)))
        add("trust root(leaf_hashes)", timed(lambda: merkle.root(leaf_hashes)))
        add("trust MerkleTree(leaf_hashes)", timed(lambda: merkle.MerkleTree(leaf_hashes)))

        def compact():
            cr = merkle.CompactRange()
            app = cr.append
            for h in leaf_hashes:
                app(h)
            return cr.root()

        add("trust CompactRange.append xN", timed(compact))
        add("trust root from entries (2N-1 hashes)", timed(lambda: merkle.root(merkle.leaf_hashes(entries))))
        if use_pm:
            def pm_build():
                nonlocal pm_tree, pm_root
                pm_tree = pymerkle.InmemoryTree.init_from_entries(entries)
                pm_root = pm_tree.get_root()

            add("pymerkle InmemoryTree from entries", timed(pm_build))

        # --- proofs -------------------------------------------------------------
        per_proof[0] = True
        add("trust inclusion_proof", timed(lambda: [tree.inclusion_proof(i) for i in indexes]))

        def verify_all():
            root = tree.root()
            vi = merkle.verify_inclusion
            for i, p in zip(indexes, proofs):
                vi(leaf_hashes[i], i, n, p, root)

        add("bare verify floor", timed(lambda: bare_verify([(leaf_hashes[i], p) for i, p in zip(indexes, proofs)])))
        add("trust verify_inclusion", timed(verify_all))

        def verify_batch():
            v = merkle.InclusionVerifier(n, tree.root())
            for i, p in zip(indexes, proofs):
                v.verify(leaf_hashes[i], i, p)

        add("trust InclusionVerifier (batch, cold)", timed(verify_batch))
        warm = merkle.InclusionVerifier(n, tree.root())
        for i, p in zip(indexes, proofs):
            warm.verify(leaf_hashes[i], i, p)

        def verify_warm(warm: merkle.InclusionVerifier = warm) -> None:  # this round's verifier
            for i, p in zip(indexes, proofs):
                warm.verify(leaf_hashes[i], i, p)

        add("trust InclusionVerifier (batch, re-check)", timed(verify_warm))
        add("trust consistency_proof", timed(lambda: [tree.consistency_proof(m) for m in old_sizes]))
        cproofs = [tree.consistency_proof(m) for m in old_sizes]
        roots_old = [tree.root_at(m) for m in old_sizes]
        root_new = tree.root()

        def verify_cons(roots_old: list = roots_old, cproofs: list = cproofs, root_new: bytes = root_new) -> None:
            vc = merkle.verify_consistency
            for m, r, p in zip(old_sizes, roots_old, cproofs):
                vc(m, n, r, root_new, p)

        add("trust verify_consistency", timed(verify_cons))
        if use_pm:
            def pm_prove():
                nonlocal pm_proofs
                pm_proofs = [pm_tree.prove_inclusion(i + 1) for i in indexes]

            add("pymerkle prove_inclusion", timed(pm_prove))

            def pm_verify():
                for i, p in zip(indexes, pm_proofs):
                    pymerkle.verify_inclusion(leaf_hashes[i], pm_root, p)

            add("pymerkle verify_inclusion", timed(pm_verify))

    med = {name: statistics.median(v) for name, v in samples.items()}
    units = {name: (per[name][0] / med[name], per[name][1]) for name in med}

    def rate(name: str) -> float:
        return units[name][0]

    ratios = {
        "root / bare loop": rate("trust root(leaf_hashes)") / rate("bare loop root (N-1 hashes)"),
        "root / sha256-only": rate("trust root(leaf_hashes)") / rate("sha256-only floor (N-1 hashes)"),
        "MerkleTree / bare loop": rate("trust MerkleTree(leaf_hashes)") / rate("bare loop root (N-1 hashes)"),
        "verify_inclusion / bare verify": rate("trust verify_inclusion") / rate("bare verify floor"),
    }
    if use_pm:
        ratios["root from entries / pymerkle build"] = (
            rate("trust root from entries (2N-1 hashes)") / rate("pymerkle InmemoryTree from entries")
        )
        ratios["inclusion_proof / pymerkle prove"] = rate("trust inclusion_proof") / rate("pymerkle prove_inclusion")
        ratios["verify_inclusion / pymerkle verify"] = (rate("trust verify_inclusion")
                                                       / rate("pymerkle verify_inclusion"))
    targets = {
        "root >= 90% of bare loop": ratios["root / bare loop"] >= 0.9,
        "verify_inclusion >= 100k/s": rate("trust verify_inclusion") >= 100_000,
        "InclusionVerifier cold >= 100k/s": rate("trust InclusionVerifier (batch, cold)") >= 100_000,
        "InclusionVerifier re-check >= 100k/s": rate("trust InclusionVerifier (batch, re-check)") >= 100_000,
    }
    result = {
        "leaves": n,
        "repeats": reps,
        "proofs": k,
        "path_length": len(proofs[0]) if proofs else 0,
        "python": sys.version.split()[0],
        "pymerkle": getattr(pymerkle, "__version__", "installed") if use_pm else None,
        "pymerkle_root_matches": (pm_root == expected_root) if use_pm else None,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "median_seconds": {k_: round(v, 6) for k_, v in med.items()},
        "rates": {k_: round(v[0]) for k_, v in units.items()},
        "units": {k_: v[1] for k_, v in units.items()},
        "ratios": {k_: round(v, 3) for k_, v in ratios.items()},
        "targets_met": targets,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"trust.merkle benchmark: {n:,} leaves, {k:,} proofs (path length {result['path_length']}), "
          f"median of {reps}, Python {result['python']}")
    print(f"load average before {result['loadavg_before']} after {result['loadavg_after']}")
    print(f"{'measurement':42} {'median s':>10} {'rate':>14}")
    for name in med:
        r, unit = units[name]
        print(f"{name:42} {med[name]:10.4f} {r:14,.0f} {unit}")
    if use_pm:
        print(f"pymerkle root equals trust root: {result['pymerkle_root_matches']}")
    print("ratios:")
    for name, v in ratios.items():
        print(f"  {name:40} {v:6.3f}")
    print("targets:")
    for name, ok in targets.items():
        print(f"  {name:40} {'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
