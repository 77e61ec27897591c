"""``sealstream data open blob ...``: a recipient reads a confidential record (issue 18).

Fetches the signed statement (PostgreSQL), the ciphertext (MinIO ``raw/``) and the key record
(MinIO ``keys/``), proves the ciphertext against the device's signature, opens the envelope with
the recipient's X25519 key file and proves the plaintext against the signed commitment. The
plaintext goes only to ``--out`` (a file created 0600) or, without it, nowhere: the command then
only proves it. Exit 0 proven, 1 a step failed (named), 2 bad usage.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ._output import emit_json as _emit
from ._output import out as _out
from .settings import load_settings

__all__ = ["data"]


@click.group()
def data() -> None:
    """Read confidential records as one of their recipients."""


@data.group("open")
def data_open() -> None:
    """Decrypt and prove a confidential record with a recipient's key."""


@data_open.command("blob")
@click.argument("statement_hash")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the recipient's X25519 key file (mode 0600)")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="write the plaintext here (created 0600; never overwritten)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def open_blob(statement_hash: str, key_file: Path, out_file: Path | None, as_json: bool) -> None:
    """Open the confidential record STATEMENT_HASH (64 hex digits)."""
    from confidential.keys import KeyFileError, load_recipient_key
    from pipelines.opener import OpenFailure, fetch, open_record
    from storage.blobs import BlobStore
    from storage.db import open_pool
    from storage.readers import Reader

    try:
        h = bytes.fromhex(statement_hash)
        if len(h) != 32:
            raise ValueError
    except ValueError:
        raise click.BadParameter("a statement hash is 64 hex digits", param_hint="STATEMENT_HASH") from None
    try:
        recipient = load_recipient_key(key_file)
    except KeyFileError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    settings = load_settings()
    pool = open_pool(settings.postgres_dsn, max_size=1)
    try:
        got = fetch(Reader(pool), BlobStore.from_settings(settings), h)
        opened = open_record(got.statement, got.signature, got.payload, got.key_record, recipient)
    except OpenFailure as exc:
        if as_json:
            _emit({"ok": False, "step": exc.step, "message": exc.message, "statement_hash": statement_hash})
        else:
            click.echo(f"FAILED at {exc.step}: {exc.message}", err=True)
        sys.exit(1)
    finally:
        pool.close()
    if out_file is not None:
        fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(opened.plaintext)
    env = opened.envelope
    result = {"ok": True, "statement_hash": statement_hash, "recipient": recipient.id, "stream": env.stream,
              "device": env.device, "seq": env.seq, "kind": env.kind, "content_type": env.content_type,
              "size": env.size, "commitment": env.commitment.hex(), "out": None if out_file is None else str(out_file)}
    if as_json:
        _emit(result)
    else:
        _out.print(f"PROVEN: {env.kind} {env.device} #{env.seq} of stream {env.stream}: {env.size} plaintext bytes "
                   f"({env.content_type}) match the signed commitment; opened as {recipient.id}"
                   + (f"; written to {out_file}" if out_file else ""), highlight=False)
