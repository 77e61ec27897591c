"""Shared fixtures. Tests that need the local stack ask for ``stack``: it brings the
stack up (idempotent, seconds when it already runs) or fails loudly — never skips."""

from __future__ import annotations

import pytest

from infra import Stack
from sealstream.settings import Settings, load_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Stack:
    st = Stack(settings)
    st.up()
    return st
