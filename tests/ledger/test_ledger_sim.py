"""Seeded Twins-style simulation of the real replica core (see `ledger.sim`).

Default: SEALSTREAM_SIM_SEEDS seeds (1500) starting at SEALSTREAM_SIM_START (0),
plus SEALSTREAM_SIM_LONG_SEEDS (60) long runs (5 s of chaos, 40 requests:
many checkpoints, view changes and state transfers under faults).
Replay one seed (long ones too): SEALSTREAM_SIM_SEED=123 .venv/bin/pytest tests/ledger/test_ledger_sim.py
"""

from __future__ import annotations

import os

import pytest

from ledger.sim import InvariantViolation, run_seed, scenario

ONE = os.environ.get("SEALSTREAM_SIM_SEED")
COUNT = int(os.environ.get("SEALSTREAM_SIM_SEEDS", "1500"))
START = int(os.environ.get("SEALSTREAM_SIM_START", "0"))
CHUNK = 100


LONG = int(os.environ.get("SEALSTREAM_SIM_LONG_SEEDS", "60"))
LONG_BASE = 100_000


def long_scenario(seed: int):
    cfg = scenario(seed)
    cfg.chaos_ms, cfg.n_txs, cfg.max_ms = 5000, 40, 60_000
    return cfg


def _run(seeds: range | list[int]) -> None:
    """Seeds >= LONG_BASE are long scenarios (so one replay line fits both)."""
    failures = []
    for seed in seeds:
        try:
            run_seed(seed, long_scenario(seed) if seed >= LONG_BASE else None)
        except InvariantViolation as exc:
            failures.append(f"{exc}\n  scenario: {long_scenario(seed) if seed >= LONG_BASE else scenario(seed)}\n"
                            f"  replay: SEALSTREAM_SIM_SEED={seed} .venv/bin/pytest tests/ledger/test_ledger_sim.py")
        except Exception as exc:  # noqa: BLE001 - a crash of the core is a failure too
            failures.append(f"seed {seed}: {type(exc).__name__}: {exc}\n"
                            f"  replay: SEALSTREAM_SIM_SEED={seed} .venv/bin/pytest tests/ledger/test_ledger_sim.py")
    if failures:
        print("\n".join(failures))
        pytest.fail(f"{len(failures)} failing seed(s):\n" + "\n".join(failures[:5]), pytrace=False)


if ONE is not None:

    def test_one_seed() -> None:
        _run([int(ONE)])

else:

    @pytest.mark.parametrize("chunk", range(START, START + COUNT, CHUNK), ids=lambda c: f"seeds{c}")
    def test_seeds(chunk: int) -> None:
        _run(range(chunk, min(chunk + CHUNK, START + COUNT)))


    if LONG:  # SEALSTREAM_SIM_LONG_SEEDS=0 (the soak's other cores) asks for none: no empty test

        @pytest.mark.parametrize("chunk", range(0, LONG, 20), ids=lambda c: f"long{c}")
        def test_long_seeds(chunk: int) -> None:
            _run(range(LONG_BASE + chunk, LONG_BASE + min(chunk + 20, LONG)))


def test_same_seed_same_run() -> None:
    a, b = run_seed(7), run_seed(7)
    assert a.steps == b.steps and a.committed == b.committed
