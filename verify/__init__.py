"""The downstream verifier: pure code that proves a blob, a row, a device's range or a batch
against its anchor, trusting only a pinned genesis (or checkpoint) and cryptography.

Modules, one idea each:

- `verify.subject`  what a verification is about, parsed strictly; what must be covered
- `verify.model`    frozen values: the evidence of records, batches and the ledger; the report
- `verify.rows`     Arrow payload rows and the stored-rows comparison (pyarrow)
- `verify.chain`    the whole chain as pure functions -> a `Report` naming failed steps
- `verify.bundle`   the offline evidence bundle (zip): write, read strictly, verify

Gathering the evidence from PostgreSQL, MinIO and the ledger is I/O and lives at the edge
(`pipelines.collect`).  This package imports only `trust`, the ledger's pure values, light
client and contracts query code, and pyarrow, so it runs on an air-gapped machine with no
database, object store, Kafka or HTTP client installed (tests/verify/test_airgap.py).

Errors: a failed step is a `Failure` in the `Report` (its ``step`` from
`trust.errors.CHAIN_STEPS`, raised inside as a `trust.errors.VerificationError` subclass);
a bundle that does not read is a `verify.bundle.BundleError` with a machine-readable
``reason``.  Public names are re-exported lazily here (importing the package loads nothing).
"""

from __future__ import annotations

from typing import Any

__all__ = ["verify", "verify_bundle", "read_bundle", "write_bundle", "BundleError", "BundleLimits", "Report",
           "Failure", "Evidence", "TrustedCheckpoint", "parse_subject"]

_WHERE = {"verify": "chain", "TrustedCheckpoint": "chain", "verify_bundle": "bundle", "read_bundle": "bundle",
          "write_bundle": "bundle", "BundleError": "bundle", "BundleLimits": "bundle", "Report": "model",
          "Failure": "model", "Evidence": "model", "parse_subject": "subject"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(name)
