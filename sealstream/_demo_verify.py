"""The demo's verification story (issue 14): what the verifier agent proved about this run.

`sealstream demo` runs ``sealstream pipeline verifier`` beside its workers; once
the run's batches are anchored, `wait_verdicts` waits (bounded) until each of
them has a verdict in ``batch_verdicts``, then `tell` counts this run's rows in
``readings`` against those in ``verified_readings`` and re-does two proofs the
way a user would, through the same commands (subprocesses of ``sealstream``):

- one blob of the run: ``sealstream verify blob <sha256>``;
- one verified batch: ``sealstream evidence export batch <id> -o <file>`` into
  the demo's state directory, then ``sealstream evidence verify <file>
  --genesis-hash <hex>`` pinned to the local ledger's genesis (offline: the
  bundle and the pin are all it reads).

Each check keeps the exact commands, so the summary can print them to be typed
again.  No click here: the CLI module only prints what this returns.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = ["Check", "Verification", "run_batches", "verdicts", "wait_verdicts", "check_blob", "check_bundle",
           "bundle_path", "tell"]

_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Check:
    """One proof re-done through the CLI: `verdict` is verified, failed (exit 1) or error (anything else)."""

    what: str  # "blob" | "bundle"
    subject: str  # the blob's SHA-256 hex | the batch id
    verdict: str
    commands: list[str]
    failed_step: Optional[str] = None
    detail: Optional[str] = None
    file: Optional[str] = None  # the bundle
    records: Optional[int] = None
    rows: Optional[int] = None
    genesis_pinned: Optional[bool] = None

    @property
    def ok(self) -> bool:
        return self.verdict == "verified"


@dataclass
class Verification:
    """What the verifier agent and the re-done proofs say about this run."""

    verifier_group: str
    genesis_hash: str
    complete: bool = False  # every anchored batch of the run has a verdict
    batches: dict[str, int] = field(default_factory=lambda: {"verified": 0, "failed": 0, "pending": 0})
    failed_batches: list[dict[str, Any]] = field(default_factory=list)  # up to 5: batch_id, failed_step, detail
    rows: int = 0  # this run's rows in `readings`
    verified_rows: int = 0  # ... and in `verified_readings`
    verified_share: Optional[float] = None
    blob: Optional[Check] = None
    bundle: Optional[Check] = None
    ok: bool = False  # complete, no failed batch, both checks verified


def run_batches(pool: Any, good: list[bytes]) -> list[str]:
    """The anchored batches holding any of the statements `good`."""
    with pool.connection() as conn:
        rows = conn.execute("SELECT DISTINCT l.batch_id FROM batch_leaves l JOIN batches b USING (batch_id) "
                            "WHERE b.anchor_state = 'anchored' AND l.statement_hash = ANY(%s) ORDER BY 1",
                            (good,)).fetchall()
    return [r[0] for r in rows]


def verdicts(pool: Any, batch_ids: list[str]) -> dict[str, tuple[str, Optional[str], Optional[str]]]:
    """``batch_id -> (verdict, failed_step, detail)`` of those of `batch_ids` with a verdict."""
    with pool.connection() as conn:
        rows = conn.execute("SELECT batch_id, verdict, failed_step, detail FROM batch_verdicts "
                            "WHERE batch_id = ANY(%s)", (batch_ids,)).fetchall()
    return {b: (v, step, detail) for b, v, step, detail in rows}


def wait_verdicts(pool: Any, batch_ids: list[str], timeout: float, check: Callable[[], None],
                  on_tick: Optional[Callable[[int, int], None]] = None) -> bool:
    """Wait until each of `batch_ids` has a verdict (True) or `timeout` seconds passed (False);
    `check()` raises if a process the demo depends on died, `on_tick(have, want)` reports progress."""
    deadline = time.monotonic() + timeout
    while True:
        check()
        have = len(verdicts(pool, batch_ids))
        if on_tick is not None:
            on_tick(have, len(batch_ids))
        if have >= len(batch_ids):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


def _row_counts(pool: Any, good: list[bytes]) -> tuple[int, int]:
    with pool.connection() as conn:
        rows = conn.execute("SELECT count(*) FROM readings WHERE statement_hash = ANY(%s)", (good,)).fetchone()[0]
        verified = conn.execute("SELECT count(*) FROM verified_readings WHERE statement_hash = ANY(%s)",
                                (good,)).fetchone()[0]
    return rows, verified


def _pick_blob(pool: Any, good: list[bytes]) -> Optional[str]:
    """The smallest verified blob of the run (SHA-256 hex), else its smallest blob, else None."""
    with pool.connection() as conn:
        for view in ("verified_blobs", "blobs"):
            row = conn.execute(f"SELECT encode(sha256, 'hex') FROM {view} WHERE statement_hash = ANY(%s) "
                               "ORDER BY size, sha256 LIMIT 1", (good,)).fetchone()
            if row is not None:
                return row[0]
    return None


def _pick_batch(pool: Any, batch_ids: list[str]) -> Optional[str]:
    """A verified batch of the run, the smallest one holding time-series rows first (a small bundle that
    still carries rows); else any batch of the run, so a failure is shown too."""
    with pool.connection() as conn:
        row = conn.execute("SELECT batch_id FROM batch_verdicts WHERE batch_id = ANY(%s) "
                           "ORDER BY verdict = 'verified' DESC, rows > 0 DESC, leaves, batch_id LIMIT 1",
                           (batch_ids,)).fetchone()
    if row is not None:
        return row[0]
    return batch_ids[0] if batch_ids else None


def _command(args: list[str]) -> str:
    return shlex.join(["sealstream", *args])


def _run(env: dict[str, str], args: list[str], timeout: float) -> tuple[int, dict[str, Any], str]:
    """``sealstream ARGS --json`` as a subprocess: (exit code, its JSON output or {}, the last stderr line)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "sealstream", *args, "--json"], capture_output=True,
                              text=True, cwd=_ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, {}, f"no answer within {timeout:.0f} s"
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        doc = {}
    tail = (proc.stderr.strip().splitlines() or [""])[-1]
    return proc.returncode, doc if isinstance(doc, dict) else {}, tail


