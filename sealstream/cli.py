"""The ``sealstream`` command line."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.table import Table

from ._output import emit_json as _emit_json
from ._output import err, fail, missing_home, out
from .settings import Settings, load_settings

__all__ = ["main"]


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A spinner on a terminal, plain lines otherwise; yields a ``say(msg)`` callable."""
    if not enabled:
        yield lambda _msg: None
        return
    if err.is_terminal:
        with err.status("starting") as status:
            yield lambda msg: status.update(msg)
    else:
        yield lambda msg: err.print(f"- {msg}", highlight=False)


class _Context:
    def __init__(self) -> None:
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sealstream")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """sealstream: tamper-evident industrial telemetry.

    Devices sign their telemetry; Kafka carries it; pipeline workers verify,
    store (PostgreSQL/TimescaleDB rows, MinIO blobs) and seal it; Merkle roots of
    each batch are anchored on a consortium ledger, so anyone can later prove a
    row or blob is exactly what a registered device sent.

    \b
    Start here:
      sealstream demo            stack + 4-node ledger up, a simulated factory through
                                 the workers for 20 s, then a summary (--json)
      sealstream status          services and ledger nodes at a glance
      sealstream stack up|down   Kafka, MinIO, PostgreSQL, Prometheus (installed if missing)
      sealstream ledger status   height, view, role and peers of each node

    \b
    Then:
      sealstream devices run --factory f1 --devices 3 --duration 30   signed telemetry to Kafka
      sealstream pipeline worker                ingest -> store -> seal -> anchor
      sealstream verify range --device DID --from 2030-01-01 --to 2030-01-02
      sealstream evidence export batch ID -o b.zip && sealstream evidence verify b.zip
      sealstream dashboards build               Grafana dashboards as code

    Every setting comes from an environment variable SEALSTREAM_<NAME> (or a
    TOML file in $SEALSTREAM_CONFIG / ./sealstream.toml); `sealstream settings`
    lists them with their current values.
    """
    from ._logging import configure_logging

    ctx.obj = _Context()
    s = ctx.obj.settings
    configure_logging(s.log_format, s.log_level)


@cli.command("settings")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.pass_obj
def settings_cmd(obj: _Context, as_json: bool) -> None:
    """Show the effective settings (secrets masked) and the variable that sets each."""
    data = obj.settings.public_dict()
    if as_json:
        _emit_json(data)
        return
    table = Table("setting", "environment variable", "value")
    for key, value in data.items():
        table.add_row(key, f"SEALSTREAM_{key.upper()}", str(value))
    out.print(table)


# -- stack ---------------------------------------------------------------------------------
@cli.group()
def stack() -> None:
    """The local stack of real services, under one state directory.

    \b
    State:  $SEALSTREAM_HOME (default ./.sealstream): data/, logs/, run/ (pid files), conf/
    Cache:  $SEALSTREAM_CACHE_DIR (default ~/.cache/sealstream): Kafka jars, the MinIO build

    `up` installs what is missing (apt packages when run as root, the Kafka jars from
    Maven Central, MinIO built with `go install`), starts what is stopped, creates the
    topics, bucket and database, and returns once every service answers its health check.
    Running it again is safe and fast.
    """


def _status_table(rows: list[Any]) -> Table:
    table = Table("service", "state", "address", "version", "pid", "security", "detail")
    colours = {"running": "green", "unhealthy": "yellow", "stopped": "red"}
    for r in rows:
        sec = r.security or "-"
        sec = f"[yellow]{sec}[/]" if sec.startswith("plaintext") else sec
        table.add_row(r.name, f"[{colours.get(r.state, 'white')}]{r.state}[/]", r.address, r.version,
                      str(r.pid or "-"), sec, r.detail)
    return table


def _fail(exc: Exception, as_json: bool) -> None:
    """Print a boundary error as one sentence (and JSON with --json), exit 1."""
    from infra import StackError
    from storage import StorageError

    if isinstance(exc, StackError):
        fail(exc.to_dict(), as_json)
    if isinstance(exc, StorageError):
        fail({"error": type(exc).__name__, "service": "postgres", "message": str(exc)}, as_json)
    if isinstance(exc, ValueError):  # a refused argument (a bad or revoked factory name): one sentence
        fail({"error": "invalid-argument", "message": str(exc)}, as_json)
    raise exc


def _with_schema(rows: list[Any], settings: Settings) -> list[Any]:
    """Add the schema version and flavour to the postgres row when it runs."""
    import dataclasses

    from storage import StorageError, storage_status

    out = []
    for r in rows:
        if r.name == "postgres" and r.state == "running":
            try:
                st = storage_status(settings.postgres_dsn)
                schema = (f"schema v{st.version}/{st.latest} ({st.flavour or 'not migrated'})"
                          + (f", pending {', '.join(st.pending)}" if st.pending else ""))
            except StorageError as exc:
                schema = f"schema unknown ({exc})"
            r = dataclasses.replace(r, detail=f"{r.detail}; {schema}")
        out.append(r)
    return out


@stack.command("up")
@click.option("--json", "as_json", is_flag=True, help="print the final status as JSON")
@click.pass_obj
def stack_up(obj: _Context, as_json: bool) -> None:
    """Install what is missing, start the services, wait until all are healthy."""
    from infra import Stack, StackError

    from storage import StorageError, migrate

    st = Stack(obj.settings)
    began = time.monotonic()
    try:
        with _progress(not as_json) as say:
            st.up(progress=say)
            say("migrating the database schema")
            migrate(obj.settings.postgres_dsn)
    except (StackError, StorageError) as exc:
        _fail(exc, as_json)
        return
    rows = _with_schema(st.status(), obj.settings)
    took = time.monotonic() - began
    if as_json:
        _emit_json({"seconds": round(took, 2), "home": str(st.home), "services": [r.to_dict() for r in rows]})
        return
    out.print(_status_table(rows))
    out.print(f"stack up in {took:.1f} s; state in {st.home}")


@stack.command("certs")
@click.option("--json", "as_json", is_flag=True, help="print the files as JSON")
@click.pass_obj
def stack_certs(obj: _Context, as_json: bool) -> None:
    """Make the stack CA, the certificates and the secrets without starting anything.

    `stack up` does this itself; run it first for services you start some other way (Docker with
    infra/compose.yaml, which mounts <home>/pki and <home>/secrets). Safe to repeat: certificates
    are kept until 30 days before they end, secrets forever. Prints paths, never a secret.
    """
    from infra import Stack, StackError
    from infra.pki import PKIError

    try:
        files = Stack(obj.settings).ensure_certs()
    except (StackError, PKIError, OSError) as exc:
        fail({"error": type(exc).__name__, "message": str(exc)}, as_json)
    if as_json:
        _emit_json({name: str(path) for name, path in files.items()})
        return
    for name, path in files.items():
        out.print(f"{name:24} {path}", highlight=False)


@stack.command("provision")
@click.pass_obj
def stack_provision(obj: _Context) -> None:
    """Create topics, bucket and database on services that already run elsewhere.

    For Docker (infra/compose.yaml) or remote clusters: point SEALSTREAM_KAFKA_BOOTSTRAP_SERVERS,
    SEALSTREAM_MINIO_ENDPOINT, SEALSTREAM_PG_DSN and SEALSTREAM_PROMETHEUS_URL at them first.
    """
    from infra import Stack, StackError

    try:
        with _progress(True) as say:
            Stack(obj.settings).provision(progress=say)
    except StackError as exc:
        _fail(exc, False)


@stack.group("factory")
def stack_factory() -> None:
    """Factories' Kafka principals (``factory-<name>``: may only produce raw telemetry)."""


