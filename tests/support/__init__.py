"""Helpers the tests share, in one place: tests import them from here (``from support.workers
import WorkerProc``; ``tests/`` is on ``sys.path`` through ``tests/conftest.py``), never from
``bench/``'s private modules. Process handling itself is product code (`infra.process`); these
modules only give it the shape a test wants (log tails in assertion messages, metric reads).

- `support.workers` — a ``sealstream pipeline worker`` subprocess (`WorkerProc`).
"""
