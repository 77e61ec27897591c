"""`LedgerBenchTarget`: our cluster behind the benchmark's target interface (`bench/_target.py`).

`start(n_nodes, n_sealers)` initialises a fresh `LocalCluster` running the
key/value app (``app="kv"``, not the default contracts) in a temporary
directory and waits until every node is ready; `asubmit(tx)` / `submit(tx)`
wrap the load generator's opaque ``key=value`` bytes as a signed ``kv.put``
transaction and return once f+1 sealers replied with matching signed results
(raising on refusal or timeout); `stop()` stops every node and removes the
directory. ``tls`` (default True: links bound to the genesis keys, clients over TLS on their
own port) False runs the previous plaintext transport, the comparison `bench/ledger.py` prints.

All transactions write the one key ``bench`` (the value is the whole payload):
`KVExecutor` hashes its whole map into each block's state root, so unique keys
would make a long run measure a growing state rather than consensus.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ledger.values import Params
from ledger.client import AsyncLedgerClient, LedgerClient
from infra.ledger_cluster import LocalCluster
from ledger.layout import LedgerLayout

__all__ = ["LedgerBenchTarget", "BENCH_PARAMS", "process_cpu_s"]

#: Consensus parameters for benchmarks: large blocks, short block time.
BENCH_PARAMS = Params(max_block_txs=512, block_time_ms=10, checkpoint_interval=50, view_change_timeout_ms=2000)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (/proc; OSError if it is gone)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LedgerBenchTarget:
    """A local cluster for `bench/ledger.py` (factory: no arguments)."""

    name = "sealstream"

    def __init__(self, params: Params = BENCH_PARAMS, timeout: float = 30.0, tls: bool = True) -> None:
        self.params = params
        self.tls = tls
        self.timeout = timeout
        self.cluster: LocalCluster | None = None
        self._dir: Path | None = None
        self._sync: LedgerClient | None = None
        self._async: dict[int, AsyncLedgerClient] = {}

    _dir_prefix = "sealstream-bench-"

    def start(self, n_nodes: int, n_sealers: int) -> None:
        self.stop()
        self._dir = Path(tempfile.mkdtemp(prefix=self._dir_prefix))
        self.cluster = LocalCluster(self._dir, n_nodes=n_nodes, n_sealers=n_sealers, params=self.params,
                                    log_level="WARNING", app="kv", tls=self.tls)
        try:
            self._launch(self.cluster.init())
        except BaseException:
            self.stop()
            raise

    def _launch(self, layout: LedgerLayout) -> None:
        """Start the processes of the freshly initialised state directory: our nodes."""
        assert self.cluster is not None
        self.cluster.start(timeout=60)

    @staticmethod
    def _payload(tx: bytes) -> dict[str, Any]:
        return {"key": "bench", "value": tx.decode("ascii", "replace")}

    def _aclient(self) -> AsyncLedgerClient:
        assert self.cluster is not None, "start() first"
        loop = id(asyncio.get_running_loop())
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = self.cluster.aclient(timeout=self.timeout)
        return client

    async def asubmit(self, tx: bytes) -> None:
        await self._aclient().submit("kv.put", self._payload(tx))

    async def aclose(self) -> None:
        client = self._async.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.close()

    def submit(self, tx: bytes) -> None:
        if self._sync is None:
            assert self.cluster is not None, "start() first"
            self._sync = self.cluster.client(timeout=self.timeout)
        self._sync.submit("kv.put", self._payload(tx))

    def node_cpu(self) -> dict[str, dict[str, Any]]:
        """Per node: ``role`` (sealer/backup), ``cpu_s`` (user+system CPU of its process, from /proc)
        and ``committed_tx``; `bench/ledger.py` turns two samples into CPU µs per committed tx."""
        assert self.cluster is not None, "start() first"
        out: dict[str, dict[str, Any]] = {}
        for name in self.cluster.names:
            pid, st = self.cluster.pid(name), self.cluster.status(name)
            if pid is None or st is None:
                continue
            out[name] = {"role": "sealer" if st["is_sealer"] else "backup",
                         "cpu_s": process_cpu_s(pid), "committed_tx": st["committed_tx"]}
        return out

    def stop(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        self._async.clear()
        if self.cluster is not None:
            self.cluster.stop(timeout=10)
            self.cluster = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