@stack_factory.command("add")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print the principal and its files as JSON")
@click.pass_obj
def stack_factory_add(obj: _Context, name: str, as_json: bool) -> None:
    """Enrol factory NAME: a client certificate from the stack CA (CN factory-NAME, under
    <home>/pki) and, with security on, its Kafka ACLs (WRITE/DESCRIBE on the raw topics,
    IDEMPOTENT_WRITE). Idempotent; hand the CA, certificate and key to the factory's edge."""
    from infra import Stack, StackError
    from sealstream._kafka_config import factory_principal, kafka_secured

    try:
        files = Stack(obj.settings).ensure_factory(name)
    except (StackError, ValueError) as exc:
        _fail(exc, as_json)
        return
    doc = {"principal": factory_principal(name), "ca": str(files.ca), "cert": str(files.cert), "key": str(files.key),
           "acls": kafka_secured(obj.settings)}
    if as_json:
        _emit_json(doc)
    else:
        out.print(f"User:{doc['principal']}: certificate {doc['cert']}, key {doc['key']}, CA {doc['ca']}"
                  + ("" if doc["acls"] else " (security is off: no ACLs until it is on and the stack provisioned)"))


@stack_factory.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print what was revoked as JSON")
@click.pass_obj
def stack_factory_revoke(obj: _Context, name: str, as_json: bool) -> None:
    """Revoke factory NAME (a stolen edge, a decommissioned site): every Kafka ACL of
    User:factory-NAME is deleted at once, so each of its requests is refused from now on, open
    connections too; its certificate and key move to <home>/pki/revoked/ and the name is never
    enrolled again (`stack up` does not restore it). Enrol a replacement under a new name."""
    from infra import Stack, StackError

    try:
        done = Stack(obj.settings).revoke_factory(name)
    except (StackError, ValueError) as exc:
        _fail(exc, as_json)
        return
    if as_json:
        _emit_json(done)
    else:
        out.print(f"User:{done['principal']} revoked at {done['revoked_at']} (certificate sha256 "
                  f"{done['cert_sha256'][:16]}…)" + ("; its ACLs are deleted" if done["acls_deleted"] else
                                                     "; security is off: it had no ACLs"))