def _verdict(check: Check, rc: int, doc: dict[str, Any], tail: str) -> Check:
    """Fill `check` from a verify command's exit code and report (docs/verify.md: 0, 1, 2)."""
    if rc == 0 and doc.get("ok") is True:
        check.verdict = "verified"
    elif rc == 1 and doc.get("ok") is False and doc.get("failed_step"):  # a crash exits 1 too, with no report
        check.verdict = "failed"
        check.failed_step = doc.get("failed_step")
        failures = doc.get("failures") or [{}]
        check.detail = failures[0].get("message") or tail or None
    else:
        check.verdict = "error"
        check.detail = doc.get("error") or doc.get("message") or tail or f"exit {rc}"
    if "genesis_pinned" in doc:
        check.genesis_pinned = bool(doc["genesis_pinned"])
    return check


def check_blob(env: dict[str, str], sha256_hex: str, timeout: float = 120) -> Check:
    """``sealstream verify blob <sha256>`` (the ledger state directory's genesis is the trust anchor)."""
    args = ["verify", "blob", sha256_hex]
    check = Check("blob", sha256_hex, "error", [_command(args)])
    return _verdict(check, *_run(env, args, timeout))


def bundle_path(directory: Path, batch_id: str) -> Path:
    return directory / f"batch-{re.sub(r'[^A-Za-z0-9._-]', '_', batch_id)}.zip"


def check_bundle(env: dict[str, str], batch_id: str, path: Path, genesis_hash: str, timeout: float = 180) -> Check:
    """Export `batch_id`'s bundle to `path`, then verify it offline pinned to `genesis_hash`."""
    export = ["evidence", "export", "batch", batch_id, "-o", str(path)]
    verify = ["evidence", "verify", str(path), "--genesis-hash", genesis_hash]
    check = Check("bundle", batch_id, "error", [_command(export), _command(verify)], file=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    rc, doc, tail = _run(env, export, timeout)
    if rc != 0:
        check.detail = "export: " + (doc.get("error") or tail or f"exit {rc}")
        return check
    check.records, check.rows = doc.get("records"), doc.get("rows")
    return _verdict(check, *_run(env, verify, timeout))


def tell(pool: Any, good: list[bytes], batch_ids: list[str], v: Verification, *, env: dict[str, str],
         state_dir: Path, say: Callable[[str], None]) -> Verification:
    """Fill `v` for this run: verdicts of `batch_ids`, rows vs verified rows, one blob and one bundle."""
    have = verdicts(pool, batch_ids)
    v.complete = len(have) >= len(batch_ids)
    v.batches = {"verified": sum(1 for x in have.values() if x[0] == "verified"),
                 "failed": sum(1 for x in have.values() if x[0] == "failed"),
                 "pending": len(batch_ids) - len(have)}
    v.failed_batches = [{"batch_id": b, "failed_step": step, "detail": (detail or "")[:300]}
                        for b, (verdict, step, detail) in sorted(have.items()) if verdict == "failed"][:5]
    v.rows, v.verified_rows = _row_counts(pool, good)
    v.verified_share = round(v.verified_rows / v.rows, 4) if v.rows else None
    blob = _pick_blob(pool, good)
    if blob is not None:
        say(f"verifying blob {blob[:16]}… (sealstream verify blob)")
        v.blob = check_blob(env, blob)
    batch = _pick_batch(pool, batch_ids)
    if batch is not None:
        say(f"exporting batch {batch} and verifying the bundle offline (sealstream evidence export/verify)")
        v.bundle = check_bundle(env, batch, bundle_path(state_dir, batch), v.genesis_hash)
    v.ok = (v.complete and v.batches["failed"] == 0 and v.blob is not None and v.blob.ok
            and v.bundle is not None and v.bundle.ok)
    return v

