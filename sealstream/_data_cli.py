"""``sealstream data open|export|erase``: confidential records (issue 18).

``data open blob|row|range`` reads as one recipient: the signed statement (PostgreSQL), the
ciphertext (MinIO ``raw/``) and the key record (PostgreSQL ``key_records``); it proves the ciphertext against
the device's signature, checks the stream's policy as of the record's anchor height and the
record's erasure (both proven against headers verified from genesis), opens the envelope with the
recipient's X25519 key file and proves the plaintext against the signed commitment. Plaintext goes
only to ``--out`` (created 0600) or, for a row, to the recipient's own terminal.

``data export`` materialises a recipient's decrypted rows into the recipient's own database and
schema, with provenance. ``data erase`` destroys records' keys after recording the erasure on chain.

Exit 0 proven (done), 1 a step failed (named), 2 bad usage or a service unreachable, 3 erased.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from ._output import emit_json as _emit
from ._output import out as _out
from .settings import load_settings

__all__ = ["data"]

_KEY = click.option("--key", "key_file", required=True,
                    type=click.Path(exists=True, dir_okay=False, path_type=Path),
                    help="the recipient's X25519 key file (mode 0600)")
_JSON = click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
_LEDGER = click.option("--ledger", "ledger_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                       help="ledger state directory (default $SEALSTREAM_HOME/ledger)")


@click.group()
def data() -> None:
    """Confidential records: open them as a recipient, export them to your schema, erase them."""


@data.group("open")
def data_open() -> None:
    """Decrypt and prove confidential records with a recipient's key."""


def _hash(text: str, hint: str) -> bytes:
    try:
        h = bytes.fromhex(text)
        if len(h) == 32:
            return h
    except ValueError:
        pass
    raise click.BadParameter("a statement hash is 64 hex digits", param_hint=hint)


