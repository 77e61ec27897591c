"""Errors raised by `ledger`: one base type, `LedgerError`, per boundary below it.

`WireError` (malformed bytes/values from the network or disk),
`CertificateError` (a certificate does not verify), `StoreError` (block store),
`LightClientError` (light-client verification; `.step` names the failed step).
The consensus core itself never raises on bad input: it drops the message and
counts the reason (`Replica.drops`).
"""

from __future__ import annotations

__all__ = [
    "LedgerError",
    "WireError",
    "CertificateError",
    "StoreError",
]


class LedgerError(Exception):
    """Base class of every error raised by `ledger`."""


class WireError(LedgerError, ValueError):
    """A value or message is malformed (wrong shape, types or sizes)."""


class CertificateError(LedgerError):
    """A commit or checkpoint certificate does not verify."""


class StoreError(LedgerError):
    """The block store is inconsistent or was given a non-extending block."""
