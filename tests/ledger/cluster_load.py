"""Closed-loop background load against a real cluster, for the cluster tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

from ledger.client import AsyncLedgerClient, Receipt
from infra.ledger_cluster import LocalCluster


class Load:
    """`clients` concurrent submitters in a thread of their own until `stop()`."""

    def __init__(self, cluster: LocalCluster, clients: int = 8, timeout: float = 30.0) -> None:
        self.cluster = cluster
        self.clients = clients
        self.timeout = timeout
        self.receipts: list[Receipt] = []
        self.errors: Counter[str] = Counter()
        self.frames_sent = 0  # request frames the client wrote (all nodes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 10)

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.receipts) < count:
            assert time.monotonic() < deadline, f"only {len(self.receipts)} of {count} commits; errors {self.errors}"
            time.sleep(0.05)

    async def _run(self) -> None:
        layout = self.cluster.layout
        # a contracts ledger orders registered, funded submitters' txs only (admission, issue 16)
        key = layout.admin_key() if layout.app() == "contracts" else None
        client = AsyncLedgerClient.from_layout(self.cluster.root, key=key, timeout=self.timeout)

        async def one(i: int) -> None:
            j = 0
            while not self._stop.is_set():
                try:
                    self.receipts.append(await client.submit("kv.put", {"key": f"c{i}", "value": j}))
                except Exception as exc:  # noqa: BLE001 - counted and asserted on by the tests
                    self.errors[type(exc).__name__] += 1
                j += 1

        try:
            await asyncio.gather(*(one(i) for i in range(self.clients)))
        finally:
            self.frames_sent = client.frames_sent
            await client.close()
