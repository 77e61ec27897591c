"""Reference copy of trust/canonical.py before its speed-only fast paths (tests compare the two).

Canonical encoding: one byte string per value, and only one.

The format is the *deterministic* subset of CBOR (RFC 8949 §4.2.1, "core
deterministic encoding requirements"), restricted to the data model below, so
any CBOR library can read it and anything we hash has exactly one encoding:

=================  ============================================  ==========
Python             CBOR                                          bytes
=================  ============================================  ==========
``None``           simple value 22 (null)                        ``f6``
``False``/``True`` simple values 20/21                           ``f4``/``f5``
``int``            major 0 (n >= 0) / major 1 (n < 0),           ``00``..
                   -2**64 <= n < 2**64
``bytes``          major 2, definite length                      ``40``..
``str``            major 3, definite length, UTF-8               ``60``..
``list``/``tuple`` major 4, definite length                      ``80``..
``dict``           major 5, ``str`` keys only, sorted by the     ``a0``..
                   bytewise order of their encoded form
=================  ============================================  ==========

Every integer and length uses the shortest head (RFC 8949 §4.2.1).  No floats,
tags, indefinite lengths or other simple values.  `decode` accepts exactly the
output of `encode` and raises `CanonicalError` on anything else: non-minimal
heads, unsorted or duplicate keys, non-text keys, invalid UTF-8, unsupported
items, truncation and trailing bytes.  Arrays decode to ``list`` (a tuple
encodes like a list).  Nesting is limited to `MAX_DEPTH` levels.
"""

from __future__ import annotations

from typing import Any

from trust.hashes import sha256
from trust.errors import CanonicalError

__all__ = ["encode", "decode", "digest", "CanonicalError", "MAX_DEPTH"]

MAX_DEPTH = 64
_U64 = 1 << 64


def _head(out: bytearray, major: int, n: int) -> None:
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out += n.to_bytes(2, "big")
    elif n < 0x100000000:
        out.append(mt | 26)
        out += n.to_bytes(4, "big")
    elif n < _U64:
        out.append(mt | 27)
        out += n.to_bytes(8, "big")
    else:
        raise CanonicalError(f"integer or length out of range: {n}")


def _encode_key(key: object) -> bytes:
    if not isinstance(key, str):
        raise CanonicalError(f"map keys must be str, not {type(key).__name__}")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalError(f"key is not valid UTF-8 text: {exc}") from None
    out = bytearray()
    _head(out, 3, len(raw))
    out += raw
    return bytes(out)


def _enc(out: bytearray, value: Any, depth: int) -> None:
    t = type(value)
    if t is str or (t is not bool and isinstance(value, str)):
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CanonicalError(f"text is not valid UTF-8: {exc}") from None
        _head(out, 3, len(raw))
        out += raw
    elif t is bool:
        out.append(0xF5 if value else 0xF4)
    elif t is int or isinstance(value, int):
        if value >= 0:
            _head(out, 0, value)
        else:
            if value < -_U64:
                raise CanonicalError(f"integer out of range: {value}")
            _head(out, 1, -1 - value)
    elif t is bytes or isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        _head(out, 2, len(raw))
        out += raw
    elif value is None:
        out.append(0xF6)
    elif t is list or t is tuple or isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise CanonicalError(f"nesting deeper than {MAX_DEPTH}")
        _head(out, 4, len(value))
        for item in value:
            _enc(out, item, depth + 1)
    elif t is dict or isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise CanonicalError(f"nesting deeper than {MAX_DEPTH}")
        items = sorted((_encode_key(k), v) for k, v in value.items())
        _head(out, 5, len(items))
        for kb, v in items:
            out += kb
            _enc(out, v, depth + 1)
    else:
        raise CanonicalError(f"cannot encode {t.__name__}")


def encode(value: Any) -> bytes:
    """Return the canonical bytes of `value` (see module docstring)."""
    out = bytearray()
    _enc(out, value, 0)
    return bytes(out)


def digest(value: Any) -> bytes:
    """SHA-256 of the canonical bytes of `value`."""
    return sha256(encode(value))


_MIN_FOR_AI = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}
_WIDTH = {24: 1, 25: 2, 26: 4, 27: 8}


def _dec(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    end_of_data = len(data)
    if pos >= end_of_data:
        raise CanonicalError("truncated input")
    ib = data[pos]
    pos += 1
    major = ib >> 5
    ai = ib & 0x1F
    if major == 7:
        if ib == 0xF6:
            return None, pos
        if ib == 0xF5:
            return True, pos
        if ib == 0xF4:
            return False, pos
        raise CanonicalError(f"unsupported simple value or float 0x{ib:02x} at {pos - 1}")
    if ai < 24:
        n = ai
    elif ai <= 27:
        width = _WIDTH[ai]
        if pos + width > end_of_data:
            raise CanonicalError("truncated input")
        n = int.from_bytes(data[pos : pos + width], "big")
        if n < _MIN_FOR_AI[ai]:
            raise CanonicalError(f"non-minimal integer or length at {pos - 1}")
        pos += width
    else:
        raise CanonicalError(f"indefinite length or reserved head 0x{ib:02x} at {pos - 1}")
    if major == 0:
        return n, pos
    if major == 1:
        return -1 - n, pos
    if major == 2 or major == 3:
        end = pos + n
        if end > end_of_data:
            raise CanonicalError("truncated input")
        raw = data[pos:end]
        if major == 2:
            return raw, end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError as exc:
            raise CanonicalError(f"invalid UTF-8 text: {exc}") from None
    if major == 4 or major == 5:
        if depth >= MAX_DEPTH:
            raise CanonicalError(f"nesting deeper than {MAX_DEPTH}")
        if n > end_of_data - pos:
            raise CanonicalError("truncated input")
        if major == 4:
            items = []
            for _ in range(n):
                item, pos = _dec(data, pos, depth + 1)
                items.append(item)
            return items, pos
        result: dict[str, Any] = {}
        prev = b""
        for _ in range(n):
            kstart = pos
            if pos >= end_of_data:
                raise CanonicalError("truncated input")
            if data[pos] >> 5 != 3:
                raise CanonicalError(f"map key at {pos} is not text")
            key, pos = _dec(data, pos, depth + 1)
            kraw = data[kstart:pos]
            if kraw <= prev:
                raise CanonicalError(
                    f"map key {key!r} at {kstart} is out of order or duplicated"
                )
            prev = kraw
            result[key], pos = _dec(data, pos, depth + 1)
        return result, pos
    raise CanonicalError(f"tags are not supported (0x{ib:02x} at {pos - 1})")


def decode(data: bytes) -> Any:
    """Decode canonical bytes; raise `CanonicalError` unless they are canonical."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CanonicalError(f"expected bytes, not {type(data).__name__}")
    data = bytes(data)
    value, pos = _dec(data, 0, 0)
    if pos != len(data):
        raise CanonicalError(f"{len(data) - pos} trailing bytes")
    return value
