"""Light client: verify headers and certificates from genesis, and tx inclusion.

Pure functions over values; what a downstream verifier runs on an air-gapped
machine. Trust starts from the genesis (its hash or the value itself): the
epoch-0 sealer set signs the first headers, and the last header of each epoch
names the next set (`BlockHeader.next_sealers`), so a client following the
headers always knows which set must certify the next one.

Every failure raises a `LightClientError` subclass whose `step` names what
failed, in the one vocabulary of the evidence chain (`trust.errors.CHAIN_STEPS`):
``genesis``, ``header-chain`` (a link or an epoch number), ``sealer-set``,
``certificate``, ``tx-in-block`` (tx root or tx inclusion proof).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ._merkle import InclusionError, inclusion_proof, leaf_hash, verify_inclusion
from .values import (
    Block,
    BlockHash,
    BlockHeader,
    CommitCertificate,
    Genesis,
    SealerSet,
    Transaction,
    Verifier,
    epoch_of,
    is_epoch_end,
)
from trust import errors as _steps

from .errors import CertificateError, LedgerError

__all__ = [
    "LightClientError",
    "GenesisMismatch",
    "HeaderLinkError",
    "HeaderEpochError",
    "SealerSetError",
    "CertificateInvalid",
    "TxRootError",
    "TxInclusionError",
    "TxProof",
    "LightClient",
    "tx_proof",
    "verify_tx_in_header",
    "verify_chain",
]


class LightClientError(LedgerError):
    """A header chain, certificate or inclusion proof does not verify; `.step` says which."""

    step = "unknown"

    def __init__(self, message: str, *, height: int | None = None) -> None:
        self.height = height
        where = "" if height is None else f" (height {height})"
        super().__init__(f"{self.step}{where}: {message}")


class GenesisMismatch(LightClientError):
    step = _steps.GenesisError.step


class HeaderLinkError(LightClientError):
    step = _steps.HeaderChainError.step


class HeaderEpochError(LightClientError):
    step = _steps.HeaderChainError.step


class SealerSetError(LightClientError):
    step = _steps.SealerSetHistoryError.step


class CertificateInvalid(LightClientError):
    step = _steps.CertificateQuorumError.step


class TxRootError(LightClientError):
    step = _steps.TxInBlockError.step


class TxInclusionError(LightClientError):
    step = _steps.TxInBlockError.step


@dataclass(frozen=True)
class TxProof:
    """RFC 9162 inclusion proof of a tx id in a block's `tx_root`."""

    height: int
    index: int
    size: int
    path: tuple[bytes, ...]

    def to_wire(self) -> dict:
        return {"height": self.height, "index": self.index, "size": self.size, "path": list(self.path)}


def tx_proof(block: Block, tx_id: bytes) -> TxProof:
    """Build the inclusion proof of `tx_id` in `block` (the full node side)."""
    leaves = [t.leaf for t in block.txs]
    for i, t in enumerate(block.txs):
        if t.tx_id == tx_id:
            return TxProof(block.height, i, len(leaves), tuple(inclusion_proof(leaves, i)))
    raise TxInclusionError("transaction is not in this block", height=block.height)


def verify_tx_in_header(header: BlockHeader, tx: Transaction | bytes, proof: TxProof) -> None:
    """Check that `tx` (or its tx id) is leaf `proof.index` of `header.tx_root`."""
    tx_id = tx.tx_id if isinstance(tx, Transaction) else tx
    if proof.height != header.height:
        raise TxInclusionError(f"proof is for height {proof.height}", height=header.height)
    try:
        verify_inclusion(leaf_hash(tx_id), proof.index, proof.size, list(proof.path), header.tx_root)
    except InclusionError as exc:
        raise TxInclusionError(str(exc), height=header.height) from None


