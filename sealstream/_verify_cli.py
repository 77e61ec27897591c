"""``sealstream verify ...``, ``sealstream evidence ...``, ``sealstream export --verified``
and ``sealstream pipeline verifier``: downstream verification (docs/verify.md).

Exit codes: 0 everything verified; 1 a step of the evidence chain failed (the
output names it and the evidence); 2 nothing to verify (unknown blob, row or
batch, bad arguments, a service unreachable, an unreadable bundle path).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ._output import emit_json, err, out
from ._output import settings_of as _settings
from .settings import Settings, home_search

__all__ = ["verify", "evidence", "export", "pipeline_verifier"]




def _ledger_option(f: Callable) -> Callable:
    return click.option("--ledger", "ledger_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="ledger state directory (default: $SEALSTREAM_HOME/ledger)")(f)


def _range_options(f: Callable) -> Callable:
    """``--device``, ``--from``, ``--to``: a device's time range [from, to)."""
    f = click.option("--to", "end", required=True, help="end (ISO-8601, exclusive)")(f)
    f = click.option("--from", "start", required=True, help="start (ISO-8601, inclusive; naive = UTC)")(f)
    return click.option("--device", required=True, help="the device's did:key id")(f)


def _trust_options(f: Callable) -> Callable:
    f = click.option("--checkpoint", default=None, help="HEIGHT:HEADER_HASH the chain must pass through")(f)
    f = click.option("--genesis-hash", default=None, help="trusted genesis hash (64 hex digits)")(f)
    f = click.option("--genesis", "genesis_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="trusted genesis.json")(f)
    return f


def _common(f: Callable) -> Callable:
    f = click.option("--json", "as_json", is_flag=True, help="print the report as JSON")(f)
    f = _ledger_option(f)
    return _trust_options(f)


def _stop(message: str, as_json: bool, code: int = 2, **extra: Any) -> None:
    if as_json:
        emit_json({"ok": False, "error": message, **extra})
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


def _trust(genesis_file: Optional[Path], genesis_hash: Optional[str], checkpoint: Optional[str],
           ledger_dir: Optional[Path], as_json: bool, *, default_from_layout: bool = True):
    """``(trusted genesis hash | None, Checkpoint | None)`` from the options."""
    from verify.chain import TrustedCheckpoint

    pin: Optional[bytes] = None
    try:
        if genesis_file is not None:
            import json

            from ledger.values import Genesis

            pin = Genesis.from_wire(json.loads(genesis_file.read_text())).genesis_hash()
        elif genesis_hash is not None:
            pin = bytes.fromhex(genesis_hash)
            if len(pin) != 32:
                raise ValueError("the genesis hash must be 64 hex digits")
        elif default_from_layout and ledger_dir is not None:
            from ledger.layout import LayoutError, LedgerLayout

            try:
                pin = LedgerLayout(ledger_dir).genesis().genesis_hash()
            except LayoutError:
                _stop(f"no ledger genesis at {Path(ledger_dir).resolve()} (the state directory is "
                      f"{home_search()}; or give --ledger): run from the stack's directory, set SEALSTREAM_HOME, "
                      "or pin --genesis-hash/--genesis", as_json, error_code="no-ledger")
        cp = TrustedCheckpoint.parse(checkpoint) if checkpoint else None
    except (ValueError, OSError, KeyError, TypeError) as exc:
        _stop(f"trust anchor: {exc}", as_json)
    return pin, cp


@contextmanager
def _services(s: Settings, ledger_dir: Optional[Path], as_json: bool) -> Iterator[Any]:
    """A `Collector` on the stack's PostgreSQL/MinIO and the ledger (closed afterwards)."""
    from ledger.client import LedgerClient
    from pipelines.collect import Collector
    from storage import StorageError
    from storage.db import open_pool

    root = ledger_dir or s.ledger_home
    try:
        client = LedgerClient.from_layout(root)
    except Exception as exc:  # noqa: BLE001 - a missing/bad state dir is a usage error
        _stop(f"ledger state directory {root}: {exc}", as_json)
    pool = None
    try:
        pool = open_pool(s.postgres_dsn_for("verifier"), max_size=2)
        yield Collector.from_settings(s, client, pool)
    except StorageError as exc:
        _stop(f"storage: {exc}", as_json)
    finally:
        if pool is not None:
            pool.close()
        client.close()


def _collect(col: Any, kind: str, args: tuple, as_json: bool) -> Any:
    """Collect the evidence, with a spinner naming what is being read on a terminal."""
    from ledger.client import LedgerClientError
    from pipelines.collect import CollectError
    from storage import StorageError

    try:
        if as_json or not err.is_terminal:
            return getattr(col, kind)(*args)
        with err.status("collecting evidence") as status:
            col.progress = lambda msg: status.update(f"collecting evidence: {msg}")
            return getattr(col, kind)(*args)
    except CollectError as exc:
        _stop(str(exc), as_json)
    except (LedgerClientError, StorageError, OSError) as exc:
        _stop(f"{type(exc).__name__}: {exc}", as_json)


def _bar(total: int, label: str, enabled: bool) -> Optional[Progress]:
    if not enabled or total < 2:
        return None
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                   transient=True)
    return bar


