"""Fault injection: named, on-demand bad messages, each breaking exactly one ingest check.

The names are the reason codes the ingest agent writes to ``iiot.deadletter``:

=====================  ==========================================================
``bad-signature``      statement intact, signature bit-flipped (verifies false)
``unknown-device``     well-formed and signed by a key that is not in the manifest
``replay``             an earlier message of the device re-sent byte for byte
``corrupted-payload``  payload bytes changed after signing (hash mismatch, same size)
``oversized``          a valid payload just above the kind's ``SEALSTREAM_MAX_*_BYTES``
``clock-skew``         statement ``ts`` far in the future (>> ``max_clock_skew_ms``)
``malformed-headers``  ``ss-seq`` header with a leading zero (not canonical decimal)
=====================  ==========================================================

A plan (`FaultPlan.parse`) is a list of ``name:amount``: a number with a dot
(``bad-signature:0.01``) is a per-message probability, an integer
(``replay:5``) an exact count, injected early and interleaved with good messages.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from .signing import OutMessage

__all__ = ["FAULTS", "FaultSpec", "FaultPlan", "FaultScheduler", "bad_signature", "corrupt_payload",
           "malform_headers", "as_replay", "skew_ms"]

FAULTS: tuple[str, ...] = ("bad-signature", "unknown-device", "replay", "corrupted-payload", "oversized",
                           "clock-skew", "malformed-headers")


@dataclass(frozen=True)
class FaultSpec:
    """One fault of a plan: a per-message `rate` or an exact `count` (the other is None)."""

    name: str
    rate: float | None = None
    count: int | None = None

    @classmethod
    def parse(cls, text: str) -> "FaultSpec":
        name, sep, amount = text.strip().partition(":")
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; use one of {', '.join(FAULTS)}")
        if not sep:
            return cls(name, count=1)
        try:
            if "." in amount or "e" in amount.lower():
                rate = float(amount)
                if not 0.0 <= rate <= 1.0:
                    raise ValueError
                return cls(name, rate=rate)
            count = int(amount)
            if count < 0:
                raise ValueError
            return cls(name, count=count)
        except ValueError:
            raise ValueError(f"fault {text!r}: the amount must be a rate in [0.0, 1.0] like 0.01 "
                             f"or a count like 5") from None


@dataclass(frozen=True)
class FaultPlan:
    """The faults a run injects."""

    specs: tuple[FaultSpec, ...] = ()

    @classmethod
    def parse(cls, items: list[str] | tuple[str, ...]) -> "FaultPlan":
        return cls(tuple(FaultSpec.parse(i) for i in items))

    def __bool__(self) -> bool:
        return bool(self.specs)


class FaultScheduler:
    """Decides, message by message, which fault (if any) to inject. Seeded, so runs repeat."""

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self._rng = random.Random(seed)
        self._pending = {s.name: s.count for s in plan.specs if s.count}
        self._rates = [(s.name, s.rate) for s in plan.specs if s.rate]
        self._last_was_fault = False

    @property
    def pending(self) -> dict[str, int]:
        return {k: v for k, v in self._pending.items() if v}

    def next(self) -> str | None:
        """The fault for the next message, or None for a good one."""
        fault = None
        if not self._last_was_fault:
            fault = next((name for name, left in self._pending.items() if left), None)
        if fault is None:
            for name, rate in self._rates:
                if self._rng.random() < rate:
                    fault = name
                    break
        self._last_was_fault = fault is not None
        return fault

    def done(self, name: str) -> None:
        """Record that `name` was injected (counts go down only when it really was)."""
        if self._pending.get(name):
            self._pending[name] -= 1

    def skipped(self) -> None:
        """The chosen fault could not be applied now (e.g. replay before any message)."""
        self._last_was_fault = False


def _set_header(headers: tuple[tuple[str, bytes], ...], name: str, value: bytes) -> tuple[tuple[str, bytes], ...]:
    return tuple((h, value if h == name else v) for h, v in headers)


def bad_signature(msg: OutMessage) -> OutMessage:
    """Flip one bit of the signature; everything else stays valid."""
    sig = bytearray(msg.signature)
    sig[7] ^= 0x01
    return replace(msg, headers=_set_header(msg.headers, "ss-sig", bytes(sig).hex().encode("ascii")),
                   fault="bad-signature")


def corrupt_payload(msg: OutMessage) -> OutMessage:
    """Change one byte in the middle of the payload after signing (same size, different hash)."""
    value = bytearray(msg.value)
    value[len(value) // 2] ^= 0xFF
    return replace(msg, value=bytes(value), fault="corrupted-payload")


def malform_headers(msg: OutMessage) -> OutMessage:
    """Write ``ss-seq`` with a leading zero: `from_kafka_headers` fails with ``malformed-header``."""
    return replace(msg, headers=_set_header(msg.headers, "ss-seq", b"0" + str(msg.statement.seq).encode()),
                   fault="malformed-headers")


def as_replay(earlier: OutMessage) -> OutMessage:
    """The same record again, byte for byte (seq already used)."""
    return replace(earlier, fault="replay")


def skew_ms(max_clock_skew_ms: int) -> int:
    """How far a `clock-skew` statement's ts is moved: well past the ingest tolerance (at least one hour)."""
    return max(10 * max_clock_skew_ms, 3_600_000)
