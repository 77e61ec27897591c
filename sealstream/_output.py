"""What every ``sealstream`` command prints with: consoles, JSON, and the one-sentence error."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
from rich.console import Console

__all__ = ["err", "out", "emit_json", "fail"]

# emoji=False: rich would otherwise print "did:key:z6Mk..." as "did🔑z6Mk...".
err = Console(stderr=True, soft_wrap=True, emoji=False)
out = Console(width=None if sys.stdout.isatty() else 160, emoji=False)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def fail(error: dict[str, Any], as_json: bool) -> NoReturn:
    """Print ``error["message"]`` (and the whole dict as JSON with --json); exit 1."""
    if as_json:
        emit_json(error)
    err.print(f"[bold red]error:[/] {error['message']}", highlight=False)
    sys.exit(1)