def _time(text: str, hint: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("an ISO-8601 time, e.g. 2030-01-01T00:00Z", param_hint=hint) from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _recipient(key_file: Path) -> Any:
    from confidential.keys import KeyFileError, load_recipient_key

    try:
        return load_recipient_key(key_file)
    except KeyFileError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _stop(message: str, as_json: bool, code: int = 2) -> None:
    if as_json:
        _emit({"ok": False, "error": message})
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


class _Session:
    """PostgreSQL, MinIO and the ledger for a reader (closed at exit)."""

    def __init__(self, as_json: bool, key: Any = None, ledger_dir: Path | None = None,
                 pg_principal: str = "verifier", minio: bool = True) -> None:
        from ledger.client import LedgerClient
        from storage.blobs import BlobStore
        from storage.db import open_pool

        self.settings = load_settings()
        self.as_json = as_json
        try:
            # a reader reads as the verifier's role (every table, no write but verdicts), never the owner
            self.pool = open_pool(self.settings.postgres_dsn_for(pg_principal), max_size=2)
            # MinIO as the analyst (issue 17): read only; no MinIO user deletes (key records are rows)
            self.blobs = BlobStore.from_settings(self.settings, "analyst") if minio else None
            self.ledger = LedgerClient.from_layout(ledger_dir or self.settings.ledger_home, key=key)
        except Exception as exc:  # noqa: BLE001 -- a service or the ledger state dir: a usage error, exit 2
            _stop(f"cannot reach the stack: {exc}", as_json)

    def close(self) -> None:
        self.ledger.close()
        self.pool.close()


def _open_all(sess: _Session, hashes: list[bytes], recipient: Any) -> list[tuple[bytes, Any, Any, int, bool]]:
    """Each record ``(hash, fetched, opened or OpenFailure, judged height, anchored)``."""
    from pipelines.opener import OpenFailure, fetch, judge, open_record

    got: list[tuple[bytes, Any]] = []
    for h in hashes:
        try:
            got.append((h, fetch(sess.pool, sess.blobs, h)))
        except OpenFailure as exc:
            got.append((h, exc))
    fetched = [(h, f) for h, f in got if not isinstance(f, OpenFailure)]
    try:
        judged = judge(sess.ledger, [(h, f.statement, f.payload, f.batch_id) for h, f in fetched]) \
            if fetched else None
    except Exception as exc:  # noqa: BLE001 -- no proven policy, no verdict: a service problem, exit 2
        _stop(f"the ledger's policy could not be proven: {type(exc).__name__}: {exc}", sess.as_json)
    out: list[tuple[bytes, Any, Any, int, bool]] = []
    for h, f in got:
        if isinstance(f, OpenFailure):
            out.append((h, None, f, 0, False))
            continue
        assert judged is not None
        height, anchored = judged.heights[h]
        try:
            opened: Any = open_record(f.statement, f.signature, f.payload, f.key_record, recipient,
                                      stream_state=judged.state, height=height)
        except OpenFailure as exc:
            opened = exc
        out.append((h, f, opened, height, anchored))
    return out


def _failure_exit(results: list[tuple[bytes, Any, Any, int, bool]], as_json: bool, extra: dict) -> None:
    """Print the failures of `results` and exit (3 when all are erasures, else 1); return if none."""
    from pipelines.opener import OpenFailure

    bad = [(h, r) for h, _, r, _, _ in results if isinstance(r, OpenFailure)]
    if not bad:
        return
    erased_only = all(r.step == "erased" for _, r in bad)
    if as_json:
        _emit({"ok": False, "outcome": "erased" if erased_only else "failed", "step": bad[0][1].step,
               "message": bad[0][1].message, "statement_hash": bad[0][0].hex(),
               "failures": [{"statement_hash": h.hex(), "step": r.step, "message": r.message} for h, r in bad],
               **extra})
    else:
        for h, r in bad[:20]:
            word = "ERASED" if r.step == "erased" else f"FAILED at {r.step}"
            click.echo(f"{word}: {h.hex()}: {r.message}", err=True)
    sys.exit(3 if erased_only else 1)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _describe(h: bytes, opened: Any, height: int, anchored: bool, recipient: Any) -> dict:
    env = opened.envelope
    return {"statement_hash": h.hex(), "recipient": recipient.id, "stream": env.stream, "device": env.device,
            "seq": env.seq, "kind": env.kind, "content_type": env.content_type, "size": env.size,
            "commitment": env.commitment.hex(), "policy_height": height, "anchored": anchored}


@data_open.command("blob")
@click.argument("statement_hash")
@_KEY
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="write the plaintext here (created 0600; never overwritten)")
@_LEDGER
@_JSON
def open_blob(statement_hash: str, key_file: Path, out_file: Path | None, ledger_dir: Path | None,
              as_json: bool) -> None:
    """Open the confidential record STATEMENT_HASH (64 hex digits)."""
    h = _hash(statement_hash, "STATEMENT_HASH")
    recipient = _recipient(key_file)
    sess = _Session(as_json, ledger_dir=ledger_dir)
    try:
        results = _open_all(sess, [h], recipient)
    finally:
        sess.close()
    _failure_exit(results, as_json, {})
    _, _, opened, height, anchored = results[0]
    if out_file is not None:
        _write_new(out_file, opened.plaintext)
    result = {"ok": True, **_describe(h, opened, height, anchored, recipient),
              "out": None if out_file is None else str(out_file)}
    if as_json:
        _emit(result)
    else:
        env = opened.envelope
        _out.print(f"PROVEN: {env.kind} {env.device} #{env.seq} of stream {env.stream}: {env.size} plaintext bytes "
                   f"({env.content_type}) match the signed commitment; opened as {recipient.id}, granted at height "
                   f"{height}" + (f"; written to {out_file}" if out_file else ""), highlight=False)


@data_open.command("row")
@click.argument("key")
@_KEY
@_LEDGER
@_JSON
def open_row(key: str, key_file: Path, ledger_dir: Path | None, as_json: bool) -> None:
    """Open one signed row KEY = <statement hash>:<row index> of a confidential time series and
    print it (time, sensor, value) with its provenance."""
    head, sep, idx = key.partition(":")
    if not sep or not idx.isdigit():
        raise click.BadParameter("KEY is <statement hash>:<row index>", param_hint="KEY")
    h, row = _hash(head, "KEY"), int(idx)
    recipient = _recipient(key_file)
    sess = _Session(as_json, ledger_dir=ledger_dir)
    try:
        results = _open_all(sess, [h], recipient)
    finally:
        sess.close()
    _failure_exit(results, as_json, {})
    from pipelines.opener import OpenFailure, rows_of

    _, _, opened, height, anchored = results[0]
    try:
        table = rows_of(opened)
    except OpenFailure as exc:
        _failure_exit([(h, None, exc, 0, False)], as_json, {})
        return
    if row >= table.num_rows:
        _stop(f"the record has {table.num_rows} rows; no row {row}", as_json, code=1)
    r = {c: table.column(c)[row].as_py() for c in ("time_us", "sensor", "value")}
    doc = {"ok": True, **_describe(h, opened, height, anchored, recipient), "row_index": row,
           "time": datetime.fromtimestamp(r["time_us"] / 1e6, timezone.utc).isoformat(), "sensor": r["sensor"],
           "value": r["value"]}
    if as_json:
        _emit(doc)
    else:
        _out.print(f"PROVEN: row {row} of {h.hex()} ({opened.envelope.device} #{opened.envelope.seq}): "
                   f"{doc['time']} {r['sensor']} = {r['value']}; the plaintext matches the signed commitment",
                   highlight=False)


