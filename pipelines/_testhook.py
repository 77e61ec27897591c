"""Test hooks: pause a worker (sleep forever) at a named stage so a test can SIGKILL it exactly there.

Used by the anchorer (``SEALSTREAM_ANCHOR_TEST_PAUSE``) and the dead-letter
path (``SEALSTREAM_DLQ_TEST_PAUSE``); each hook names its own variables.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

__all__ = ["pause"]

log = logging.getLogger("sealstream.pipeline")


def pause(env: str, file_env: str, stage: str, note: str) -> None:
    """If ``$env`` names `stage`: write `note` to ``$file_env`` (if set) and hang (blocking)."""
    if os.environ.get(env) != stage:
        return
    marker = os.environ.get(file_env)
    if marker:
        Path(marker).write_text(note)
    log.warning("test hook: paused at %s (%s)", stage, note)
    while True:
        time.sleep(3600)
