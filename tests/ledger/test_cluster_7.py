"""A real 7-node cluster (4 sealers + 3 backups) over TCP: a backup and a sealer
SIGKILLed mid-load and restarted later catch up with identical block hashes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cluster_checks import assert_same_chain, metric, wait_converged
from cluster_load import Load
from infra.ledger_cluster import LocalCluster

pytestmark = pytest.mark.timeout(180)


def test_seven_nodes_backup_and_sealer_killed_mid_load(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster(7, 4)
    names = c.names
    st = c.status("node0")
    assert st is not None and st["sealers"] == ["node0", "node1", "node2", "node3"]
    primary = st["primary"]
    sealer = next(n for n in st["sealers"] if n != primary)
    backup = "node5"
    assert c.status(backup)["role"] == "backup"  # type: ignore[index]

    with Load(c, clients=10) as load:
        load.wait_for(150)
        c.kill(backup)
        c.kill(sealer)
        n = len(load.receipts)
        load.wait_for(n + 300, timeout=60)  # 3 of 4 sealers are a quorum
        c.start([backup, sealer])  # restart while the load goes on
        n = len(load.receipts)
        load.wait_for(n + 200, timeout=60)
    assert not load.errors, load.errors
    assert len({r.tx_id for r in load.receipts}) == len(load.receipts)

    h = wait_converged(c, names, timeout=60)
    assert_same_chain(c, names, h)
    for n in (backup, sealer):
        assert metric(c, n, "sealstream_ledger_height", node=n) == h
    assert metric(c, backup, "sealstream_ledger_is_sealer", node=backup) == 0
    assert metric(c, sealer, "sealstream_ledger_is_sealer", node=sealer) == 1
    # backups serve reads: a committed tx with its proof from a backup
    r = load.receipts[-1]
    with c.client() as cl:
        rec, header = cl.verified_tx(r.tx_id, node=backup)
    assert header.header_hash() == r.block_hash
