"""Client library: submit signed transactions and read the chain over HTTP.

`AsyncLedgerClient` (asyncio) and `LedgerClient` (sync, thread-safe: it runs
an `AsyncLedgerClient` on a private event-loop thread).

Submitting (`submit(kind, payload)`):

1. sign a `Transaction` with the submitter key and a fresh nonce (a counter
   started at the current time in microseconds, so restarts of a client with
   the same key keep moving forward);
2. send it (after a HELLO) to every sealer of the current set (the latest
   the client has verified, see below) — each sealer
   that holds the request replies, so f+1 can match. Transactions submitted
   within one event-loop turn share one `ClientRequests` frame per node
   (each keeps its own signature; the frame itself is not signed), so many
   concurrent submits cost one write and one decode per node, not one each;
3. wait for f+1 *matching* answers in `TxReplies` frames, each frame signed by
   a distinct genesis node (signature verified against its did) that is a
   sealer *at the committing height* (f of that height's set); a result is a
   `Receipt`, an error (for example ``replay``) raises `TxRefused` with that
   code (refusals carry no height: they are counted against the latest set
   the client has verified);
4. if no decision after `retry_after` seconds, re-send to *all* nodes (backups
   relay to the sealers) and keep doing so until `timeout` (`SubmitTimeout`).

Sealer sets: the client follows the chain like a light client
(`self.light`, a `LightClient` from genesis). An answer for height h in an
epoch whose set it does not know yet makes it fetch and verify the headers
up to the end of the previous epoch (`next_sealers` there names the set),
trying node after node; votes wait meanwhile. A retry also brings the
followed chain up to a node's tip (`refresh_sealers()`), so the targets of
the next submits are the current sealers. Within epoch 0 nothing is fetched.

Layout: this module is the front; the parts are in `ledger._client`:
`errors`, `records`, `tally` (the pure f+1 reply tally), `submission` (TCP
batching, retries, following sealer sets), `queries` (HTTP reads), `aio`
(`AsyncLedgerClient`, both halves over one set of nodes) and `sync`
(`LedgerClient`).

Concurrent submits of one transaction share one wait (deduplicated by tx id),
and each node's vote counts once. Nonces must stay within the ledger's
anti-replay window (`Params.nonce_window`, 1024 by default) of the highest
committed one, so keep fewer than that many transactions of one key in flight.

Reads (`get_status`, `get_block`, `get_headers`, `get_tx`, `verified_tx`) use
the nodes' HTTP API; `verified_tx` checks every header certificate from
genesis with the light client and the tx's inclusion proof.

Contracts reads (ledgers running `ContractApp`, see docs/contracts.md):
`resolve(id, height=None)` and `resolve_key(did, height=None)` (registry,
as of a height), `get_anchor(batch_id)` and `anchors_by_root(root)`
(anchors), `get_state_proof(key)` and `verified_state(key)` (a state value
proven against the state root of a header verified from genesis). Without a
`node`, a lookup that one node answers 404 asks the next ones (it may lag)
and gives None only when none has it. Contract transactions are ordinary
`submit(kind, payload)` calls (bytes fields as `bytes`); a refusal is a
`Receipt` whose ``result`` is ``{"ok": False, "code": ..., "message": ...}``.
Also `token_account`, `token_fees`, `audit_rules`, `audit_rule`, and
`events(...)`: the audit events of ``GET /events`` (`ledger.events`).
"""

from __future__ import annotations

from ._client.aio import AsyncLedgerClient
from ._client.errors import LedgerClientError, NodeUnavailable, SubmitTimeout, TxRefused
from ._client.records import Receipt, StateProof, StateProofs, TxRecord
from ._client.submission import MAX_BATCH
from ._client.submission import _Wait as _Wait  # the tally tests drive a wait by hand
from ._client.sync import LedgerClient

__all__ = [
    "LedgerClientError",
    "SubmitTimeout",
    "TxRefused",
    "NodeUnavailable",
    "Receipt",
    "StateProof",
    "StateProofs",
    "TxRecord",
    "AsyncLedgerClient",
    "LedgerClient",
    "MAX_BATCH",
]
