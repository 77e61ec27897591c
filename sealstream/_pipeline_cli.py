"""``sealstream pipeline ...``: the pipeline worker (ingest -> store -> seal).

Exit codes: 0 on a clean stop (SIGTERM/Ctrl-C), 1 on a start-up error (one
sentence naming the fix).
"""

from __future__ import annotations

import click

from ._output import fail
from .settings import Settings, load_settings

__all__ = ["pipeline"]


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.obj
    return obj.settings if obj is not None and hasattr(obj, "settings") else load_settings()


@click.group()
def pipeline() -> None:
    """The pipeline worker: verify, store and seal device telemetry from Kafka.

    \b
    sealstream pipeline worker                                   devices resolved on the ledger
    sealstream pipeline worker --directory manifest --factory plant-a   demo/tests: no ledger

    Any number of workers share the consumer group $SEALSTREAM_PIPELINE_APP_ID.
    Rejected records go to iiot.deadletter (original bytes + ss-dlq-reason);
    stored ones are sealed to iiot.sealed. Metrics on /metrics
    ($SEALSTREAM_PIPELINE_METRICS_PORT). See docs/pipeline.md.
    """


@pipeline.command("worker")
@click.option("--app-id", default=None, help="Faust app id = consumer group [SEALSTREAM_PIPELINE_APP_ID]")
@click.option("--directory", type=click.Choice(["ledger", "manifest"]), default=None,
              help="where device keys come from [SEALSTREAM_PIPELINE_DIRECTORY; default ledger]")
@click.option("--factory", "factories", multiple=True,
              help="with --directory manifest: a simulator factory whose devices.json to trust (repeatable)")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="/metrics port, 0 = none [SEALSTREAM_PIPELINE_METRICS_PORT]")
@click.option("--offset-reset", type=click.Choice(["earliest", "latest"]), default=None,
              help="where a new consumer group starts [SEALSTREAM_PIPELINE_OFFSET_RESET]")
@click.option("--loglevel", type=click.Choice(["crit", "error", "warn", "info", "debug"]), default="warn",
              show_default=True, help="Faust's log level")
@click.option("--anchor/--no-anchor", default=True, show_default=True,
              help="also anchor sealed statements on the ledger (needs `sealstream ledger up` and a registered "
                   "gateway: `sealstream pipeline register-gateway`)")
@click.option("--anchor-only", is_flag=True,
              help="run only the anchor agent (in its own consumer group, beside --no-anchor workers)")
@click.pass_context
def pipeline_worker(ctx: click.Context, app_id: str | None, directory: str | None, factories: tuple[str, ...],
                    metrics_port: int | None, offset_reset: str | None, loglevel: str, anchor: bool,
                    anchor_only: bool) -> None:
    """Run one worker until stopped (SIGTERM or Ctrl-C).

    \b
    Ingest -> store -> seal, and (unless --no-anchor) the anchor agent: windows of
    iiot.sealed (SEALSTREAM_PIPELINE_ANCHOR_MAX_LEAVES / _WINDOW_S) become RFC 9162
    batches anchored on the ledger with the gateway key, reported on iiot.anchors.

    \b
    Under load, run the anchor agent in its own process so it does not share
    the ingest agents' event loop (docs/pipeline.md, "Anchoring in its own process"):
      sealstream pipeline worker --no-anchor
      sealstream pipeline worker --anchor-only --app-id sealstream-anchor --metrics-port 9411
    """
    from pipelines.app import make_directory, run_worker
    from pipelines.devices import FactoryError

    s = _settings(ctx)
    if anchor_only and not anchor:
        fail({"error": "usage", "message": "--anchor-only and --no-anchor exclude each other"}, False)
    d = None
    if not anchor_only:
        try:
            d = make_directory(s, directory or ("manifest" if factories else None), factories)
        except (ValueError, FactoryError, OSError) as exc:
            fail({"error": type(exc).__name__, "message": str(exc)}, False)
    run_worker(s, d, app_id=app_id, metrics_port=metrics_port, offset_reset=offset_reset, loglevel=loglevel,
               anchor=anchor, ingest=not anchor_only)


@pipeline.command("register-gateway")
@click.option("--gateway", default=None, help="gateway id = key name [SEALSTREAM_PIPELINE_GATEWAY]")
@click.option("--org", default="operator", show_default=True, help="the org the gateway belongs to")
@click.option("--fund", type=click.IntRange(1), default=1_000_000, show_default=True,
              help="top the gateway's token balance up to this when it is below half of it")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_context
def pipeline_register_gateway(ctx: click.Context, gateway: str | None, org: str, fund: int, as_json: bool) -> None:
    """Register this worker's gateway key on the local ledger and fund it (idempotent).

    \b
    sealstream pipeline register-gateway                     gateway $SEALSTREAM_PIPELINE_GATEWAY
    sealstream pipeline register-gateway --gateway gw-2 --json

    Signs with the ledger's consortium admin key (<ledger home>/keys/admin.key), which
    on a `sealstream ledger init` ledger also administers the org "operator". Each
    ANCHOR costs the gateway tokens (docs/contracts.md); the admin mints them.
    """
    from pathlib import Path

    from ledger.client import LedgerClient
    from ledger.layout import LedgerLayout
    from pipelines._anchor_ledger import GatewayError, ensure_gateway
    from pipelines.worker import gateway_key

    from ._output import emit_json, out

    s = _settings(ctx)
    name = gateway or s.pipeline_gateway
    layout = LedgerLayout(s.ledger_home)
    if not layout.exists():
        fail({"error": "no-ledger", "message": f"no ledger in {s.ledger_home}: run `sealstream ledger up` first"},
             as_json)
    try:
        did = gateway_key(Path(s.home), name).did
        with LedgerClient.from_layout(s.ledger_home, key=layout.admin_key()) as admin:
            reg = ensure_gateway(admin, name, did, org=org, fund=fund)
    except GatewayError as exc:
        fail({"error": exc.code, "message": str(exc)}, as_json)
        return
    except Exception as exc:  # noqa: BLE001 - layout missing, ledger down: one sentence for the operator
        fail({"error": type(exc).__name__, "message": str(exc)}, as_json)
        return
    if as_json:
        emit_json(reg.to_json())
        return
    out.print(f"gateway {reg.gateway} ({reg.did}) in org {reg.org}: "
        f"{'registered now' if reg.registered_now else 'already registered'}; "
        f"minted {reg.minted}, balance {reg.balance}", highlight=False)
