"""What every ``sealstream`` command prints with: consoles, JSON, and the one-sentence error."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
from rich.console import Console

from sealstream.settings import Settings, home_search, load_settings

__all__ = ["err", "out", "emit_json", "fail", "settings_of"]

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


def settings_of(ctx: click.Context) -> Settings:
    """The settings of the running command: the root group's (``--home`` and the rest applied), or
    freshly loaded when a sub-command runs on its own (tests invoke groups directly)."""
    return getattr(ctx.obj, "settings", None) or load_settings()


def missing_home(settings: Settings) -> str | None:
    """One sentence saying where the state directory was looked for, when there is none (else None)."""
    if settings.home.is_dir():
        return None
    return (f"no state directory at {settings.home.resolve()} (looked at {home_search()}): run the command "
            "from the stack's directory, set SEALSTREAM_HOME, or start a stack here with `sealstream stack up`")