def _run_chain(evidence_: Any, pin: Optional[bytes], cp: Any, as_json: bool, *, unpinned: bool = False) -> Any:
    from verify.chain import verify as chain_verify

    bar = _bar(len(evidence_.records), "verifying records", not as_json and err.is_terminal)
    if bar is None:
        return chain_verify(evidence_, trusted_genesis_hash=pin, checkpoint=cp, insecure_unpinned=unpinned)
    with bar:
        task = bar.add_task("records", total=len(evidence_.records))
        return chain_verify(evidence_, trusted_genesis_hash=pin, checkpoint=cp, insecure_unpinned=unpinned,
                            progress=lambda n: bar.update(task, completed=n))


def _subject_line(subj: Optional[dict]) -> str:
    return ", ".join(f"{k}={v if not isinstance(v, list) or len(v) <= 3 else f'{len(v)} items'}"
                     for k, v in (subj or {}).items())


def _print_report(report: Any, as_json: bool, pinned: bool, plain: Optional[dict] = None) -> None:
    """Checked steps, then failures with their evidence; exit 1 on any failure.

    The subject printed is the one *proven* (derived from the verified content); a failed
    report shows the claimed one, marked as such."""
    if as_json:
        doc = report.to_json()
        doc["genesis_pinned"] = pinned
        if plain is not None:
            doc["plaintext"] = plain
        emit_json(doc)
    else:
        if plain is not None:
            out.print(f"plaintext: {plain['proven']} confidential record(s) opened as {plain['recipient']} match "
                      "their signed commitments", highlight=False)
            for f in plain["failures"][:20]:
                out.print(f"  [red]✗ {f['step']}[/]: {f['statement_hash']}: {f['message']}", highlight=False)
        if report.ok:
            out.print(f"[bold]proven[/]: {_subject_line(report.proven)}", highlight=False)
        else:
            out.print(f"[bold]claimed[/] (not proven): {_subject_line(report.subject)}", highlight=False)
        out.print(f"ledger: verified {report.ledger_height} header(s) from genesis {report.genesis_hash[:16]}…"
                  + ("" if pinned else " [bold yellow](INSECURE: genesis not pinned, --insecure-unpinned: this "
                                       "proves nothing unless you compare this hash out of band)[/]"), highlight=False)
        c = report.counts
        out.print(f"checked: {c.get('records', 0)} record(s), {c.get('batches', 0)} batch(es), "
                  f"{c.get('rows', 0)} stored row(s)", highlight=False)
        for step in report.passed:
            out.print(f"  [green]✓[/] {step}", highlight=False)
        for f in report.failures[:20]:
            out.print(f"  [red]✗ {f.step}[/]: {f.message}", highlight=False)
            for k, v in f.evidence.items():
                if v is not None:
                    out.print(f"      {k}: {v}", highlight=False)
        if len(report.failures) > 20 or c.get("failures", 0) > len(report.failures):
            out.print(f"  … {c.get('failures', len(report.failures)) - min(20, len(report.failures))} more "
                      "failure(s) (--json lists up to 200)", highlight=False)
        if report.ok and report.erased:
            heights = sorted({e["height"] for e in report.erased})
            out.print(f"[bold yellow]ERASED[/]: {len(report.erased)} of {c.get('records', 0)} record(s) erased at "
                      f"height {', '.join(map(str, heights[:5]))}{' ...' if len(heights) > 5 else ''} (content "
                      "destroyed by policy.erase; the ciphertext and every proof above still check)", highlight=False)
            for e in report.erased[:10]:
                out.print(f"  erased at height {e['height']} (tx {e['index']}): statement {e['statement_hash']}",
                          highlight=False)
        else:
            out.print("[bold green]VERIFIED[/]" if report.ok else f"[bold red]FAILED[/] at step {report.failed_step}")
    if not report.ok or (plain is not None and plain["failures"]):
        sys.exit(1)
    if report.erased:
        sys.exit(3)