@stack_factory.command("list")
@click.option("--json", "as_json", is_flag=True, help="print the factories as JSON")
@click.pass_obj
def stack_factory_list(obj: _Context, as_json: bool) -> None:
    """The factories enrolled on this stack (a certificate and ACLs) and those revoked."""
    from infra import Stack

    doc = Stack(obj.settings).factories()
    if as_json:
        _emit_json(doc)
        return
    out.print("enrolled: " + (", ".join(doc["enrolled"]) or "none"))
    for r in doc["revoked"]:
        out.print(f"revoked:  {r['factory']} at {r['revoked_at']}")


@stack.command("down")
@click.option("--json", "as_json", is_flag=True, help="print what was stopped as JSON")
@click.pass_obj
def stack_down(obj: _Context, as_json: bool) -> None:
    """Stop the services this stack started (by pid file); data stays for the next `up`."""
    from infra import Stack, StackError

    try:
        with _progress(not as_json) as say:
            stopped = Stack(obj.settings).down(progress=say)
    except StackError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        _emit_json({"stopped": stopped})
    else:
        out.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.pass_obj
def stack_status(obj: _Context, as_json: bool) -> None:
    """Each service: state, address, version, pid and detail (e.g. plain PostgreSQL or TimescaleDB).

    Exit code 0 when every service is running and healthy, 3 otherwise.
    """
    from infra import Stack

    st = Stack(obj.settings)
    rows = _with_schema(st.status(), obj.settings)
    missing = missing_home(obj.settings)
    if as_json:
        _emit_json({"home": str(st.home), "home_found": missing is None, "services": [r.to_dict() for r in rows]})
    else:
        out.print(_status_table(rows))
        if missing:
            err.print(f"[yellow]{missing}[/]")
    if any(r.state != "running" for r in rows):
        sys.exit(3)


@stack.command("logs")
@click.argument("service", type=click.Choice(["postgres", "minio", "kafka", "prometheus"]))
@click.option("-n", "--lines", default=50, show_default=True, help="how many of the last lines to show")
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines (Ctrl-C stops)")
@click.pass_obj
def stack_logs(obj: _Context, service: str, lines: int, follow: bool) -> None:
    """Print the end of a service's log file (under <state>/logs/)."""
    from infra import Stack

    svc = Stack(obj.settings).service(service)
    for line in svc.tail_log(lines):
        click.echo(line)
    if not follow:
        return
    path = svc.log_path
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        try:
            while True:
                chunk = fh.readline()
                if chunk:
                    click.echo(chunk.decode(errors="replace").rstrip("\n"))
                else:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            pass


