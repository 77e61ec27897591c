"""Puts this folder and tests/pipelines (simulator helpers) on sys.path; `pipelines` stays the package."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parent / "pipelines"), str(_HERE), str(_HERE.parents[1])):
    if _p in sys.path:
        sys.path.remove(_p)
    sys.path.insert(0, _p)
for _name in ("pipelines", "trust"):
    _mod = sys.modules.get(_name)
    if _mod is not None and getattr(_mod, "__file__", None) is None:
        del sys.modules[_name]
