"""Fixtures for the device simulator tests: a throwaway SEALSTREAM_HOME per module, the real Kafka.

Makes `import pipelines` resolve to the package, never to this folder (same fix
as tests/storage/conftest.py), and puts this folder on sys.path for `devices_helpers`.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
_ROOT = str(Path(__file__).resolve().parents[2])
for _p in (_HERE, _ROOT):
    if _p in sys.path:
        sys.path.remove(_p)
    sys.path.insert(0, _p)
for _name in ("pipelines", "trust"):
    _mod = sys.modules.get(_name)
    if _mod is not None and getattr(_mod, "__file__", None) is None:
        del sys.modules[_name]

import pytest  # noqa: E402

from sealstream.settings import Settings, load_settings  # noqa: E402


@pytest.fixture(scope="module")
def dev_settings(stack, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The stack's settings with a fresh home (factories, keys, seqs, sent-logs)."""
    return load_settings(home=tmp_path_factory.mktemp("devices-home"),
                         kafka_bootstrap_servers=settings.kafka_bootstrap)