@dataclass
class LightClient:
    """Follows a chain's headers from genesis, verifying each certificate.

    `headers[h]` is the verified header at height h (1-based); the client only
    ever moves forward and never accepts a header that does not extend the
    last one it verified.
    """

    genesis: Genesis
    verify: Verifier | None = None
    headers: dict[int, BlockHeader] = field(default_factory=dict)
    sealer_sets: dict[int, SealerSet] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sealer_sets.setdefault(0, self.genesis.sealers)
        self._last_hash: BlockHash = self.genesis.genesis_hash()

    @classmethod
    def from_genesis(cls, genesis: Genesis, expected_hash: bytes | None = None,
                     verify: Verifier | None = None) -> "LightClient":
        """Start from `genesis`, optionally pinned by its hash (out-of-band trust)."""
        if expected_hash is not None and genesis.genesis_hash() != expected_hash:
            raise GenesisMismatch("genesis does not have the expected hash")
        return cls(genesis, verify)

    @property
    def height(self) -> int:
        return len(self.headers)

    def sealers_for(self, height: int) -> SealerSet:
        e = epoch_of(height, self.genesis.params.epoch_length)
        s = self.sealer_sets.get(e)
        if s is None:
            raise SealerSetError(f"sealer set of epoch {e} unknown: follow headers up to it first", height=height)
        return s

    def add(self, header: BlockHeader, cert: CommitCertificate) -> None:
        """Verify `header` extends the chain and carries a valid certificate."""
        h = self.height + 1
        p = self.genesis.params
        if header.height != h:
            raise HeaderLinkError(f"expected height {h}, got {header.height}", height=header.height)
        if header.prev_hash != self._last_hash:
            raise HeaderLinkError("prev_hash does not match the previous header", height=h)
        if h > 1 and header.time < self.headers[h - 1].time:
            raise HeaderLinkError("time goes backwards", height=h)
        if header.epoch != epoch_of(h, p.epoch_length):
            raise HeaderEpochError(f"epoch {header.epoch} is not the epoch of height {h}", height=h)
        sealers = self.sealers_for(h)
        if header.sealer_set_hash != sealers.hash():
            raise SealerSetError("header names another sealer set than the chain says", height=h)
        if is_epoch_end(h, p.epoch_length) != (header.next_sealers is not None):
            raise SealerSetError("next sealer set must be present exactly at epoch ends", height=h)
        if cert.height != h or cert.block_hash != header.header_hash():
            raise CertificateInvalid("certificate is for another block", height=h)
        try:
            cert.verify(self.genesis.chain_id, sealers, self.verify)
        except CertificateError as exc:
            raise CertificateInvalid(str(exc), height=h) from None
        self.headers[h] = header
        self._last_hash = header.header_hash()
        if header.next_sealers is not None:
            self.sealer_sets[header.epoch + 1] = header.next_sealers

    def add_chain(self, items: Iterable[tuple[BlockHeader, CommitCertificate]]) -> None:
        for header, cert in items:
            self.add(header, cert)

    def verify_block(self, block: Block) -> None:
        """Check a full block's transactions against its verified header."""
        hdr = self.headers.get(block.height)
        if hdr is None:
            raise HeaderLinkError("header not verified yet", height=block.height)
        if block.header != hdr:
            raise HeaderLinkError("block header differs from the verified one", height=block.height)
        if not block.tx_root_ok():
            raise TxRootError("transactions do not match tx_root", height=block.height)

    def verify_tx(self, tx: Transaction | bytes, proof: TxProof) -> BlockHeader:
        """Check `tx` is in the verified block at `proof.height`; returns that header."""
        hdr = self.headers.get(proof.height)
        if hdr is None:
            raise HeaderLinkError("header not verified yet", height=proof.height)
        verify_tx_in_header(hdr, tx, proof)
        return hdr


def verify_chain(genesis: Genesis, items: Sequence[tuple[BlockHeader, CommitCertificate]],
                 verify: Verifier | None = None) -> LightClient:
    """Verify a whole header chain from genesis; returns the filled client."""
    lc = LightClient(genesis, verify)
    lc.add_chain(items)
    return lc
