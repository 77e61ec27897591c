"""``sealstream pipeline alerts-bridge``: publish the ledger's audit events to Kafka ``iiot.alerts``.

Registered on the ``pipeline`` group by `sealstream.cli`. Exit codes: 0 on a
clean stop (SIGTERM/Ctrl-C, or ``--max-events`` reached), 1 on an error (one
sentence naming the fix).
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import click

from ._output import emit_json, fail
from ._output import settings_of as _settings
from ._output import out as _out
from sealstream.topics import ALERTS

__all__ = ["alerts_bridge"]



@click.command("alerts-bridge")
@click.option("--ledger", "ledger_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="ledger state directory (default: $SEALSTREAM_HOME/ledger)")
@click.option("--topic", default=ALERTS, show_default=True, help="Kafka topic to publish to")
@click.option("--from-height", type=click.IntRange(min=0), default=0, show_default=True,
              help="first start only (nothing of this chain in the topic yet): skip events below this height")
@click.option("--verify", is_flag=True,
              help="prove each event against light-client-verified headers before publishing it")
@click.option("--max-events", type=click.IntRange(min=1), default=None, help="stop after publishing this many")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="serve /metrics on this port (0 = none)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON line per published alert, then a summary")
@click.pass_context
def alerts_bridge(ctx: click.Context, ledger_dir: Path | None, topic: str, from_height: int, verify: bool,
                  max_events: int | None, metrics_port: int, as_json: bool) -> None:
    """Follow the ledger's audit events and publish each one to Kafka exactly once.

    \b
    Examples:
      sealstream pipeline alerts-bridge                       follow $SEALSTREAM_HOME/ledger until stopped
      sealstream pipeline alerts-bridge --verify --json       prove each event first; JSON lines
      sealstream pipeline alerts-bridge --max-events 10       publish 10 alerts, then exit

    One message per event: key = the operation's org, value = the event as
    JSON, headers ss-chain, ss-event-seq, ss-event-id, ss-rule, ss-severity.
    A restart resumes after the last event of this chain committed to the
    topic (Kafka transactions; a restarted bridge fences the previous one),
    so nothing is lost or published twice. See docs/contracts.md.
    """
    from ledger.client import AsyncLedgerClient
    from ledger.errors import LedgerError
    from pipelines.alerts import AlertsBridge, AlertsBridgeError
    from sealstream._kafka_config import kafka_endpoint

    s = _settings(ctx)
    root = ledger_dir or s.ledger_home

    def printed(batch: list[Any]) -> None:
        for ev in batch:
            if as_json:
                click.echo(json.dumps({"published": ev.to_json()}))
            else:
                _out.print(f"alert {ev.id} seq {ev.seq} [{ev.severity}] rule {ev.rule} v{ev.version} "
                           f"org {ev.org}: {ev.message}", highlight=False)

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with AsyncLedgerClient.from_layout(root) as client:
            bridge = AlertsBridge(client, kafka_endpoint(s, "alerts"), topic, from_height=from_height,
                                  verify=verify, on_publish=printed)
            if metrics_port:
                from prometheus_client import start_http_server

                start_http_server(metrics_port, addr=s.host, registry=bridge.metrics.registry)
            return await bridge.run(stop, max_events)

    try:
        st = asyncio.run(main())
    except (AlertsBridgeError, LedgerError, OSError) as exc:
        fail({"error": type(exc).__name__, "message": f"{exc}; is the ledger up (`sealstream ledger status`) "
                                                      "and Kafka (`sealstream stack status`)?"}, as_json)
    summary = {"topic": topic, "resumed_after_seq": st.resumed_after, "published": st.published,
               "last_seq": st.last_seq, "last_height": st.last_height}
    if as_json:
        emit_json(summary)
    else:
        _out.print(f"published {st.published} alerts to {topic} (resumed after seq {st.resumed_after}, "
                   f"last seq {st.last_seq})")
