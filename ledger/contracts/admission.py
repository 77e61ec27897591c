"""Mempool admission for contracts ledgers (issue 16): who may have a transaction ordered at all.

`admit(reader, tx, nodes)` reads the *committed* state (a sealer's mempool is not a place to
run contracts) and answers ``(code, org)``: ``code`` None admits, else the refusal the client
gets at once (the tx is never ordered); ``org`` is the organisation the tx counts against for
the mempool's per-organisation share (`ledger._consensus.mempool`).

* A genesis node's own ``reputation.*`` transactions (heartbeats, equivocation evidence) are
  admitted by their own rules: the per-submitter cap only, no registration, no fee (they count
  against no organisation).
* Anyone else must be the current key of a registered entity (or the consortium admin's key):
  else ``NOT_REGISTERED``; that entity (or its organisation) must not be revoked: else
  ``REVOKED``; and its account must hold the fee of the tx's kind (`tokens.fee_for`, the fee hook's
  own rule): else ``INSUFFICIENT_QUOTA``. The committed balance is what counts, so a submitter with
  several txs pending may still have one refused at execution (bounded by the per-submitter cap).
"""

from __future__ import annotations

from typing import Any, Collection

from ..values import Transaction
from . import registry, tokens

__all__ = ["admit", "NODE_KINDS"]

#: kinds a genesis node submits for itself (ledger/contracts/reputation.py, `Reporter`)
NODE_KINDS = ("reputation.",)


def admit(reader: Any, tx: Transaction, nodes: Collection[str]) -> tuple[str | None, str | None]:
    did = tx.submitter
    if did in nodes and tx.kind.startswith(NODE_KINDS):
        return None, None
    who = tokens.payer(reader, did)
    if who is None:
        return "NOT_REGISTERED", None
    if who == tokens.CONSORTIUM:
        org = tokens.CONSORTIUM
    else:
        rec = registry._peek_entity(reader, who)
        if rec is None:
            return "NOT_REGISTERED", None
        org = rec.get("org") or who
        if registry._revoked_at(reader, rec) is not None:
            return "REVOKED", org
    fee = tokens.fee_for(reader, tx.kind)
    if fee and not (tx.kind.startswith("tokens.") and who == tokens.CONSORTIUM):
        if tokens.balance(reader, who) < fee:
            return "INSUFFICIENT_QUOTA", org
    return None, org
