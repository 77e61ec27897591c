"""The batch anchor state machine (pure; the schema's trigger enforces the same).

::

    pending ──> submitted ──> anchored (final)
       │            │  ^          ^
       │            v  │          │
       └──────────> failed ───────┘

``failed -> submitted`` is a retry; ``failed -> anchored`` records a commit the
ledger made although the submitter gave up waiting for it.  Moving to
``submitted`` is also a claim: only one caller wins it, so a batch is never
submitted by two workers at once.
"""

from __future__ import annotations

from .errors import InvalidTransition

__all__ = ["TRANSITIONS", "allowed_from", "check_transition"]

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"submitted", "failed"}),
    "submitted": frozenset({"anchored", "failed"}),
    "failed": frozenset({"submitted", "anchored"}),
    "anchored": frozenset(),
}


def allowed_from(wanted: str) -> tuple[str, ...]:
    """States from which `wanted` may be entered, in a stable order."""
    return tuple(s for s in TRANSITIONS if wanted in TRANSITIONS[s])


def check_transition(batch_id: str, current: str, wanted: str) -> None:
    """Raise `InvalidTransition` unless `current -> wanted` is allowed."""
    if wanted not in TRANSITIONS.get(current, frozenset()):
        raise InvalidTransition(batch_id, current, wanted)
