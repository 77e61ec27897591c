"""Make `import trust` resolve to the package, not to this test folder.

tests/conftest.py (without tests/__init__.py) puts tests/ on sys.path, where
the folder tests/trust/ would be found as a namespace package named `trust`
before the editable install's finder runs.  Putting the repository root first
avoids that.  (A project-wide fix is `pythonpath = ["."]` in the pytest
options.)
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
_mod = sys.modules.get("trust")
if _mod is not None and getattr(_mod, "__file__", None) is None:
    del sys.modules["trust"]  # a namespace package picked up from tests/