def _device_records(sess: _Session, device: str, start: datetime, end: datetime) -> list[bytes]:
    from trust.statement import ENVELOPE_CONTENT_TYPE

    with sess.pool.connection() as conn:
        rows = conn.execute("SELECT statement_hash FROM statements WHERE device = %s AND kind = 'timeseries' "
                            "AND content_type = %s AND ts >= %s AND ts < %s ORDER BY seq",
                            (device, ENVELOPE_CONTENT_TYPE, start, end)).fetchall()
    return [bytes(r[0]) for r in rows]


def _range_table(results: list[tuple[bytes, Any, Any, int, bool]], start: datetime, end: datetime) -> Any:
    """The rows of the opened records in ``[start, end)`` with provenance columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.opener import rows_of

    lo, hi = int(start.timestamp() * 1e6), int(end.timestamp() * 1e6)
    parts = []
    for h, f, opened, height, anchored in results:
        t = rows_of(opened)
        n = t.num_rows
        t = t.append_column("row_index", pa.array(range(n), pa.int32()))
        mask = pc.and_(pc.greater_equal(t.column("time_us"), lo), pc.less(t.column("time_us"), hi))
        t = t.filter(mask)
        k = t.num_rows
        parts.append(pa.table({
            "time": t.column("time_us").cast(pa.timestamp("us", tz="UTC")),
            "device": pa.array([f.statement.device] * k, pa.string()),
            "sensor": t.column("sensor"), "value": t.column("value"),
            "statement_hash": pa.array([h] * k, pa.binary(32)), "row_index": t.column("row_index"),
            "seq": pa.array([f.statement.seq] * k, pa.int64()),
            "stream": pa.array([opened.envelope.stream] * k, pa.string()),
            "commitment": pa.array([opened.envelope.commitment] * k, pa.binary(32)),
            "batch_id": pa.array([f.batch_id] * k, pa.string()),
            "policy_height": pa.array([height] * k, pa.int64()),
            "anchored": pa.array([anchored] * k, pa.bool_()),
        }))
    return pa.concat_tables(parts) if parts else None


def _open_range(device: str, start_text: str, end_text: str, key_file: Path, ledger_dir: Path | None,
                as_json: bool) -> tuple[Any, Any]:
    start, end = _time(start_text, "--from"), _time(end_text, "--to")
    recipient = _recipient(key_file)
    sess = _Session(as_json, ledger_dir=ledger_dir)
    try:
        hashes = _device_records(sess, device, start, end)
        if not hashes:
            _stop(f"no confidential time series of {device} signed in [{start.isoformat()}, {end.isoformat()})",
                  as_json)
        results = _open_all(sess, hashes, recipient)
    finally:
        sess.close()
    _failure_exit(results, as_json, {"records": len(hashes)})
    from pipelines.opener import OpenFailure

    try:
        return _range_table(results, start, end), (recipient, len(hashes))
    except OpenFailure as exc:
        _failure_exit([(b"\0" * 32, None, exc, 0, False)], as_json, {})
        raise


_RANGE = [click.option("--device", required=True, help="the device's did"),
          click.option("--from", "start", required=True, help="window start, ISO-8601 (naive = UTC)"),
          click.option("--to", "end", required=True, help="window end (exclusive)")]


def _range_options(f: Any) -> Any:
    for opt in reversed(_RANGE):
        f = opt(f)
    return f


@data_open.command("range")
@_range_options
@_KEY
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Parquet file for the plaintext rows with provenance (created 0600; never overwritten)")
@_LEDGER
@_JSON
def open_range(device: str, start: str, end: str, key_file: Path, out_file: Path, ledger_dir: Path | None,
               as_json: bool) -> None:
    """Open every confidential time series of DEVICE signed in [FROM, TO) and write its rows in
    the window to a Parquet file (time, device, sensor, value, statement_hash, row_index, seq,
    stream, commitment, batch_id, policy_height, anchored)."""
    import io

    import pyarrow.parquet as pq

    table, (recipient, n) = _open_range(device, start, end, key_file, ledger_dir, as_json)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    _write_new(out_file, buf.getvalue())
    doc = {"ok": True, "records": n, "rows": table.num_rows, "recipient": recipient.id, "out": str(out_file)}
    if as_json:
        _emit(doc)
    else:
        _out.print(f"PROVEN: {n} record(s) of {device} opened as {recipient.id}, each plaintext matches its signed "
                   f"commitment; {table.num_rows} row(s) in the window written to {out_file}", highlight=False)


_EXPORT_DDL = """
CREATE TABLE IF NOT EXISTS {t} (
    time           timestamptz NOT NULL,
    device         text        NOT NULL,
    sensor         text        NOT NULL,
    value          double precision,
    statement_hash bytea       NOT NULL,
    row_index      integer     NOT NULL,
    seq            bigint      NOT NULL,
    stream         text        NOT NULL,
    commitment     bytea       NOT NULL,
    batch_id       text,
    policy_height  bigint      NOT NULL,
    anchored       boolean     NOT NULL,
    recipient      text        NOT NULL,
    opened_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (statement_hash, row_index)
)"""


@data.command("export")
@_range_options
@_KEY
@click.option("--dsn", required=True, help="the recipient's own PostgreSQL (never the pipeline's shared database)")
@click.option("--schema", required=True, help="the recipient's schema (created if missing)")
@click.option("--table", "table_name", default="confidential_readings", show_default=True)
@_LEDGER
@_JSON
def data_export(device: str, start: str, end: str, key_file: Path, dsn: str, schema: str, table_name: str,
                ledger_dir: Path | None, as_json: bool) -> None:
    """Materialise a recipient's decrypted rows of DEVICE in [FROM, TO) into the recipient's own
    database and schema, with provenance (statement hash, row index, seq, stream, commitment,
    batch, the policy height, who opened them). Idempotent: a row already there is kept."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict

    if conninfo_to_dict(dsn).get("dbname") == conninfo_to_dict(load_settings().postgres_dsn).get("dbname") and \
            conninfo_to_dict(dsn).get("port") == conninfo_to_dict(load_settings().postgres_dsn).get("port"):
        _stop("--dsn is the pipeline's shared database: plaintext must not go there", as_json)
    table, (recipient, n) = _open_range(device, start, end, key_file, ledger_dir, as_json)
    t = sql.Identifier(schema, table_name)
    cols = ["time", "device", "sensor", "value", "statement_hash", "row_index", "seq", "stream", "commitment",
            "batch_id", "policy_height", "anchored"]
    rows = table.to_pylist()
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(_EXPORT_DDL).format(t=t))
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} ({}, recipient) VALUES ({}, %s) ON CONFLICT DO NOTHING").format(
                    t, sql.SQL(", ").join(map(sql.Identifier, cols)),
                    sql.SQL(", ").join(sql.Placeholder() * len(cols))),
                [tuple(r[c] for c in cols) + (recipient.id,) for r in rows])
            inserted = cur.rowcount
    doc = {"ok": True, "records": n, "rows": len(rows), "inserted": inserted, "recipient": recipient.id,
           "table": f"{schema}.{table_name}"}
    if as_json:
        _emit(doc)
    else:
        _out.print(f"PROVEN and exported: {n} record(s), {len(rows)} row(s) into {schema}.{table_name} "
                   f"as {recipient.id}", highlight=False)


