"""The parts of the ledger client behind `ledger.client` (import from there).

| module | holds |
|---|---|
| `errors` | the `LedgerClientError` tree |
| `records` | `Receipt`, `TxRecord`, `StateProof`, `StateProofs` |
| `tally` | the pure f+1 reply tally of one transaction (no I/O, no asyncio) |
| `submission` | signing, TCP batching to the sealers, retries, following sealer sets |
| `queries` | HTTP reads: blocks, headers, txs, state proofs, contracts, tokens, audit, events |
| `sync` | `LedgerClient`, the blocking wrapper on a private event-loop thread |
"""
