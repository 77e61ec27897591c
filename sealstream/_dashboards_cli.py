"""``sealstream dashboards ...``: build the Grafana dashboards as code, push them to a Grafana.

Exit codes: 0 ok; 1 an error (one sentence naming the fix, ``reason`` in
``--json``); 2 when ``build --check`` finds stale generated files.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click
from rich.progress import Progress
from rich.table import Table

from ._output import emit_json, err, fail, out
from ._output import settings_of as _settings

__all__ = ["dashboards"]



@click.group("dashboards")
def dashboards() -> None:
    """Grafana dashboards as code: Chain health, Pipeline, Verification.

    \b
    sealstream dashboards build                 regenerate dashboards/provisioning/ (JSON + YAML)
    sealstream dashboards build --check         exit 2 if the committed files are stale (CI)
    sealstream dashboards push --url http://127.0.0.1:3000 --user admin \\
        --password "$(cat .sealstream/secrets/grafana_admin_password)"     (compose's Grafana)
    sealstream dashboards push --url https://grafana.example --token $GRAFANA_TOKEN --json

    The dashboards are Python (dashboards/*.py, grafana-foundation-sdk); panels name
    their datasources by fixed uid (sealstream-prometheus, sealstream-postgres).
    With Docker, infra/compose.yaml mounts dashboards/provisioning into its Grafana,
    so `docker compose up` shows them with no push. See docs/dashboards.md.
    """


@dashboards.command("build")
@click.option("--out", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="provisioning folder to write [default: dashboards/provisioning in the repository]")
@click.option("--check", is_flag=True, help="write nothing; exit 2 if any file is missing or differs")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def dashboards_build(root: Path | None, check: bool, as_json: bool) -> None:
    """Render every dashboard and the provisioning YAML into dashboards/provisioning/.

    \b
    sealstream dashboards build
    sealstream dashboards build --check --json   {"stale": [...], "ok": false} and exit 2 when stale
    """
    from dashboards import PROVISIONING, render, stale, write

    root = root or PROVISIONING
    if check:
        bad = stale(root)
        if as_json:
            emit_json({"root": str(root), "ok": not bad, "stale": bad})
        elif bad:
            err.print(f"[bold red]stale:[/] {', '.join(bad)} under {root}: run `sealstream dashboards build` "
                      "and commit the result", highlight=False)
        else:
            out.print(f"up to date: {len(render())} files under {root}", highlight=False)
        sys.exit(2 if bad else 0)
    written = write(root)
    if as_json:
        emit_json({"root": str(root), "written": [str(p.relative_to(root)) for p in written]})
        return
    out.print(f"wrote {len(written)} file(s) under {root}" + (": " + ", ".join(str(p.relative_to(root))
              for p in written) if written else " (all up to date)"), highlight=False)


@dashboards.command("push")
@click.option("--url", required=True, help="Grafana base URL, e.g. http://127.0.0.1:3000")
@click.option("--token", envvar="SEALSTREAM_GRAFANA_TOKEN", default=None,
              help="service-account token [SEALSTREAM_GRAFANA_TOKEN]")
@click.option("--user", envvar="SEALSTREAM_GRAFANA_USER", default=None,
              help="basic-auth user [SEALSTREAM_GRAFANA_USER]")
@click.option("--password", envvar="SEALSTREAM_GRAFANA_PASSWORD", default=None,
              help="basic-auth password [SEALSTREAM_GRAFANA_PASSWORD]")
@click.option("--prometheus-url", default=None,
              help="Prometheus as Grafana reaches it [default: the stack's, SEALSTREAM_PROMETHEUS_URL]")
@click.option("--pg-dsn", default=None,
              help="PostgreSQL as Grafana reaches it [default: the stack's, SEALSTREAM_PG_DSN]")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=10.0, show_default=True,
              help="seconds per HTTP request")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def dashboards_push(ctx: click.Context, url: str, token: str | None, user: str | None, password: str | None,
                    prometheus_url: str | None, pg_dsn: str | None, timeout: float, as_json: bool) -> None:
    """Create or update the sealstream folder, both datasources and the dashboards (idempotent).

    \b
    sealstream dashboards push --url http://127.0.0.1:3000 --user admin \\
        --password "$(cat .sealstream/secrets/grafana_admin_password)"
    SEALSTREAM_GRAFANA_TOKEN=glsa_... sealstream dashboards push --url https://grafana.example \\
        --prometheus-url http://prometheus.internal:9090 --pg-dsn postgresql://grafana:pw@db:5432/sealstream

    Fails (exit 1) with a reason: connection (nothing answers), not-grafana (something else
    answers), auth (401/403: wrong or too weak credentials), refused (Grafana said no).
    """
    from dashboards import Endpoints
    from dashboards.push import PushError, push

    if token and user:
        fail({"error": "UsageError", "reason": "usage", "message": "give --token or --user/--password, not both"},
             as_json)
    endpoints = Endpoints.from_settings(_settings(ctx), prometheus_url, pg_dsn)
    try:
        with Progress(console=err, transient=True, disable=as_json) as bar:
            task = bar.add_task("push", total=7)

            def step(what: str) -> None:
                bar.update(task, description=what, advance=1)

            result = push(url, endpoints, token=token, user=user, password=password, timeout=timeout,
                          progress=step)
    except PushError as exc:
        fail({"error": type(exc).__name__, "reason": exc.reason, "url": url, "message": str(exc)}, as_json)
    if as_json:
        emit_json(asdict(result))
        return
    table = Table("object", "uid", "action")
    table.add_row("folder", "sealstream", result.folder)
    for uid, action in result.datasources.items():
        table.add_row("datasource", uid, action)
    for uid, action in result.dashboards.items():
        table.add_row("dashboard", uid, action)
    out.print(f"Grafana {result.version} at {result.url}", highlight=False)
    out.print(table)