@data.command("erase")
@click.option("--device", default=None, help="erase this device's confidential records (with --before)")
@click.option("--before", default=None, help="... signed before this time (ISO-8601, naive = UTC)")
@click.option("--batch", default=None, help="erase the confidential records of this batch")
@click.option("--statement", "statements", multiple=True, help="erase this record (statement hash; repeatable)")
@click.option("--reason", required=True, help="why (recorded on chain, at most 256 characters)")
@click.option("--as", "signer", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="key file of the admin of the device's organisation (trust.identity format, mode 0600)")
@_LEDGER
@_JSON
def data_erase(device: str | None, before: str | None, batch: str | None, statements: tuple[str, ...],
               reason: str, signer: Path, ledger_dir: Path | None, as_json: bool) -> None:
    """Erase confidential records by destroying their keys.

    \b
      sealstream data erase --device did:key:z6Mk... --before 2030-01-01 --reason "retention ended" --as acme.key
      sealstream data erase --batch gw-1-3f2a... --reason "contract ended" --as acme.key
      sealstream data erase --statement 9f86...  --reason "personal data" --as acme.key

    First a policy.erase transaction on chain (who, what, why, when, the statement hashes; an
    audit event), then every key record the system holds for them is deleted. The ciphertext and
    every proof stay: `verify` then reports the records as ERASED at the tx's height. Not
    undone by it: a copy a recipient already decrypted, and the key record in the raw Kafka
    message until the topic's retention deletes it (docs/formats.md section 8).
    """
    from pipelines.erasure import ErasureError, erase, select
    from trust.identity import load_keypair

    key = load_keypair(signer)
    # PostgreSQL as the erasure role: it may read statements and destroy key records, nothing else
    sess = _Session(as_json, key=key, ledger_dir=ledger_dir, pg_principal="erasure", minio=False)
    try:
        sel = select(sess.pool, device=device, before=None if before is None else _time(before, "--before"),
                     batch=batch, statements=[_hash(s, "--statement") for s in statements])
        result = erase(sess.ledger, sess.pool, sel, reason)
    except ErasureError as exc:
        if as_json:
            _emit({"ok": False, "step": exc.step, "message": exc.message})
        else:
            click.echo(f"FAILED at {exc.step}: {exc.message}", err=True)
        sys.exit(1)
    finally:
        sess.close()
    doc = result.to_json()
    if as_json:
        _emit(doc)
    else:
        _out.print(f"ERASED {doc['records']} record(s) ({doc['scope']}): erasure on chain at height "
                   f"{', '.join(map(str, doc['heights']))}, {doc['keys_deleted']} key record(s) destroyed"
                   + (f"; {doc['skipped_plain']} plaintext record(s) skipped (no key to destroy)"
                      if doc["skipped_plain"] else ""), highlight=False)


