"""Confidential payloads (issue 18): the envelope format, pure, no I/O.

A confidential stream's payload is sealed at the device into an *envelope*: the plaintext
encrypted with AES-256-GCM under a fresh data key, in fixed-size chunks (chunk index and final
flag in each chunk's AAD), behind a public header that carries a salted commitment to the
plaintext. The envelope is the payload the device signs (its hash is the statement's
``payload_sha256``), so ingest, sealing, anchoring and every proof work on it with no key. The
data key (and the salt) are wrapped for each recipient in force with HPKE (RFC 9180, base
mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM) into a *key record* that travels
and is stored apart from the signed bytes, so erasing it destroys the content without touching
any signed byte. Format, vectors and steps: docs/formats.md section 8.

This package holds the format (`envelope`), recipient key files (`keys`) and the device side
(`device`: seal and sign one message, recipients files), all pure; it may import
`trust` and `cryptography` (which `trust/` may not: trust is stdlib + PyNaCl only).
"""

from .envelope import (
    CONTENT_TYPE,
    OPEN_STEPS,
    Envelope,
    KeyRecord,
    Opened,
    OpenError,
    Sealed,
    Wrap,
    commitment,
    open_envelope,
    parse_envelope,
    seal,
)
from .keys import RecipientKey, load_recipient_key, save_recipient_key

__all__ = [
    "CONTENT_TYPE",
    "OPEN_STEPS",
    "Envelope",
    "KeyRecord",
    "OpenError",
    "Opened",
    "RecipientKey",
    "Sealed",
    "Wrap",
    "commitment",
    "load_recipient_key",
    "open_envelope",
    "parse_envelope",
    "save_recipient_key",
    "seal",
]
