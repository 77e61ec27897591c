"""Canonical encoding: one byte string per value, and only one.

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

from .hashes import sha256
from .errors import CanonicalError

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
            _fast(out, item, depth + 1)
    elif t is dict or isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise CanonicalError(f"nesting deeper than {MAX_DEPTH}")
        items = sorted((_encode_key(k), v) for k, v in value.items())
        _head(out, 5, len(items))
        for kb, v in items:
            out += kb
            _fast(out, v, depth + 1)
    else:
        raise CanonicalError(f"cannot encode {t.__name__}")


# Fast path (speed only, same output and errors): exact built-in types are
# dispatched without the isinstance chain, small heads come from a table and
# the encoded form of map keys is memoised. Anything unusual (subclasses,
# surrogates, out-of-range ints, too deep) goes through `_enc` above, which
# defines the behaviour.
_SMALL_HEADS = [bytes([i]) for i in range(256)]  # index: major << 5 | argument (< 24)
_KEY_MEMO: dict[str, bytes] = {}
_KEY_MEMO_MAX = 4096


def _key_bytes(key: object) -> bytes:
    kb = _KEY_MEMO.get(key) if type(key) is str else None
    if kb is None:
        kb = _encode_key(key)
        if len(_KEY_MEMO) < _KEY_MEMO_MAX and len(kb) <= 64:
            _KEY_MEMO[key] = kb  # type: ignore[index]
    return kb


def _key0(item: tuple[bytes, Any]) -> bytes:
    return item[0]


def _fast(out: bytearray, value: Any, depth: int) -> None:
    t = type(value)
    if t is str:
        if value.isascii():
            n = len(value)
            if n < 24:
                out += _SMALL_HEADS[96 + n]
            elif n < 0x100:
                out += _SMALL_HEADS[0x78]
                out += _SMALL_HEADS[n]
            else:
                _head(out, 3, n)
            out += value.encode("ascii")
        else:
            _enc(out, value, depth)
    elif t is int:
        if 0 <= value < 24:
            out += _SMALL_HEADS[value]
        else:
            _enc(out, value, depth)
    elif t is bytes:
        n = len(value)
        if n < 24:
            out += _SMALL_HEADS[64 + n]
        elif n < 0x100:
            out += _SMALL_HEADS[0x58]
            out += _SMALL_HEADS[n]
        elif n < 0x10000:
            out += _SMALL_HEADS[0x59]
            out += n.to_bytes(2, "big")
        else:
            _head(out, 2, n)
        out += value
    elif t is dict:
        if depth >= MAX_DEPTH:
            raise CanonicalError(f"nesting deeper than {MAX_DEPTH}")
        n = len(value)
        if n < 24:
            out += _SMALL_HEADS[160 + n]
        else:
            _head(out, 5, n)
        if n:
            items = [(_key_bytes(k), v) for k, v in value.items()]
            items.sort(key=_key0)
            d = depth + 1
            for kb, v in items:
                out += kb
                _fast(out, v, d)
    elif t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise CanonicalError(f"nesting deeper than {MAX_DEPTH}")
        n = len(value)
        if n < 24:
            out += _SMALL_HEADS[128 + n]
        else:
            _head(out, 4, n)
        d = depth + 1
        for item in value:
            _fast(out, item, d)
    elif value is None:
        out.append(0xF6)
    elif t is bool:
        out.append(0xF5 if value else 0xF4)
    else:
        _enc(out, value, depth)


def encode(value: Any) -> bytes:
    """Return the canonical bytes of `value` (see module docstring)."""
    out = bytearray()
    _fast(out, value, 0)
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
                item, pos = _dec_fast(data, pos, depth + 1)
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
            result[key], pos = _dec_fast(data, pos, depth + 1)
        return result, pos
    raise CanonicalError(f"tags are not supported (0x{ib:02x} at {pos - 1})")


_KEY_TEXT: dict[bytes, str] = {}


def _dec_fast(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """`_dec` with the common cases inlined (speed only): heads with a small
    argument and text map keys seen before. Everything else, including every
    error, is decided by `_dec`."""
    ib = data[pos] if pos < len(data) else 256
    ai = ib & 0x1F
    if ai >= 24 or ib >= 0xE0:
        if (ib == 0x58 or ib == 0x78 or ib == 0x59 or ib == 0x79) and pos + 3 <= len(data):
            # byte or text string with a 1- or 2-byte length (minimal: >= 24 / >= 0x100)
            if ai == 24:
                n = data[pos + 1]
                start = pos + 2
                ok = n >= 24
            else:
                n = (data[pos + 1] << 8) | data[pos + 2]
                start = pos + 3
                ok = n >= 0x100
            end = start + n
            if ok and end <= len(data):
                raw = data[start:end]
                if ib < 0x60:
                    return raw, end
                try:
                    return raw.decode("utf-8"), end
                except UnicodeDecodeError:
                    pass  # `_dec` raises the error
        return _dec(data, pos, depth)
    major = ib >> 5
    pos += 1
    if major == 0:
        return ai, pos
    if major == 2 or major == 3:
        end = pos + ai
        if end > len(data):
            raise CanonicalError("truncated input")
        raw = data[pos:end]
        if major == 2:
            return raw, end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError as exc:
            raise CanonicalError(f"invalid UTF-8 text: {exc}") from None
    if major == 4:
        if depth >= MAX_DEPTH:
            raise CanonicalError(f"nesting deeper than {MAX_DEPTH}")
        if ai > len(data) - pos:
            raise CanonicalError("truncated input")
        items = []
        d = depth + 1
        for _ in range(ai):
            item, pos = _dec_fast(data, pos, d)
            items.append(item)
        return items, pos
    if major == 5:
        if depth >= MAX_DEPTH:
            raise CanonicalError(f"nesting deeper than {MAX_DEPTH}")
        if ai > len(data) - pos:
            raise CanonicalError("truncated input")
        result: dict[str, Any] = {}
        prev = b""
        d = depth + 1
        end_of_data = len(data)
        for _ in range(ai):
            if pos >= end_of_data:
                raise CanonicalError("truncated input")
            kb = data[pos]
            if kb >> 5 != 3:
                raise CanonicalError(f"map key at {pos} is not text")
            kstart = pos
            if kb & 0x1F < 24:
                pos = kstart + 1 + (kb & 0x1F)
                if pos > end_of_data:
                    raise CanonicalError("truncated input")
                kraw = data[kstart:pos]
                key = _KEY_TEXT.get(kraw)
                if key is None:
                    key, _ = _dec(data, kstart, d)
                    if len(_KEY_TEXT) < 4096:
                        _KEY_TEXT[kraw] = key
            else:
                key, pos = _dec(data, kstart, d)
                kraw = data[kstart:pos]
            if kraw <= prev:
                raise CanonicalError(
                    f"map key {key!r} at {kstart} is out of order or duplicated"
                )
            prev = kraw
            result[key], pos = _dec_fast(data, pos, d)
        return result, pos
    return _dec(data, pos - 1, depth)


def _count_items(data: bytes, max_items: int, max_depth: int) -> None:
    """Walk the heads of `data` without building values; raise `CanonicalError` once more than
    `max_items` items (every value, array element, map key and map value counts one) or more than
    `max_depth` levels of nesting are seen. Costs at most `max_items` steps, so a frame of millions
    of tiny items is refused before any of them is allocated. Malformed input is left to the
    decoder (the walk stops at the first head it cannot read)."""
    end = len(data)
    pos = 0
    items = 0
    stack: list[int] = []  # items still to read at each open level
    pending = 1
    while pending or stack:
        if not pending:
            pending = stack.pop()
            continue
        if pos >= end:
            return
        pending -= 1
        items += 1
        if items > max_items:
            raise CanonicalError(f"more than {max_items} items")
        ib = data[pos]
        pos += 1
        major, ai = ib >> 5, ib & 0x1F
        if major == 7:
            continue
        if ai < 24:
            n = ai
        elif ai <= 27:
            width = _WIDTH[ai]
            n = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        else:
            return
        if major == 2 or major == 3:
            pos += n
        elif major == 4 or major == 5:
            if len(stack) >= max_depth:
                raise CanonicalError(f"nesting deeper than {max_depth}")
            if n > max_items:
                raise CanonicalError(f"more than {max_items} items")
            stack.append(pending)
            pending = n if major == 4 else 2 * n


def decode(data: bytes, *, max_items: int | None = None, max_depth: int = MAX_DEPTH) -> Any:
    """Decode canonical bytes; raise `CanonicalError` unless they are canonical.

    Opt-in bounds for input from untrusted peers: with `max_items`, input holding more than that
    many items (values, array elements, map keys and values), or nested deeper than `max_depth`
    (at most `MAX_DEPTH`), is refused before anything is decoded (`_count_items`)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CanonicalError(f"expected bytes, not {type(data).__name__}")
    data = bytes(data)
    if max_items is not None or max_depth < MAX_DEPTH:
        _count_items(data, 1 << 62 if max_items is None else max_items, min(max_depth, MAX_DEPTH))
    value, pos = _dec_fast(data, 0, 0)
    if pos != len(data):
        raise CanonicalError(f"{len(data) - pos} trailing bytes")
    return value
