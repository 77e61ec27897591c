"""JSON views of ledger values for the HTTP API, and their exact decoding.

Each view is readable JSON (byte strings as lowercase hex) plus a
``canonical`` field: the hex of the value's canonical wire bytes. Readers that
verify (the light client, `ledger.client`) decode ``canonical`` — it is the
exact value that was hashed and signed — and never re-derive bytes from the
readable part.
"""

from __future__ import annotations

from typing import Any

from trust import canonical

from .values import Block, BlockHeader, CommitCertificate, Transaction
from .errors import WireError
from .light_client import TxProof

__all__ = [
    "jsonable",
    "header_view",
    "block_view",
    "tx_view",
    "decode_header_view",
    "decode_block_view",
    "decode_tx_view",
]


def jsonable(value: Any) -> Any:
    """`value` with bytes as hex (recursively), ready for `json.dumps`."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _canon(wire: Any) -> str:
    return canonical.encode(wire).hex()


def _uncanon(text: Any) -> Any:
    if not isinstance(text, str):
        raise WireError("canonical field must be hex text")
    try:
        return canonical.decode(bytes.fromhex(text))
    except ValueError as exc:
        raise WireError(f"canonical field does not decode: {exc}") from None


def header_view(header: BlockHeader, cert: CommitCertificate) -> dict:
    return {
        "height": header.height,
        "hash": header.header_hash().hex(),
        "header": jsonable(header.to_wire()),
        "cert": jsonable(cert.to_wire()),
        "canonical": {"header": _canon(header.to_wire()), "cert": _canon(cert.to_wire())},
    }


def decode_header_view(v: dict) -> tuple[BlockHeader, CommitCertificate]:
    try:
        c = v["canonical"]
        return BlockHeader.from_wire(_uncanon(c["header"])), CommitCertificate.from_wire(_uncanon(c["cert"]))
    except (KeyError, TypeError) as exc:
        raise WireError(f"bad header view: {exc}") from None


def block_view(block: Block, cert: CommitCertificate, results: list[Any]) -> dict:
    return {
        "height": block.height,
        "hash": block.block_hash().hex(),
        "header": jsonable(block.header.to_wire()),
        "txs": [{"tx_id": t.tx_id.hex(), **jsonable(t.to_wire())} for t in block.txs],
        "results": jsonable(results),
        "cert": jsonable(cert.to_wire()),
        "canonical": {"block": _canon(block.to_wire()), "cert": _canon(cert.to_wire())},
    }


def decode_block_view(v: dict) -> tuple[Block, CommitCertificate]:
    try:
        c = v["canonical"]
        return Block.from_wire(_uncanon(c["block"])), CommitCertificate.from_wire(_uncanon(c["cert"]))
    except (KeyError, TypeError) as exc:
        raise WireError(f"bad block view: {exc}") from None


def tx_view(tx: Transaction, height: int, index: int, result: Any, proof: TxProof, header: BlockHeader) -> dict:
    return {
        "tx_id": tx.tx_id.hex(),
        "height": height,
        "index": index,
        "block": header.header_hash().hex(),
        "tx": jsonable(tx.to_wire()),
        "result": jsonable(result),
        "proof": jsonable(proof.to_wire()),
        "canonical": {"tx": _canon(tx.to_wire()), "result": _canon(result), "proof": _canon(proof.to_wire())},
    }


def decode_tx_view(v: dict) -> tuple[Transaction, Any, TxProof]:
    try:
        c = v["canonical"]
        tx = Transaction.from_wire(_uncanon(c["tx"]))
        p = _uncanon(c["proof"])
        if not (isinstance(p, dict) and set(p) == {"height", "index", "size", "path"}
                and all(type(x) is bytes for x in p["path"])):
            raise WireError("bad proof")
        proof = TxProof(p["height"], p["index"], p["size"], tuple(p["path"]))
        return tx, _uncanon(c["result"]), proof
    except (KeyError, TypeError) as exc:
        raise WireError(f"bad tx view: {exc}") from None