def _parse_time(value: str, what: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{what} must be ISO-8601, e.g. 2030-01-01T00:00:00Z") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _do_verify(ctx: click.Context, kind: str, args: tuple, ledger_dir, genesis_file, genesis_hash, checkpoint,
               as_json: bool, key_file: Optional[Path] = None) -> None:
    s = _settings(ctx)
    root = ledger_dir or s.ledger_home
    pin, cp = _trust(genesis_file, genesis_hash, checkpoint, root, as_json)
    with _services(s, root, as_json) as col:
        ev = _collect(col, kind, args, as_json)
        report = _run_chain(ev, pin, cp, as_json)
        plain = _plaintexts(ev, report, key_file, col.reader.pool, as_json) if key_file is not None else None
    _print_report(report, as_json, pin is not None or cp is not None, plain)


_KEY_OPTION = click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                           default=None, help="a recipient's X25519 key file: also prove the plaintext of the "
                                              "confidential records against their signed commitments")


def _plaintexts(ev: Any, report: Any, key_file: Path, pool: Any, as_json: bool) -> Optional[dict]:
    """With a recipient key: the plaintext of each confidential record of a verified report proven
    against its signed commitment (key records from PostgreSQL, `storage.key_records`)."""
    from confidential.keys import KeyFileError, load_recipient_key
    from pipelines.opener import prove_plaintexts
    from storage import key_records
    from trust.hashes import sha256

    if not report.ok:
        return None
    try:
        recipient = load_recipient_key(key_file)
    except KeyFileError as exc:
        _stop(str(exc), as_json)
    erased = {e["statement_hash"] for e in report.erased}
    try:
        records = key_records.read(pool, [sha256(r.statement) for r in ev.records])
    except Exception as exc:  # noqa: BLE001 -- PostgreSQL unreachable: a service problem, exit 2
        _stop(f"cannot read the key records: {exc}", as_json)
    proven, failures = prove_plaintexts(ev.records, records, recipient, erased)
    return {"recipient": recipient.id, "proven": proven, "failures": failures}


# ---------------------------------------------------------------- verify


@click.group()
def verify() -> None:
    """Prove stored data against its anchor: the whole evidence chain, step by step.

    \b
    payload bytes -> sha256 matches the statement -> device signature valid for the key
    registered as the ANCHOR tx saw it -> statement hash is leaf i of the manifest ->
    inclusion proof to the root -> root in the ANCHOR tx -> tx in its block -> block header
    certified by 2f+1 of the sealer set at that height -> that set followed from genesis.
    Stored readings must equal their rows in the signed Arrow payload.

    \b
    sealstream verify blob 9f86d081884c7d65...            by SHA-256, raw/<sha256> or a local file
    sealstream verify row readings <statement hash>:17    one reading (or: blobs|statements <hash>)
    sealstream verify range --device did:key:z6Mk... --from 2030-01-01T00:00Z --to 2030-01-02T00:00Z
    sealstream verify batch gw-1-3f2a...                  every leaf and row of a batch
    sealstream verify batch gw-1-3f2a... --json           machine-readable report

    Exit 0 = verified, 1 = a step failed (named, with the evidence), 2 = nothing to verify,
    3 = every proof checks but confidential records are erased (ERASED at height H).

    \b
    Trust anchor (what the ledger half is checked against):
      default              the genesis in the ledger state directory (--ledger, $SEALSTREAM_HOME/ledger)
      --genesis FILE       a genesis.json you trust (its hash must be the chain's)
      --genesis-hash HEX   the genesis hash you trust
      --checkpoint H:HASH  also require the chain to pass through this header hash at height H
    """


@verify.command("blob")
@click.argument("target")
@_common
@_KEY_OPTION
@click.pass_context
def verify_blob(ctx, target, ledger_dir, genesis_file, genesis_hash, checkpoint, as_json, key_file) -> None:
    """Verify a blob (image, video chunk or any payload) by SHA-256, ``raw/<sha256>`` or local file.

    With a local file, the file's bytes are the payload checked (the archive is not read).
    """
    _do_verify(ctx, "blob", (target,), ledger_dir, genesis_file, genesis_hash, checkpoint, as_json, key_file)


