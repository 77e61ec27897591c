"""Where a service announces its Prometheus /metrics: file_sd target files in the state directory.

Part of the config module: every layer may import it (docs/architecture.md). The stack's
Prometheus (`infra.prometheus`) reads every ``<state>/prometheus/targets/<job>.json`` and picks up
changes without a restart; a ledger node, a pipeline worker or the verifier agent writes its own
job's file here, so none of them needs the package that runs the services (`infra/`).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_target", "register_targets", "targets_file"]


def targets_file(home: Path, job: str) -> Path:
    """The file_sd file of ``job`` under the state directory ``home``."""
    return home / "prometheus" / "targets" / f"{job}.json"


def register_targets(home: Path, job: str, targets: list[str], labels: dict[str, str] | None = None) -> Path:
    """Tell the stack's Prometheus to scrape ``targets`` (``host:port``) as ``job`` (replaces the job's list)."""
    path = targets_file(home, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": targets, "labels": {"job": job, **(labels or {})}}], indent=2))
    tmp.replace(path)
    return path


def add_target(home: Path, job: str, target: str) -> Path:
    """Add one ``host:port`` to ``job``'s targets, keeping those other processes registered."""
    targets = {target}
    try:
        for group in json.loads(targets_file(home, job).read_text()):
            targets.update(group.get("targets", []))
    except (OSError, ValueError, AttributeError):
        pass
    return register_targets(home, job, sorted(targets))
