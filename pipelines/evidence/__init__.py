"""Downstream verification: collect the evidence of records, check it purely.

Modules, one idea each:

- `pipelines.evidence.model`    frozen values: the evidence of records, batches and the ledger
- `pipelines.evidence.rows`     Arrow payload rows and the stored-rows comparison (pyarrow)
- `pipelines.evidence.chain`    the whole chain as pure functions -> a `Report` naming failed steps
- `pipelines.evidence.bundle`   the offline evidence bundle (zip): write, read strictly, verify
- `pipelines.evidence.collect`  gather evidence from PostgreSQL, MinIO and the ledger (I/O)

`model`, `rows`, `chain` and `bundle` import only `trust`, the ledger's pure
light-client/contracts code and pyarrow, so a bundle verifies on a machine
with no database, object store or network (docs/verify.md).  This package
file imports nothing on purpose.
"""