@data.command("recipients")
@click.option("--stream", required=True, help="the confidential stream (a device id or a named stream)")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the recipients file here (what an edge agent's `recipients = \"FILE\"` reads)")
@_LEDGER
@_JSON
def data_recipients(stream: str, out_file: Path | None, ledger_dir: Path | None, as_json: bool) -> None:
    """The recipients in force for STREAM now: the policy and the recipients' X25519 keys, proven at one
    certified height against headers verified from the genesis (docs/edge.md "Confidential devices")."""
    import json

    from confidential.device import recipients_doc
    from ledger.client import LedgerClient
    from pipelines.devices.confidential import recipients_now

    settings = load_settings()
    try:
        client = LedgerClient.from_layout(ledger_dir or settings.ledger_home)
    except Exception as exc:  # noqa: BLE001 -- the ledger state dir: a usage error, exit 2
        _stop(f"cannot reach the ledger: {exc}", as_json)
    try:
        height, rcpts = recipients_now(client, stream)
    except Exception as exc:  # noqa: BLE001 -- no proven answer, no recipients: exit 2
        _stop(f"the ledger's policy could not be proven: {type(exc).__name__}: {exc}", as_json)
    finally:
        client.close()
    if not rcpts:
        _stop(f"stream {stream!r} has no recipient in force at height {height}", as_json, 1)
    doc = recipients_doc(stream, height, [(r.id, r.org, r.key) for r in rcpts])
    if out_file is not None:
        tmp = out_file.with_name(out_file.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", "utf-8")
        os.replace(tmp, out_file)  # an agent re-reading it never sees half a file
    if as_json:
        _emit(doc)
    else:
        _out.print(f"stream {stream}: {len(rcpts)} recipient(s) in force at height {height}: "
                   + ", ".join(f"{r.id} ({r.org})" for r in rcpts)
                   + (f"; written to {out_file}" if out_file else ""), highlight=False)
