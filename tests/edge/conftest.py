"""Fixtures of the edge tests; puts this folder (ticker_source) and tests/pipelines (the worker and
ledger harness) on sys.path, as tests/pipelines/conftest.py does for itself."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parent / "pipelines"), str(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)
