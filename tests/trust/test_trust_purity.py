"""trust/ must run in an air-gapped verifier: stdlib + PyNaCl only, no I/O
outside the key-file helpers, and a public API that matches __all__."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import trust

TRUST_DIR = Path(trust.__file__).resolve().parent
IO_NAMES = {"open", "socket", "subprocess", "urllib", "http", "requests", "input", "print"}


def _modules():
    return sorted(TRUST_DIR.glob("*.py"))


def test_imports_only_stdlib_and_pynacl():
    allowed = set(sys.stdlib_module_names) | {"nacl", "trust"}
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import inside trust
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed, f"{path.name} imports {name}"
                assert top not in {"ledger", "storage", "pipelines", "sealstream"}, path.name


def test_no_io_outside_identity():
    for path in _modules():
        if path.name == "identity.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in IO_NAMES:
                raise AssertionError(f"{path.name}:{node.lineno} uses {node.id}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for m in mods:
                    assert m.split(".")[0] not in {"os", "socket", "subprocess", "pathlib", "io", "shutil"}, (
                        f"{path.name} imports {m}"
                    )


def test_public_api():
    for name in trust.__all__:
        assert hasattr(trust, name), name
    assert len(set(trust.__all__)) == len(trust.__all__)
    for name in ("KeyPair", "Statement", "SealReceipt", "AnchorRef", "TreeHead", "CompactRange",
                 "MerkleTree", "verify_record", "check_record", "VerificationError"):
        assert name in trust.__all__


def test_error_hierarchy():
    from trust import errors as e

    for cls in (e.CanonicalError, e.IdentityError, e.StatementError, e.ReceiptError, e.ProofError):
        assert issubclass(cls, e.TrustError) and issubclass(cls, ValueError)
    assert issubclass(e.KeyFileError, e.IdentityError)
    assert issubclass(e.InclusionError, e.ProofError) and issubclass(e.ConsistencyError, e.ProofError)
    steps = []
    todo = list(e.VerificationError.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls is e.LedgerEvidenceError:  # abstract base of the ledger half's steps
            todo.extend(cls.__subclasses__())
            continue
        assert cls.step != "unknown"
        steps.append(cls.step)
        assert cls("x").step == cls.step
    assert sorted(steps) == sorted(e.CHAIN_STEPS)
    assert set(e.STEPS) <= set(e.CHAIN_STEPS)
    assert e.VerificationError("x", step="quorum").step == "quorum"
