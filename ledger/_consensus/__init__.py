"""The sub-protocols of the sans-I/O PBFT core behind `ledger.consensus.Replica`.

Each module holds one idea and its own state; the front `Replica` owns one
instance of each, routes events to them and collects their effects (in the
style of hyper-h2's connection/stream split):

| module | holds |
|---|---|
| `events` | the events and effects vocabulary, `Equivocation`, timer ids |
| `safety` | `SafetyState` (persisted before every signed vote), `may_sign` |
| `votes` | what this replica signed so far; emits `Persist`, restores after a crash |
| `quotas` | the per-(sender, view) flood limits on buffered log entries |
| `app` | what the core needs of the application: `BlockContext`, `Execution`, `Executor` |
| `mempool` | client requests waiting for a block, per-submitter admission |
| `normal` | the normal case: PRE-PREPARE, PREPARE, COMMIT, cutting blocks |
| `commit` | the committed chain: applying certified blocks, commit, backup push |
| `checkpoints` | CHECKPOINTs, stable checkpoints and the watermarks |
| `viewchange` | VIEW-CHANGE and NEW-VIEW, the view timer |
| `transfer` | state transfer: peer heights, FETCH/BLOCKS, pushed committed blocks |

Nothing here imports `ledger.executor`'s default app or `ledger.contracts`: the
executor is passed in.
"""
