"""Regenerate the confidential-envelope vectors (tests/vectors/envelope_v1.json).

    .venv/bin/python tests/vectors/generate_envelope.py

Keys, data keys and salts are SHA-256 of labels, so the envelope bytes are a function of the
stored inputs (the tests rebuild them and compare). The key records are not: HPKE draws a fresh
ephemeral key per wrap (RFC 9180 section 4.1 Encap), so the tests open the stored wraps, with
`cryptography` and with an independent RFC 9180 implementation, instead of re-creating them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from confidential.envelope import parse_envelope, seal  # noqa: E402
from confidential.keys import RecipientKey  # noqa: E402
from trust.identity import KeyPair  # noqa: E402


def seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def recipient(n: int) -> RecipientKey:
    return RecipientKey.from_seed(f"recipient-{n}", seed(f"sealstream test recipient {n}"))


def labelled_random(case: str):
    count = iter(range(1 << 30))
    return lambda n: seed(f"sealstream envelope vector {case} {next(count)}")[:n]


DEVICE = KeyPair.from_seed(seed("sealstream test device 0")).did
CASES = [
    # name, plaintext, kind, content_type, chunk_size, recipients, stream
    ("one-chunk", b"ts,sensor,value\n1700000000000,temperature,72.5 CONFIDENTIAL-MARKER\n", "timeseries",
     "text/csv", 65536, [0], "press-07"),
    ("video-chunks", bytes(range(50)), "video", "video/mp2t", 16, [0, 1, 2], "line-3.cam"),
    ("exact-multiple", b"A" * 32, "image", "image/jpeg", 16, [1], "line-3.cam"),
    ("empty", b"", "image", "image/png", 16, [0, 2], "press-07"),
]


def main() -> None:
    cases = []
    for name, pt, kind, ctype, chunk, rids, stream in CASES:
        rcpts = [recipient(n) for n in rids]
        rnd = labelled_random(name)
        sealed = seal(pt, stream=stream, device=DEVICE, seq=1001, kind=kind, content_type=ctype,
                      recipients=[(r.id, r.public) for r in rcpts], chunk_size=chunk, random=rnd)
        env = parse_envelope(sealed.envelope)
        again = labelled_random(name)
        cases.append({
            "name": name,
            "input": {"plaintext": pt.hex(), "stream": stream, "device": DEVICE, "seq": 1001, "kind": kind,
                      "content_type": ctype, "chunk_size": chunk, "data_key": again(32).hex(), "salt": again(32).hex(),
                      "random_labels": f"sealstream envelope vector {name} <counter 0: data key, 1: salt>",
                      "recipients": [{"id": r.id, "secret_label": f"sealstream test recipient {n}",
                                      "secret": r.private.private_bytes_raw().hex(), "public": r.public.hex()}
                                     for n, r in zip(rids, rcpts)]},
            "output": {"header": env.header_bytes.hex(), "header_hash": env.header_hash.hex(),
                       "commitment": env.commitment.hex(), "chunks": env.chunks,
                       "envelope": sealed.envelope.hex(), "envelope_sha256": env.digest.hex(),
                       "key_record": sealed.keys.to_bytes().hex()},
        })
    doc = {"format": "sealstream confidential envelope v1 (docs/formats.md section 8)",
           "hpke": "RFC 9180 base mode, single shot: DHKEM(X25519, HKDF-SHA256) 0x0020, HKDF-SHA256 0x0001, "
                   "AES-256-GCM 0x0002",
           "cases": cases}
    (HERE / "envelope_v1.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
