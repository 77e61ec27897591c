"""Block store: append-only SQLite (WAL, synchronous=FULL), reopen and replay after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger import Replica, StoreError
from ledger.messages import CheckpointCertificate
from ledger.store import BlockStore
from ledger.light_client import verify_chain
from ledger_helpers import make_chain
from trust import canonical

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def chain():
    return make_chain(120, txs_per_block=40)


def test_append_read_reopen(tmp_path, chain):
    genesis, blocks, keys = chain
    path = tmp_path / "node.db"
    with BlockStore.open(path, genesis) as st:
        for b, c, r in blocks[:10]:
            st.append(b, c, r)
        st.put_checkpoint(CheckpointCertificate(10, blocks[9][0].block_hash(), ((keys[0].did, b"x" * 64),)))
        assert st.height == 10
        with pytest.raises(StoreError):
            st.append(*blocks[11][:2])  # gap
        with pytest.raises(StoreError):
            st.append(*blocks[5][:2])  # already there
    with BlockStore.open(path, genesis) as st:
        assert st.height == 10 and st.tip == blocks[9][0].block_hash()
        assert st.get(3)[0] == blocks[2][0] and st.get(3)[1] == blocks[2][1]
        assert st.results(3) == list(blocks[2][2])
        tx = blocks[4][0].txs[7]
        assert st.find_tx(tx.tx_id) == (5, 7)
        assert st.last_checkpoint().height == 10
        verify_chain(genesis, st.headers(1, 10))
        # a replica replays the stored chain
        rep = Replica(genesis, keys[1].did, keys[1].sign, committed=st.blocks(), archive=st)
        assert rep.height == 10 and rep.last_hash == st.tip
        assert rep.block_at(1)[0] == blocks[0][0]


def test_tx_index_is_derived_lazily(tmp_path, chain):
    """`append` writes no index rows; `find_tx` indexes what was appended since, and survives reopening."""
    genesis, blocks, _ = chain
    path = tmp_path / "lazy.db"
    with BlockStore.open(path, genesis) as st:
        for b, c, r in blocks[:10]:
            st.append(b, c, r)
        assert st._db.execute("SELECT COUNT(*) FROM txs").fetchone()[0] == 0
        assert st.find_tx(blocks[9][0].txs[3].tx_id) == (10, 3)
        assert st.find_tx(b"\x00" * 32) is None
        for b, c, r in blocks[10:15]:
            st.append(b, c, r)
        assert st.find_tx(blocks[14][0].txs[39].tx_id) == (15, 39)
        assert st.find_tx(blocks[0][0].txs[0].tx_id) == (1, 0)
    with BlockStore.open(path, genesis) as st:
        assert st._indexed == 15
        for b, c, r in blocks[15:17]:
            st.append(b, c, r)
        assert st.find_tx(blocks[16][0].txs[5].tx_id) == (17, 5)
        assert st._db.execute("SELECT COUNT(*) FROM txs").fetchone()[0] == 17 * 40


def test_store_from_before_the_lazy_index_opens(tmp_path, chain):
    """A store written when `append` indexed every tx (no `tx_ids` column) keeps answering and appending."""
    genesis, blocks, _ = chain
    path = tmp_path / "legacy.db"
    with BlockStore.open(path, genesis) as st:
        for b, c, r in blocks[:5]:
            st.append(b, c, r)
        st.find_tx(blocks[0][0].txs[0].tx_id)  # fills `txs` as the old append did
        st._db.execute("DELETE FROM meta WHERE key='txs_indexed'")
        st._db.execute("ALTER TABLE blocks DROP COLUMN tx_ids")
    with BlockStore.open(path, genesis) as st:
        assert st._indexed == 5
        assert st.find_tx(blocks[4][0].txs[1].tx_id) == (5, 1)
        st.append(*blocks[5])
        assert st.find_tx(blocks[5][0].txs[2].tx_id) == (6, 2)


def test_other_genesis_refused(tmp_path, chain):
    genesis, blocks, _ = chain
    other, _, _ = make_chain(1, seed="other")
    BlockStore.open(tmp_path / "a.db", genesis).close()
    with pytest.raises(StoreError):
        BlockStore.open(tmp_path / "a.db", other)


def test_wal_and_full_sync(tmp_path, chain):
    genesis, _, _ = chain
    st = BlockStore.open(tmp_path / "a.db", genesis)
    assert st._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert st._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    st.close()


_CHILD = """
import sys
sys.path[:0] = [{root!r}, {here!r}]
from trust import canonical
from ledger import Block, CommitCertificate, Genesis
from ledger.store import BlockStore
data = canonical.decode(open({src!r}, 'rb').read())
genesis = Genesis.from_wire(data['genesis'])
st = BlockStore.open({db!r}, genesis)
print('ready', st.height, flush=True)
for bw, cw, rw in data['blocks'][st.height:]:
    st.append(Block.from_wire(bw), CommitCertificate.from_wire(cw), tuple(rw))
    print('appended', st.height, flush=True)
print('done', flush=True)
"""


def test_sigkill_mid_append_leaves_a_consistent_store(tmp_path, chain):
    genesis, blocks, _ = chain
    src = tmp_path / "chain.bin"
    src.write_bytes(canonical.encode({
        "genesis": genesis.to_wire(),
        "blocks": [[b.to_wire(), c.to_wire(), list(r)] for b, c, r in blocks],
    }))
    db = tmp_path / "node.db"
    code = _CHILD.format(root=str(ROOT), here=str(HERE), src=str(src), db=str(db))
    acked = 0
    kills = 0
    for round_ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        assert line.startswith("ready"), line
        start_height = int(line.split()[1])
        assert start_height >= acked  # what was acknowledged survived the previous kill
        if start_height == len(blocks):
            proc.wait()
            break
        time.sleep(0.02 + 0.01 * round_)
        os.kill(proc.pid, signal.SIGKILL)
        kills += 1
        out = proc.stdout.read()
        proc.wait()
        done = out.split("\n")[:-1]  # the kill may cut the last line: only whole lines acknowledge
        heights = [int(ln.split()[1]) for ln in done if ln.startswith("appended")]
        acked = max([acked, start_height] + heights)
        # reopen: the chain links, every block is whole, the tx index matches
        with BlockStore.open(db, genesis) as st:
            assert st.height >= acked
            lc = verify_chain(genesis, st.headers(1, st.height))
            assert lc.height == st.height
            for h in range(1, st.height + 1):
                b, c = st.get(h)
                assert b == blocks[h - 1][0] and b.tx_root_ok()
            if st.height:
                last = blocks[st.height - 1][0].txs[-1]
                assert st.find_tx(last.tx_id) == (st.height, len(blocks[st.height - 1][0].txs) - 1)
            n_tx = st._db.execute("SELECT COUNT(*) FROM txs").fetchone()[0]
            assert n_tx == sum(len(blocks[h][0].txs) for h in range(st.height))
    assert kills >= 1
    # a final run completes the chain on top of whatever survived
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().endswith("done")
    with BlockStore.open(db, genesis) as st:
        assert st.height == len(blocks) and st.tip == blocks[-1][0].block_hash()
