"""Gather the `Evidence` of a blob, a row, a device's time range or a batch
from PostgreSQL, MinIO and the ledger (the only I/O of downstream verification).

Nothing collected is trusted: payloads and manifests are read as raw object
bytes (a tampered object is not refused here but fails ``payload-hash`` /
``manifest`` in `chain.verify`), inclusion proofs are built from the
database's ``batch_leaves`` and checked against the ledger's root, ledger
answers are headers, certificates, tx proofs and state proofs that the pure
chain re-checks from the genesis.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pyarrow as pa
import pyarrow.compute as pc
from minio.error import S3Error

from ledger.client import LedgerClient
from ledger.contracts.anchors import batch_key
from ledger.contracts.confidentiality import erased_key
from ledger.http_api import MAX_PROOF_KEYS
from storage.blobs import BlobStore
from storage.readers import Reader
from storage.records import manifest_key, raw_key
from storage.verification import VerificationStore
from trust import merkle
from trust.hashes import StatementHash
from trust.errors import SubjectError
from trust.statement import ENVELOPE_CONTENT_TYPE
from verify.subject import ROW_TABLES, RowSubject
from verify.subject import parse_row_key as _parse_row_key

from verify.model import AnchorTx, BatchEvidence, Evidence, LedgerEvidence, RecordEvidence, StateValue

__all__ = ["Collector", "CollectError", "ledger_state", "parse_row_key", "ROW_TABLES"]

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
#: longest query string of one `/state/proofs` request (aiohttp's request line limit is 8,190 bytes)
_MAX_QUERY = 6000


class CollectError(Exception):
    """The subject cannot be found (unknown blob, batch, row, bad key): nothing to verify."""


def parse_row_key(table: str, key: str) -> tuple[bytes, Optional[int]]:
    """``(statement hash, row index or None)`` of a `verify row` key (`verify.subject` rule)."""
    try:
        return _parse_row_key(table, key.lower() if isinstance(key, str) else key)
    except SubjectError as exc:
        raise CollectError(str(exc)) from None


@dataclass
class Collector:
    """Evidence from the services; `ledger` is any `LedgerClient` (reads only)."""

    store: VerificationStore
    reader: Reader
    blobs: BlobStore
    ledger: LedgerClient
    progress: Optional[Callable[[str], None]] = None
    fetch_parallel: int = 16  # payload GETs in flight at once


    @classmethod
    def from_settings(cls, settings: Any, ledger: LedgerClient, pool: Any, principal: str = "verifier"
                      ) -> "Collector":
        """On the stack's services; MinIO as `principal` (the verifier's read-only user)."""
        return cls(VerificationStore(pool), Reader(pool), BlobStore.from_settings(settings, principal), ledger)

    def _say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)

    # -- raw objects ---------------------------------------------------------

    def _object(self, key: str) -> Optional[bytes]:
        """The object's bytes as stored (not checked: the chain checks them), None if absent."""
        response = None
        try:
            response = self.blobs.client.get_object(self.blobs.bucket, key)
            return response.read()
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return None
            raise
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def _objects(self, digests: Iterable[bytes]) -> dict[bytes, Optional[bytes]]:
        """The archived payloads of `digests` (None: absent), fetched `fetch_parallel` at a time:
        one GET per payload is most of what collecting a range of small statements costs, and
        each waits on a round trip."""
        todo = sorted(set(digests))
        if len(todo) <= 1 or self.fetch_parallel <= 1:
            return {d: self._object(raw_key(d)) for d in todo}
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(self.fetch_parallel, len(todo)), thread_name_prefix="collect") as ex:
            return dict(zip(todo, ex.map(lambda d: self._object(raw_key(d)), todo)))

    # -- ledger --------------------------------------------------------------

    def _anchor(self, batch_id: str, keys: dict[str, None]) -> Optional[AnchorTx]:
        keys[batch_key(batch_id)] = None
        doc = self.ledger.get_anchor(batch_id)
        if doc is None:
            return None
        rec = self.ledger.get_tx(doc["tx_id"])
        if rec is None:
            return None
        return AnchorTx(batch_id, rec.tx.raw, rec.proof)

    def _ledger(self, anchors: list[AnchorTx], keys: dict[str, None], dids: dict[str, None]) -> LedgerEvidence:
        """The ledger half: every state value (anchor records, and the registry records resolving
        each signer's did) proven at ONE height, at or after every anchor (so it also shows a
        revocation before an anchor), and the certified headers up to it."""
        state: tuple[StateValue, ...] = ()
        top = max([a.proof.height for a in anchors] + [0])
        if keys or dids:
            self._say("state proofs")
            height, proofs = self._state_proofs(tuple(keys), tuple(dids))
            state = tuple(sorted((StateValue(p.key, p.value, height, p.proof) for p in proofs),
                                 key=lambda v: v.key))
            top = max(top, height)
        self._say(f"headers 1..{top}")
        headers = tuple(self.ledger.get_headers(1, top)) if top else ()
        return LedgerEvidence(self.ledger.genesis, headers, tuple(anchors), state)

    def _state_proofs(self, keys: tuple[str, ...], dids: tuple[str, ...]) -> tuple[int, list[Any]]:
        """Every key and did proven at one height: one request when they fit, else chunks, asked
        again (a few times) until every chunk answers at the same height (the chain moved
        between chunks).  A chunk holds at most `MAX_PROOF_KEYS` keys (a did counts 3) and a
        query of at most `_MAX_QUERY` bytes (the node's HTTP server refuses longer request lines)."""
        chunks: list[tuple[list[str], list[str]]] = [([], [])]
        weight = size = 0
        for kind, item in [("key", k) for k in keys] + [("did", d) for d in dids]:
            w, n = (1 if kind == "key" else 3), len(kind) + 2 + len(quote(item, safe=""))
            if (chunks[-1][0] or chunks[-1][1]) and (weight + w > MAX_PROOF_KEYS or size + n > _MAX_QUERY):
                chunks.append(([], []))
                weight = size = 0
            chunks[-1][0 if kind == "key" else 1].append(item)
            weight, size = weight + w, size + n
        heights: list[int] = []
        for _ in range(5):
            answers = [self.ledger.get_state_proofs(tuple(k), tuple(d)) for k, d in chunks]
            heights = sorted({a.height for a in answers})
            if len(heights) == 1:
                return heights[0], [p for a in answers for p in a.proofs]
        raise CollectError(f"the ledger moved while its state was being proven (heights {heights}); "
                           "try again")

    # -- subjects ------------------------------------------------------------

    def evidence(self, subject: dict, hashes: Iterable[bytes], *, rows: Any = None,
                 payload_override: Optional[bytes] = None) -> Evidence:
        """The evidence of the statements `hashes` (and the stored `rows` under test)."""
        # this subject's state keys and signers, local: one collector serves many subjects, also
        # from several threads at once (the verifier agent's batches and its catch-up)
        keys: dict[str, None] = {}
        dids: dict[str, None] = {}
        wanted = list(dict.fromkeys(StatementHash(bytes(h)) for h in hashes))
        self._say(f"{len(wanted)} statement(s)")
        stmts = self.store.statements(wanted)
        members = self.store.memberships(stmts)
        batch_ids = sorted({b for b, _ in members.values()})
        trees: dict[str, Optional[merkle.MerkleTree]] = {}
        batches, anchors = [], []
        for b in batch_ids:
            self._say(f"batch {b}")
            leaves = self.reader.batch_leaves(b)
            trees[b] = merkle.MerkleTree(merkle.leaf_hashes(leaves)) if leaves else None
            batches.append(BatchEvidence(b, self._object(manifest_key(b))))
            a = self._anchor(b, keys)
            if a is not None:
                anchors.append(a)
        records = []
        payloads: dict[bytes, Optional[bytes]] = {}
        if payload_override is None:
            # small time series: their copies beside the statements, in one query (migration 0011),
            # each taken only if it hashes to its digest; the others (and a bad copy) from MinIO
            copies = self.store.payload_copies(stmts)
            payloads = {d: p for d, p in copies.items() if hashlib.sha256(p).digest() == d}
            payloads.update(self._objects({rec.statement.payload_sha256 for rec in stmts.values()} - set(payloads)))
        for h in wanted:
            rec = stmts.get(h)
            if rec is None:
                continue
            st = rec.statement
            dids[st.device] = None
            if st.content_type == ENVELOPE_CONTENT_TYPE:  # was its content erased? (issue 18)
                keys[erased_key(h)] = None
            if rec.receipt is not None:
                dids[rec.receipt.gateway] = None
            payload: Optional[bytes]
            if payload_override is not None:
                payload = payload_override
            else:
                payload = payloads[st.payload_sha256]
            batch_id, leaf = members.get(h, (None, None))
            proof: tuple[bytes, ...] = ()
            tree = trees.get(batch_id) if batch_id else None
            if tree is not None and leaf is not None and leaf < tree.size:
                proof = tuple(tree.inclusion_proof(leaf, tree.size))
            records.append(RecordEvidence(st.to_bytes(), rec.signature,
                                          None if rec.receipt is None else rec.receipt.to_bytes(),
                                          payload, batch_id, leaf, proof))
        return Evidence(subject, self._ledger(anchors, keys, dids), tuple(batches), tuple(records), rows)

    def blob(self, target: str) -> Evidence:
        """A blob by SHA-256, object key ``raw/<sha256>``, or a local file (its bytes are the payload)."""
        override = None
        path = Path(target)
        if _HEX64.match(target):
            digest = bytes.fromhex(target)
        elif target.startswith("raw/") and _HEX64.match(target[4:]):
            digest = bytes.fromhex(target[4:])
        elif path.is_file():
            override = path.read_bytes()
            digest = hashlib.sha256(override).digest()
        else:
            raise CollectError(f"{target!r} is neither a SHA-256, a raw/<sha256> key nor a readable file")
        hashes = self.store.statements_by_payload(digest)
        if not hashes:
            raise CollectError(f"no stored statement has payload sha256 {digest.hex()}")
        subject = {"kind": "blob", "sha256": digest.hex()}
        return self.evidence(subject, hashes, payload_override=override)

    def row(self, table: str, key: str) -> Evidence:
        """One row: a reading ``HASH:ROW`` (its values against the signed payload), a blob or a statement."""
        h, index = parse_row_key(table, key)
        subject = RowSubject(table, h, index).to_json()
        if not self.store.statements([h]):
            raise CollectError(f"no stored statement {h.hex()}")
        if table == "readings":
            assert index is not None  # a readings key has its row index
            return self.evidence(subject, [h], rows=self.store.row(h, index))
        return self.evidence(subject, [h])

    def range(self, device: str, start: datetime, end: datetime) -> Evidence:
        """Every stored reading of `device` in ``[start, end)`` and every statement of it in that
        window or owning one of those rows; each signed row in the window must be stored."""
        from concurrent.futures import ThreadPoolExecutor

        self._say("readings")
        subject = {"kind": "range", "device": device, "from": start.isoformat(), "to": end.isoformat()}
        hashes = list(self.store.device_statements(device, start, end))
        with ThreadPoolExecutor(1) as ex:  # the rows stream in while the rest is collected
            pending = ex.submit(self.store.range_rows, device, start, end)
            ev = self.evidence(subject, hashes)
            rows = pending.result()
        if rows.num_rows:
            col = rows.column("statement_hash").combine_chunks()
            owners = (col.dictionary if pa.types.is_dictionary(col.type) else pc.unique(col)).to_pylist()
            if set(map(bytes, owners)) - set(map(bytes, hashes)):
                return self.evidence(subject, hashes + owners, rows=rows)
        return replace(ev, rows=rows)

    def batch(self, batch_id: str) -> Evidence:
        """Every leaf of a batch, with all stored rows of its time series."""
        if self.reader.batch(batch_id) is None:
            raise CollectError(f"no batch {batch_id!r}")
        hashes = self.reader.batch_leaves(batch_id)
        subject = {"kind": "batch", "batch_id": batch_id}
        return self.evidence(subject, hashes, rows=self.store.statement_rows(hashes))


def ledger_state(ledger: LedgerClient, keys: Iterable[str]) -> LedgerEvidence:
    """A ledger half holding only `keys` proven at one (current) height and the certified
    headers up to it: what `verify.chain.apply_erasures` checks a bundle's erasures against."""
    c = Collector(None, None, None, ledger)  # type: ignore[arg-type]  # only the ledger is read
    return c._ledger([], dict.fromkeys(keys), {})