# -- db ------------------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """The PostgreSQL/TimescaleDB schema (tables readings, statements, blobs, batches, ...).

    The flavour is chosen at the first migration: TimescaleDB hypertables when the
    extension is available, native range partitioning otherwise, with the same table and
    view names. `sealstream stack up` migrates too.
    """


@db.command("migrate")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_obj
def db_migrate(obj: _Context, as_json: bool) -> None:
    """Apply pending migrations (safe to run from many workers at once)."""
    from storage import StorageError, migrate

    try:
        report = migrate(obj.settings.postgres_dsn)
    except StorageError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        _emit_json({"flavour": report.flavour, "applied": list(report.applied), "version": report.version})
    elif report.applied:
        out.print(f"applied {', '.join(report.applied)}; schema v{report.version} ({report.flavour})")
    else:
        out.print(f"schema v{report.version} ({report.flavour}) is up to date")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.pass_obj
def db_status(obj: _Context, as_json: bool) -> None:
    """Schema flavour, version and pending migrations. Exit 3 when migrations are pending."""
    from storage import StorageError, storage_status

    try:
        st = storage_status(obj.settings.postgres_dsn)
    except StorageError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        _emit_json({"flavour": st.flavour, "version": st.version, "latest": st.latest,
                    "pending": list(st.pending)})
    else:
        out.print(f"flavour {st.flavour or 'not migrated'}; schema v{st.version} of {st.latest}; "
                  f"pending: {', '.join(st.pending) or 'none'}")
    if st.pending:
        sys.exit(3)


from ._ledger_cli import ledger  # noqa: E402
cli.add_command(ledger)
from ._demo_cli import demo  # noqa: E402
cli.add_command(demo)
from ._devices_cli import devices  # noqa: E402
cli.add_command(devices)
from ._pipeline_cli import pipeline  # noqa: E402
cli.add_command(pipeline)
from ._alerts_cli import alerts_bridge  # noqa: E402
pipeline.add_command(alerts_bridge)
from ._dashboards_cli import dashboards  # noqa: E402
cli.add_command(dashboards)
from ._verify_cli import evidence, export, pipeline_verifier, verify  # noqa: E402
cli.add_command(verify)
cli.add_command(evidence)
cli.add_command(export)
pipeline.add_command(pipeline_verifier)
from ._edge_cli import edge  # noqa: E402
cli.add_command(edge)
from ._data_cli import data  # noqa: E402
cli.add_command(data)


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.pass_obj
def status_cmd(obj: _Context, as_json: bool) -> None:
    """Everything at a glance: the stack's services (with the schema flavour) and the ledger's nodes.

    Exit code 0 when every service and every initialised ledger node runs, 3 otherwise.
    """
    from infra import Stack

    from ._ledger_cli import _cluster, _rows, _table

    services = _with_schema(Stack(obj.settings).status(), obj.settings)
    cluster = _cluster(obj.settings)
    nodes = _rows(cluster) if cluster.layout.exists() else []
    missing = missing_home(obj.settings)
    if as_json:
        _emit_json({"home": str(obj.settings.home.resolve()), "home_found": missing is None,
                    "services": [r.to_dict() for r in services], "ledger": nodes})
    else:
        out.print(_status_table(services))
        out.print(_table(nodes) if nodes else "ledger: not initialised (sealstream ledger up)")
        if missing:
            err.print(f"[yellow]{missing}[/]")
    if any(r.state != "running" for r in services) or any(n["state"] != "running" for n in nodes):
        sys.exit(3)


def main() -> None:
    from ._security import SecretError

    try:
        cli(prog_name="sealstream")
    except SecretError as exc:  # a secret no one gave nor generated: one sentence naming the fix, never a value
        fail({"error": "SecretError", "message": str(exc)}, "--json" in sys.argv)


if __name__ == "__main__":
    main()
