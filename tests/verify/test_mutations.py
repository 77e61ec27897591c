"""Every single-field mutation of an honest bundle of each subject kind is refused.

The honest bundles are tests/vectors/forgeries/honest_{blob,row,range,batch}.zip.  A mutation
changes one leaf value of one member's decoded structure (a byte flipped in a bytes value, an
int moved by one, a character appended to a text, a bool negated), or one byte of a raw member
(payloads, manifests), or one cell of rows.arrow, or one field of bundle.json; the member
digests are re-stamped so only the content is under test.  Every mutation must make the
verdict fail (or the bundle not read).  Fields outside the verdict are listed in `OUTSIDE`
with the reason; there are none today.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pytest

from trust import canonical
from trust.hashes import sha256
from verify.bundle import INDEX, BundleError, read_bundle
from verify.chain import verify

CORPUS = Path(__file__).resolve().parents[1] / "vectors" / "forgeries"
PIN = bytes.fromhex(json.loads((CORPUS / "forgeries.json").read_text())["genesis_hash"])
KINDS = ("blob", "row", "range", "batch")
#: (member, path) prefixes a mutation may leave verified, and why.
OUTSIDE: dict[tuple[str, tuple], str] = {}


def _bundle(kind: str) -> tuple[dict, dict[str, bytes]]:
    with zipfile.ZipFile(CORPUS / f"honest_{kind}.zip") as z:
        return json.loads(z.read(INDEX)), {n: z.read(n) for n in z.namelist() if n != INDEX}


def _leaves(doc: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(doc, dict):
        for k in sorted(doc):
            yield from _leaves(doc[k], path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, path + (i,))
    else:
        yield path, doc


def _mutated(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    if isinstance(value, bytes):
        return bytes([value[0] ^ 1]) + value[1:] if value else b"\x00"
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return 0
    raise TypeError(type(value))


def _set(doc: Any, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        doc = doc[p]
    doc[path[-1]] = value


def _zip(index: dict, members: dict[str, bytes]) -> bytes:
    index = dict(index, members={n: sha256(d).hex() for n, d in members.items()})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(INDEX, json.dumps(index, sort_keys=True, separators=(",", ":")))
        for n, d in members.items():
            z.writestr(n, d)
    return buf.getvalue()


def _refused(data: bytes) -> bool:
    try:
        ev = read_bundle(io.BytesIO(data))
    except BundleError:
        return True
    return not verify(ev, trusted_genesis_hash=PIN).ok


def _mutations(kind: str) -> Iterator[tuple[str, tuple, bytes]]:
    index, members = _bundle(kind)
    for path, value in _leaves({k: v for k, v in index.items() if k != "members"}):
        doc = json.loads(json.dumps(index))
        _set(doc, path, _mutated(value))
        yield INDEX, path, _zip(doc, members)
    for name, data in members.items():
        if name.endswith(".cbor"):
            for path, value in _leaves(canonical.decode(data)):
                doc = canonical.decode(data)
                _set(doc, path, _mutated(value))
                yield name, path, _zip(index, {**members, name: canonical.encode(doc)})
        elif name == "rows.arrow":
            t = pa.ipc.open_file(pa.BufferReader(data)).read_all()
            for col in t.schema.names:
                values = t.column(col).to_pylist()
                for row in {0, len(values) - 1}:
                    v = list(values)
                    v[row] = _mutated(v[row])
                    t2 = t.set_column(t.schema.get_field_index(col), col, pa.array(v, t.schema.field(col).type))
                    sink = pa.BufferOutputStream()
                    with pa.ipc.new_file(sink, t2.schema) as w:
                        w.write_table(t2)
                    yield name, (col, row), _zip(index, {**members, name: sink.getvalue().to_pybytes()})
        else:  # payloads, manifests, sealer_sets.json: their bytes as stored
            for pos in sorted({0, len(data) // 2, len(data) - 1}):
                b = bytearray(data)
                b[pos] ^= 0x01
                yield name, (pos,), _zip(index, {**members, name: bytes(b)})


@pytest.mark.parametrize("kind", KINDS)
def test_every_single_field_mutation_is_refused(kind: str) -> None:
    index, members = _bundle(kind)
    assert not _refused(_zip(index, members))  # the honest bundle, re-zipped, verifies
    survivors, n = [], 0
    for name, path, data in _mutations(kind):
        n += 1
        if any(name == m and path[:len(p)] == p for m, p in OUTSIDE):
            continue
        if not _refused(data):
            survivors.append((name, path))
    assert n > 50
    assert not survivors, f"{len(survivors)} of {n} mutations still verify: {survivors[:10]}"
