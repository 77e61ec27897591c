"""Make `import ledger` resolve to the package, not to this test folder.

tests/conftest.py (without tests/__init__.py) puts tests/ on sys.path, where
tests/ledger/ would be found as a namespace package named `ledger` before the
editable install's finder runs; put the repository root first (same fix as
tests/trust/conftest.py). Also puts this folder on the path for
`ledger_helpers`.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
_ROOT = str(Path(__file__).resolve().parents[2])
for p in (_HERE, _ROOT):
    if p in sys.path:
        sys.path.remove(p)
    sys.path.insert(0, p)
for name in ("ledger", "trust"):
    mod = sys.modules.get(name)
    if mod is not None and getattr(mod, "__file__", None) is None:
        del sys.modules[name]  # a namespace package picked up from tests/
