"""``sealstream demo``: the command line and the printed summary of the demo run
(`sealstream.demo.run_demo`, which does the work). Exit codes: 0 ok, 1 a step
failed (one sentence naming it), 4 the run finished but not everything was
handled/anchored/given a verdict within the drain or verify time, 5 a
verification failed (a batch, the blob or the bundle).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._demo_verify import Verification
from ._output import emit_json, err, fail, out
from ._output import settings_of as _settings
from .demo import DemoError, Summary, run_demo

__all__ = ["demo"]


def _print(summary: Summary) -> None:
    t = Table(title=f"sealstream demo ({summary.devices} devices, {summary.workers} worker(s), "
                    f"{summary.seconds:.0f} s)", show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("messages sent", str(summary.sent))
    t.add_row("accepted (stored + sealed)", str(summary.accepted))
    t.add_row("time-series rows", str(summary.rows))
    t.add_row("blobs (images, video chunks)", str(summary.blobs))
    t.add_row("batches anchored", f"{summary.batches_anchored} ({summary.statements_anchored} statements)")
    for reason, n in sorted(summary.deadletters.items()):
        t.add_row(f"dead letters: {reason}", str(n))
    lat = ("-" if summary.latency_p50_s is None
           else f"p50 {summary.latency_p50_s:.2f} s, p99 {summary.latency_p99_s:.2f} s")
    t.add_row("device -> anchored", lat)
    out.print(t)
    if not summary.complete:
        err.print("[yellow]not everything was handled or anchored within the drain time[/]")
    if summary.verification is not None:
        _print_verification(summary.verification)
    out.print(f"workers and verifier stopped; {summary.left_running}.", highlight=False)


def _mark(ok: bool) -> str:
    return "[green]✓[/]" if ok else "[red]✗[/]"


def _print_check(c: Any, title: str) -> None:
    verdict = {"verified": "[bold green]VERIFIED[/]", "failed": f"[bold red]FAILED[/] at step {c.failed_step}"}.get(
        c.verdict, "[bold red]ERROR[/]")
    out.print(f"  {_mark(c.ok)} {title}: {verdict}" + (f" ({c.detail})" if c.detail and not c.ok else ""),
              highlight=False)
    for cmd in c.commands:
        out.print(f"      $ {cmd}", highlight=False, soft_wrap=True)


def _print_verification(v: Verification) -> None:
    """The verification story: share of verified rows, batch verdicts, one blob, one bundle, with commands."""
    out.print(f"[bold]verification[/] (verifier agent, consumer group {v.verifier_group}; trust anchor: "
              f"the local ledger's genesis {v.genesis_hash[:16]}…)", highlight=False)
    share = "-" if v.verified_share is None else f"{100 * v.verified_share:.1f}%"
    out.print(f"  {_mark(v.rows > 0 and v.verified_rows == v.rows)} verified_readings: {v.verified_rows} of "
              f"{v.rows} rows of this run ({share})", highlight=False)
    b = v.batches
    pending = f", {b['pending']} without a verdict yet" if b["pending"] else ""
    out.print(f"  {_mark(v.complete and not b['failed'])} batch verdicts: {b['verified']} verified, "
              f"{b['failed']} failed{pending}", highlight=False)
    for f in v.failed_batches:
        out.print(f"      {f['batch_id']}: {f['failed_step']}: {f['detail']}", highlight=False)
    if v.blob is not None:
        _print_check(v.blob, f"blob {v.blob.subject[:16]}…")
    if v.bundle is not None:
        size = ""
        if v.bundle.records is not None:
            size = f", {v.bundle.records} record(s), {v.bundle.rows} row(s)"
        _print_check(v.bundle, f"batch {v.bundle.subject} exported and verified offline{size}")


@click.command("demo")
@click.option("--duration", type=click.FloatRange(1, 3600), default=20.0, show_default=True,
              help="seconds the simulated factory sends")
@click.option("--devices", type=click.IntRange(1, 50), default=2, show_default=True, help="devices per kind")
@click.option("--rate", type=click.FloatRange(0.1, 1000), default=2.0, show_default=True,
              help="messages per second per device")
@click.option("--workers", type=click.IntRange(1, 8), default=1, show_default=True,
              help="pipeline workers (one gateway each)")
@click.option("--factory", default="demo", show_default=True, help="simulator factory name")
@click.option("--faults/--no-faults", default=True, show_default=True,
              help="inject each fault once (they end in iiot.deadletter with their reason)")
@click.option("--drain", type=click.FloatRange(1, 600), default=90.0, show_default=True,
              help="most seconds to wait after the run for everything to be stored and anchored")
@click.option("--verify-wait", type=click.FloatRange(1, 600), default=90.0, show_default=True,
              help="most seconds to wait after anchoring for the verifier agent's verdicts")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.pass_context
def demo(ctx: click.Context, duration: float, devices: int, rate: float, workers: int, factory: str,
         faults: bool, drain: float, verify_wait: float, as_json: bool) -> None:
    """Run the whole pipeline for a short while and show what happened.

    \b
    sealstream demo                         20 s, 2 devices per kind, 1 worker
    sealstream demo --duration 60 --devices 4 --workers 2
    sealstream demo --duration 5 --json     the summary as JSON (for scripts)

    Starts the stack and a 4-node ledger if needed, registers the factory's
    devices and the workers' gateways on the ledger, runs the workers and the
    simulated factory, then prints messages sent, accepted, rows, blobs,
    batches anchored, dead letters by reason and the device -> anchored latency
    (p50/p99). The verifier agent runs beside the workers; the summary ends
    with what it proved: this run's rows in verified_readings (share), the
    batch verdicts, one blob verified and one batch bundle exported and
    verified offline, each with the command that does it again. The workers
    and the verifier are stopped; the stack and the ledger keep running.

    Exit 0 ok, 1 a step failed, 4 not everything handled/anchored/verified in
    time, 5 a verification failed.
    """
    s = _settings(ctx)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err,
                        disable=as_json, transient=True)
    task = progress.add_task("starting", total=duration)

    def say(text: str) -> None:
        progress.update(task, description=text)
        if not as_json and not err.is_terminal:
            err.print(f"- {text}", highlight=False)

    def on_tick(elapsed: float, sent: int, counts: dict | None) -> None:
        text = f"sent {sent}"
        if counts:
            text += (f" · stored {counts['accepted']} · anchored {counts['statements_anchored']} "
                     f"in {counts['batches_anchored']} batches")
        progress.update(task, completed=min(elapsed, duration), description=text)

    try:
        with progress:
            summary = run_demo(s, duration=duration, devices=devices, rate=rate, workers=workers, factory=factory,
                               faults=faults, drain=drain, say=say, on_tick=on_tick, verify_wait=verify_wait)
    except DemoError as exc:
        fail({"error": exc.step, "message": str(exc)}, as_json)
        return
    if as_json:
        emit_json(asdict(summary))
    else:
        _print(summary)
    v = summary.verification
    if not summary.complete or v is None or not v.complete:
        sys.exit(4)
    if not v.ok:
        sys.exit(5)