@verify.command("row")
@click.argument("table", type=click.Choice(["readings", "blobs", "statements"]))
@click.argument("key")
@_common
@_KEY_OPTION
@click.pass_context
def verify_row(ctx, table, key, ledger_dir, genesis_file, genesis_hash, checkpoint, as_json, key_file) -> None:
    """Verify one row: ``readings HASH:ROW`` (values against the signed payload) or ``blobs|statements HASH``."""
    _do_verify(ctx, "row", (table, key), ledger_dir, genesis_file, genesis_hash, checkpoint, as_json, key_file)


@verify.command("range")
@_range_options
@_common
@_KEY_OPTION
@click.pass_context
def verify_range(ctx, device, start, end, ledger_dir, genesis_file, genesis_hash, checkpoint, as_json,
                 key_file) -> None:
    """Verify every stored reading of a device in [FROM, TO), and that no signed row in it is missing."""
    _do_verify(ctx, "range", (device, _parse_time(start, "--from"), _parse_time(end, "--to")), ledger_dir,
               genesis_file, genesis_hash, checkpoint, as_json, key_file)


@verify.command("batch")
@click.argument("batch_id")
@_common
@_KEY_OPTION
@click.pass_context
def verify_batch(ctx, batch_id, ledger_dir, genesis_file, genesis_hash, checkpoint, as_json, key_file) -> None:
    """Verify every leaf of a batch, its manifest, its anchor and every stored row of its time series."""
    _do_verify(ctx, "batch", (batch_id,), ledger_dir, genesis_file, genesis_hash, checkpoint, as_json, key_file)


# ---------------------------------------------------------------- evidence bundles


@click.group()
def evidence() -> None:
    """Offline evidence bundles: export what proves some data, verify it with no network or database.

    \b
    sealstream evidence export blob 9f86d0818... -o blob.zip
    sealstream evidence export row readings <statement hash>:17 -o row.zip
    sealstream evidence export range --device did:key:z6Mk... --from 2030-01-01 --to 2030-01-02 -o day.zip
    sealstream evidence export batch gw-1-3f2a... -o batch.zip
    sealstream evidence verify day.zip --genesis-hash 5be1...   # on any machine, services not needed

    The format (versioned, strict) is in docs/verify.md.
    """


@evidence.group("export")
def evidence_export() -> None:
    """Collect the evidence of a blob, a row, a range or a batch into a zip bundle."""


def _export(ctx: click.Context, kind: str, args: tuple, output: Path, ledger_dir: Optional[Path],
            as_json: bool) -> None:
    from verify.bundle import write_bundle

    s = _settings(ctx)
    with _services(s, ledger_dir or s.ledger_home, as_json) as col:
        ev = _collect(col, kind, args, as_json)
    index = write_bundle(ev, output)
    doc = {"ok": True, "bundle": str(output), "subject": ev.subject, "records": len(ev.records),
           "batches": len(ev.batches), "rows": 0 if ev.rows is None else ev.rows.num_rows,
           "members": len(index["members"]), "genesis_hash": index["genesis_hash"],
           "bytes": output.stat().st_size}
    if as_json:
        emit_json(doc)
    else:
        out.print(f"wrote {output}: {doc['records']} record(s), {doc['batches']} batch(es), {doc['rows']} row(s), "
                  f"{doc['bytes']} bytes; genesis {doc['genesis_hash']}", highlight=False)


def _export_options(f: Callable) -> Callable:
    f = click.option("--json", "as_json", is_flag=True, help="print a summary as JSON")(f)
    f = _ledger_option(f)
    f = click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="bundle file to write (.zip)")(f)
    return f


@evidence_export.command("blob")
@click.argument("target")
@_export_options
@click.pass_context
def export_blob(ctx, target, output, ledger_dir, as_json) -> None:
    """A blob by SHA-256, raw/<sha256> or local file."""
    _export(ctx, "blob", (target,), output, ledger_dir, as_json)


@evidence_export.command("row")
@click.argument("table", type=click.Choice(["readings", "blobs", "statements"]))
@click.argument("key")
@_export_options
@click.pass_context
def export_row(ctx, table, key, output, ledger_dir, as_json) -> None:
    """One row: readings HASH:ROW, blobs HASH or statements HASH."""
    _export(ctx, "row", (table, key), output, ledger_dir, as_json)


