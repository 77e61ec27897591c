"""Downstream verification: collect the evidence of records, check it purely.

Modules, one idea each:

- `verify.model`    frozen values: the evidence of records, batches and the ledger
- `verify.rows`     Arrow payload rows and the stored-rows comparison (pyarrow)
- `verify.chain`    the whole chain as pure functions -> a `Report` naming failed steps
- `verify.bundle`   the offline evidence bundle (zip): write, read strictly, verify
- `pipelines.collect`  gather evidence from PostgreSQL, MinIO and the ledger (I/O)

`model`, `rows`, `chain` and `bundle` import only `trust`, the ledger's pure
light-client/contracts code and pyarrow, so a bundle verifies on a machine
with no database, object store or network (docs/verify.md).  This package
file imports nothing on purpose.
"""
