"""Regression: rich turned ":key:" into an emoji, so the CLI printed "did🔑z6Mk..." for did:key ids."""

from __future__ import annotations

from rich.table import Table

from sealstream._output import err, out

DID = "did:key:z6MkouiVyWf7bkC4LdgANFx2MJBCh2ygWFmu1aq4TrpgJgKc"


def test_did_key_ids_print_verbatim() -> None:
    table = Table("key")
    table.add_row(DID)
    for console in (out, err):
        with console.capture() as captured:
            console.print(f"key {DID}")
            console.print(table)
        text = captured.get()
        assert text.count(DID) == 2
        assert "\N{KEY}" not in text
