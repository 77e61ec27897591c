"""The layering of docs/architecture.md, enforced over every import of every module of the product
packages (also imports inside functions, which hide cycles).  No services.

A package may import the packages its row lists, the config module (`CONFIG`: `sealstream.settings`,
`sealstream._logging`: the one bottom module every layer may read) and anything outside the
project.  `DEBTS` lists the known back-edges, each with its issue: the test fails when a new one
appears, and when a listed one is gone (so the list only shrinks)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"sealstream.settings", "sealstream.topics", "sealstream.metrics_targets", "sealstream._logging",
          "sealstream._security", "sealstream._kafka_config"}
#: package -> project packages it may import (docs/architecture.md)
MAY_IMPORT: dict[str, set[str]] = {
    "trust": set(),
    "confidential": {"trust"},
    "ledger": {"trust"},
    "verify": {"trust", "ledger"},
    "storage": {"trust", "verify"},
    "edge": {"trust", "confidential"},
    "pipelines": {"trust", "verify", "storage", "ledger", "confidential"},
    "infra": {"ledger"},
    "dashboards": set(),
    "sealstream": {"trust", "confidential", "verify", "ledger", "storage", "pipelines", "edge", "dashboards",
                   "infra"},
}
#: what the verifier may take from the ledger: its pure values, proofs and contract queries
VERIFY_LEDGER = ("ledger.values", "ledger.light_client", "ledger.contracts", "ledger._merkle", "ledger.errors")
#: known back-edges (importer module -> imported module): issue 15 removes them
DEBTS: dict[tuple[str, str], str] = {}


def _imports(path: Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text("utf-8"))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base = ".".join(parts[: len(parts) - node.level + (1 if is_pkg else 0)]
                                + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.extend(f"{base}.{a.name}" for a in node.names)  # a name may be a module
    return out


def _modules():
    for pkg in MAY_IMPORT:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield pkg, ".".join(parts), path


def test_every_import_follows_the_layering() -> None:
    bad, seen_debts = [], set()
    for pkg, module, path in _modules():
        for name in _imports(path, module):
            top = name.split(".")[0]
            if top not in MAY_IMPORT or top == pkg or name in CONFIG or any(
                    name.startswith(c + ".") for c in CONFIG):
                continue
            if top == "sealstream" and pkg != "sealstream":
                bad.append(f"{module} imports {name} (only the config module of sealstream/ is below it)")
                continue
            if (module, top) in DEBTS:
                seen_debts.add((module, top))
                continue
            if top not in MAY_IMPORT[pkg]:
                bad.append(f"{module} imports {name}: {pkg}/ may import {sorted(MAY_IMPORT[pkg]) or 'nothing'}")
            elif pkg == "verify" and top == "ledger" and not name.startswith(VERIFY_LEDGER):
                bad.append(f"{module} imports {name}: the verifier takes only the ledger's pure modules")
    assert not bad, "\n".join(bad)
    assert seen_debts == set(DEBTS), f"paid debts to remove from DEBTS: {sorted(set(DEBTS) - seen_debts)}"


def test_the_table_is_the_documented_one() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text("utf-8")
    for pkg in MAY_IMPORT:
        assert f"| `{pkg}/` |" in doc, pkg


def _test_helper_modules() -> set[str]:
    """Names a module of tests/ is imported by (its folders are on sys.path: `support`, `anchor_helpers`)."""
    names = {"tests", "conftest"}
    for path in (ROOT / "tests").rglob("*.py"):
        rel = path.relative_to(ROOT / "tests")
        names.add(rel.parts[0] if len(rel.parts) > 1 and rel.parts[0] == "support" else path.stem)
    return names - {"__init__"}


def test_tests_and_benchmarks_share_helpers_only_through_the_product() -> None:
    """Tests never import bench/ (its modules are the benchmarks' own; tests/bench/, the benchmarks'
    own tests, excepted), and benchmarks never import a
    test helper (a helper both need lives in a product package: `infra.private_stack`,
    `infra.mosquitto`, `edge.simulators`). Both directions broke things before: a benchmark that
    imported a test helper stopped running when the helper moved, and nothing noticed."""
    bad = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.parent.name == "bench":
            continue
        for name in _imports(path, path.stem):
            if name.split(".")[0] == "bench":
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    helpers = _test_helper_modules()
    for path in sorted((ROOT / "bench").rglob("*.py")):
        for name in _imports(path, f"bench.{path.stem}"):
            if name.split(".")[0] in helpers:
                bad.append(f"{path.relative_to(ROOT)} imports the test helper {name}")
        if "\"tests\"" in path.read_text("utf-8"):
            bad.append(f"{path.relative_to(ROOT)} names the tests folder (a sys.path entry for test helpers?)")
    assert not bad, "\n".join(bad)
