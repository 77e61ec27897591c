"""The errors of the ledger client; all derive from `LedgerClientError`.

    LedgerError (ledger.errors)
    └── LedgerClientError
        ├── SubmitTimeout      no f+1 matching replies in time
        ├── TxRefused          f+1 sealers refused the tx (`code`, e.g. ``replay``)
        └── NodeUnavailable    an HTTP read failed on every node
"""

from __future__ import annotations

from ..errors import LedgerError

__all__ = ["LedgerClientError", "SubmitTimeout", "TxRefused", "NodeUnavailable"]


class LedgerClientError(LedgerError):
    """Base of every error the client library raises."""


class SubmitTimeout(LedgerClientError):
    """No f+1 matching replies arrived in time."""


class TxRefused(LedgerClientError):
    """f+1 sealers refused the transaction; `code` is their error (e.g. ``replay``)."""

    def __init__(self, code: str, tx_id: bytes) -> None:
        self.code = code
        self.tx_id = tx_id
        super().__init__(f"transaction {tx_id.hex()[:16]} refused by the ledger: {code}")


class NodeUnavailable(LedgerClientError):
    """No node answered an HTTP query (or all answered with an error)."""
