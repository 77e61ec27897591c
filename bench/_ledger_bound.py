"""The no-consensus bound: our client against responders that only verify and reply.

`bench/ledger.py` compares our 4-node ledger with this machine's *ceiling*
(Ed25519 verifications/s on all cores / the sealers verifying each tx). That
ceiling charges nothing for the rest of the work on the machine: the load
generator and client library, the transport, decoding and replying. This
target measures what is left when consensus, execution and storage cost
nothing, on the same machine and in the same run:

* `start(n_nodes, n_sealers)` writes a real ledger state directory (keys,
  genesis, addresses; `LocalCluster.init`) and starts one *responder* process
  per sealer on the sealer's port, and nothing for backups;
* a responder (``python -m bench._ledger_bound --root DIR --node NAME``) uses
  the node's own `Transport`, decodes each client frame with the node's
  decoder, verifies every transaction's Ed25519 signature with the node's
  `CachedVerifier` (once per responder, so each tx is verified by every
  sealer, as the ceiling assumes), and answers at once with one signed
  `TxReplies` frame: a fixed receipt ``{height: 1, index: 0, block: 0*32,
  result: None}`` (the same from every responder, so f+1 match), or
  ``{"error": "bad-signature"}``;
* `asubmit` is `LedgerBenchTarget.asubmit`: the same `AsyncLedgerClient`
  signs, sends to every sealer and waits for f+1 matching signed replies.

So its tx/s bounds any consensus protocol run by these processes with this
client on this machine; `bench/ledger.py` prints it beside the ceiling and
our ratio to it. It is a benchmark baseline, not a ledger: nothing is
ordered, stored or refused as a replay.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ledger._verify import CachedVerifier
from bench._ledger_target import BENCH_PARAMS, LedgerBenchTarget, process_cpu_s
from ledger.errors import WireError
from ledger.layout import LedgerLayout
from ledger.messages import ClientRequests, Request, decode_message
from ledger.replies import TxReplies
from ledger.transport import Connection, Transport

__all__ = ["BoundTarget", "RECEIPT"]

#: the answer every responder gives a well-signed tx (a commit receipt in form only)
RECEIPT = {"height": 1, "index": 0, "block": bytes(32), "result": None}
_REFUSED = {"error": "bad-signature"}
_REPO = Path(__file__).resolve().parents[1]


class BoundTarget(LedgerBenchTarget):
    """Responders on the sealers' ports; the client and load path of `LedgerBenchTarget`."""

    name = "no-consensus bound"

    def __init__(self) -> None:
        super().__init__(BENCH_PARAMS)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.answered = 0

    _dir_prefix = "sealstream-bound-"

    def _launch(self, layout: LedgerLayout) -> None:
        """A responder per sealer instead of our nodes."""
        sealers = set(layout.genesis().sealers.members)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for a in layout.addresses():
            if layout.node_key(a.name).did in sealers:
                argv = [sys.executable, "-m", "bench._ledger_bound", "--root", str(layout.root), "--node", a.name]
                self._procs[a.name] = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                                       start_new_session=True)
                _wait_port(a.host, a.client_port or a.p2p_port, self._procs[a.name], timeout=30)

    async def asubmit(self, tx: bytes) -> None:
        await super().asubmit(tx)
        self.answered += 1

    def node_cpu(self) -> dict[str, dict[str, Any]]:
        """Per responder: its process CPU (/proc) and, as ``committed_tx``, the txs answered so far
        (every responder answers every tx), so `bench/ledger.py` prints CPU per tx as for our nodes."""
        out: dict[str, dict[str, Any]] = {}
        for name, proc in self._procs.items():
            try:
                out[name] = {"role": "sealer", "cpu_s": process_cpu_s(proc.pid), "committed_tx": self.answered}
            except OSError:
                continue
        return out

    def stop(self) -> None:
        """Stop the responders, then what `LedgerBenchTarget.stop` cleans up (clients, directory)."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs.clear()
        super().stop()


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"responder on port {port} exited with {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"responder on port {port} not listening after {timeout:g} s")


class Responder:
    """Decode, verify, reply: a sealer's client-facing work with nothing behind it."""

    def __init__(self, layout: LedgerLayout, name: str) -> None:
        genesis = layout.genesis()
        self.chain_id = genesis.chain_id
        self.key = layout.node_key(name)
        self.nodes = frozenset(genesis.node_ids())
        self.verify = CachedVerifier()
        self.malformed = 0
        a = layout.address(name)
        # the node's transport as the node runs it: with TLS, clients on their own port over TLS
        tls = layout.node_tls(name, self.key) if layout.tls else None
        self.transport = Transport(chain_id=self.chain_id, node_id=self.key.did, host=a.host, port=a.p2p_port,
                                   peers=[], on_frame=self.on_frame, tls=tls,
                                   client_port=a.client_port if tls else None)

    def on_frame(self, conn: Connection, frame: bytes) -> None:
        try:
            msg = decode_message(frame)
        except WireError:
            self.malformed += 1
            return
        if isinstance(msg, ClientRequests):
            txs = msg.txs
        elif isinstance(msg, Request):
            txs = (msg.tx,)
        else:
            return
        if msg.sender in self.nodes:
            return
        items = [(tx.tx_id, RECEIPT if tx.submitter == msg.sender and tx.verify_signature(self.verify) else _REFUSED)
                 for tx in txs]
        conn.send(TxReplies.of(self.key.did, items).sign(self.chain_id, self.key.sign).encode())


async def _serve(root: Path, name: str) -> None:
    responder = Responder(LedgerLayout(root), name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await responder.transport.start()
    try:
        await stop.wait()
    finally:
        await responder.transport.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench._ledger_bound",
                                 description="Run one no-consensus responder (see the module doc).")
    ap.add_argument("--root", required=True, type=Path, help="ledger state directory written by LocalCluster.init")
    ap.add_argument("--node", required=True, help="the sealer whose key and port to use, e.g. node0")
    args = ap.parse_args(argv)
    asyncio.run(_serve(args.root, args.node))
    return 0


if __name__ == "__main__":
    sys.exit(main())
