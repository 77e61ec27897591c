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
@click.pass_context
def pipeline_worker(ctx: click.Context, app_id: str | None, directory: str | None, factories: tuple[str, ...],
                    metrics_port: int | None, offset_reset: str | None, loglevel: str) -> None:
    """Run one worker until stopped (SIGTERM or Ctrl-C)."""
    from pipelines.app import make_directory, run_worker
    from pipelines.devices import FactoryError

    s = _settings(ctx)
    try:
        d = make_directory(s, directory or ("manifest" if factories else None), factories)
    except (ValueError, FactoryError, OSError) as exc:
        fail({"error": type(exc).__name__, "message": str(exc)}, False)
    run_worker(s, d, app_id=app_id, metrics_port=metrics_port, offset_reset=offset_reset, loglevel=loglevel)