@evidence_export.command("range")
@_range_options
@_export_options
@click.pass_context
def export_range(ctx, device, start, end, output, ledger_dir, as_json) -> None:
    """A device's readings and statements in [FROM, TO)."""
    _export(ctx, "range", (device, _parse_time(start, "--from"), _parse_time(end, "--to")), output, ledger_dir,
            as_json)


@evidence_export.command("batch")
@click.argument("batch_id")
@_export_options
@click.pass_context
def export_batch(ctx, batch_id, output, ledger_dir, as_json) -> None:
    """Every leaf of a batch with its rows."""
    _export(ctx, "batch", (batch_id,), output, ledger_dir, as_json)


@evidence.command("verify")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@_trust_options
@click.option("--insecure-unpinned", is_flag=True,
              help="verify against the bundle's own genesis (proves nothing by itself: the output and JSON "
                   "say pinned: false)")
@click.option("--check-erasures", is_flag=True,
              help="also ask the ledger (proven from the same trust anchor) whether the bundle's confidential "
                   "records were erased since it was exported (the only part that is not offline)")
@click.option("--ledger", "ledger_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="with --check-erasures: the ledger state directory to ask (default $SEALSTREAM_HOME/ledger)")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="a recipient's X25519 key file: also prove the plaintext of the bundle's confidential records "
                   "(their key records are read from the object store: not offline)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_context
def evidence_verify(ctx, bundle: Path, genesis_file, genesis_hash, checkpoint, insecure_unpinned, check_erasures,
                    ledger_dir, key_file, as_json) -> None:
    """Verify a bundle offline: no network, no database, only the zip and a trust anchor.

    
    sealstream evidence verify day.zip --genesis-hash 5be1...      the genesis you trust
    sealstream evidence verify day.zip --genesis genesis.json      or its file
    sealstream evidence verify day.zip --checkpoint 120:9ac3...    or a header you trust

    A trust anchor is required: a bundle's author could have made its own
    ledger, so its genesis proves nothing.  Without one the command exits 2;
    --insecure-unpinned verifies against the bundle's own genesis anyway and
    says so.  A --checkpoint alone is a trust anchor: the headers up to it,
    and the genesis, are authenticated by their hash links back from it.

    Exit 0 = verified (the proven subject is printed), 3 = every proof checks but
    confidential records are erased (see --check-erasures), 1 = a step failed,
    2 = no trust anchor, or the bundle does not read (its reason: not-a-zip,
    too-many-members, member-too-large, total-too-large, crc-error,
    unsupported-compression, duplicate-names, unlisted-member, ...).
    """
    from verify.bundle import BundleError, BundleLimits, read_bundle

    if not bundle.is_file():
        _stop(f"no bundle at {bundle}", as_json, error_code="no-bundle")
    pin, cp = _trust(genesis_file, genesis_hash, checkpoint, None, as_json, default_from_layout=False)
    if pin is None and cp is None and not insecure_unpinned:
        _stop("no trust anchor: pass --genesis-hash HEX, --genesis FILE or --checkpoint HEIGHT:HASH "
              "(or --insecure-unpinned to check against the bundle's own genesis)", as_json,
              error_code="no-trust-anchor")
    s = _settings(ctx)
    limits = BundleLimits(s.bundle_max_members, s.bundle_max_member_bytes, s.bundle_max_total_bytes)
    try:
        ev = read_bundle(bundle, limits)
    except BundleError as exc:
        _stop(f"bundle {bundle}: {exc}", as_json, error_code="bundle", reason=exc.reason)
    report = _run_chain(ev, pin, cp, as_json, unpinned=insecure_unpinned)
    if check_erasures and report.ok:
        report = _check_erasures(s, ev, report, pin, cp, as_json, ledger_dir)
    plain = None
    if key_file is not None:
        from storage.db import open_pool

        try:
            pool = open_pool(s.postgres_dsn_for("analyst"), max_size=1)  # the analyst may read key records
        except Exception as exc:  # noqa: BLE001 -- PostgreSQL unreachable: a service problem, exit 2
            _stop(f"cannot reach PostgreSQL for the key records: {exc}", as_json)
        with pool:
            plain = _plaintexts(ev, report, key_file, pool, as_json)
    _print_report(report, as_json, pin is not None or cp is not None, plain)


def _check_erasures(s: Any, ev: Any, report: Any, pin: Any, cp: Any, as_json: bool,
                    ledger_dir: Optional[Path]) -> Any:
    """The bundle's report with the erasures the ledger proves now (issue 18)."""
    from ledger.client import LedgerClient
    from pipelines.collect import ledger_state
    from verify.chain import apply_erasures, erasure_keys

    keys = erasure_keys(ev)
    if not keys:
        return report
    try:
        with LedgerClient.from_layout(ledger_dir or s.ledger_home) as client:
            fresh = ledger_state(client, keys)
    except Exception as exc:  # noqa: BLE001 -- any ledger failure: say which, exit 2 (nothing judged)
        _stop(f"--check-erasures: the ledger did not answer: {exc}", as_json, error_code="ledger-unavailable")
    return apply_erasures(report, ev, fresh, trusted_genesis_hash=pin, checkpoint=cp)


# ---------------------------------------------------------------- export --verified


@click.command("export")
@click.option("--verified", is_flag=True, required=True,
              help="only rows of verified_readings (required: unverified exports are not offered)")
@_range_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Parquet file to write")
@click.option("--json", "as_json", is_flag=True, help="print a summary as JSON")
@click.pass_context
def export(ctx, verified, device, start, end, output, as_json) -> None:
    """Export verified readings to Parquet with provenance columns.

    \b
    sealstream export --verified --device did:key:z6Mk... --from 2030-01-01 --to 2030-01-02 -o day.parquet

    Columns: time, device, sensor, value, statement_hash, row_index, batch_id,
    leaf_index, ledger_height, tx_index (only rows the verifier agent proved:
    their batch verified and their values equal the archived signed payload).
    """
    import pyarrow.parquet as pq

    from storage import StorageError
    from storage.db import open_pool
    from storage.verification import VerificationStore

    s = _settings(ctx)
    t0, t1 = _parse_time(start, "--from"), _parse_time(end, "--to")
    try:
        pool = open_pool(s.postgres_dsn_for("analyst"), max_size=1)
        try:
            table = VerificationStore(pool).verified_readings_arrow(device, t0, t1)
        finally:
            pool.close()
    except StorageError as exc:
        _stop(f"storage: {exc}", as_json)
    pq.write_table(table, output)
    doc = {"ok": True, "output": str(output), "rows": table.num_rows, "columns": table.schema.names}
    if as_json:
        emit_json(doc)
    else:
        out.print(f"wrote {table.num_rows} verified row(s) to {output}", highlight=False)


# ---------------------------------------------------------------- the verifier agent


@click.command("verifier")
@click.option("--app-id", default="sealstream-verifier", show_default=True,
              help="Faust app id = consumer group of iiot.anchors")
@_ledger_option
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=9411, show_default=True,
              help="/metrics port (0 = none)")
@click.option("--audit-interval", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="seconds between audits of older batches (0 = none)")
@click.option("--audit-sample", type=click.IntRange(min=1), default=5, show_default=True,
              help="batches re-checked per audit, drawn at random among those checked before")
@click.option("--loglevel", type=click.Choice(["crit", "error", "warn", "info", "debug"]), default="warn",
              show_default=True, help="Faust's log level")
@click.pass_context
def pipeline_verifier(ctx, app_id, ledger_dir, metrics_port, audit_interval, audit_sample, loglevel) -> None:
    """Run the verifier agent: re-verify each anchored batch from ``iiot.anchors``.

    \b
    sealstream pipeline verifier                       verdicts in batch_verdicts, failures to iiot.alerts
    sealstream pipeline verifier --audit-interval 60   re-check a random sample every minute

    Each batch is re-verified from storage (leaves from statements and archived
    payloads, rows against the signed payloads, the root rebuilt, the anchor on
    the ledger, headers from genesis); the verdict goes to batch_verdicts and
    the proven statements to verified_statements (the verified_* views).
    Metrics: sealstream_verify_batches_total{verdict},
    sealstream_verify_failures_total{step}, sealstream_verify_last_failure_timestamp_seconds.
    """
    from pipelines.verifier import run_verifier

    s = _settings(ctx)
    run_verifier(s, app_id=app_id, ledger_root=ledger_dir or s.ledger_home, metrics_port=metrics_port,
                 audit_interval_s=audit_interval, audit_sample=audit_sample, loglevel=loglevel)
