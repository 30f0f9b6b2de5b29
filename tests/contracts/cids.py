"""Real CIDs for contract tests (the contract refuses strings that are not CIDs), and the same multihash in every
encoding the contract reads: CIDv0, CIDv1 in base32 (either case), base16 and base58btc, raw or dag-pb codec."""

from __future__ import annotations

import base64
import hashlib

from ipfs.cid import DAG_PB, RAW, cid_bytes, cid_string

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = B58[digit] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def cid(label: str) -> str:
    """A CIDv1 (raw, base32) naming the content `label`."""
    return cid_string(cid_bytes(RAW, digest(label)))


def encodings(label: str) -> dict[str, str]:
    """The same content (`label`'s sha2-256 multihash) as differently spelled CIDs."""
    multihash = bytes([0x12, 0x20]) + digest(label)
    raw_v1, pb_v1 = cid_bytes(RAW, digest(label)), cid_bytes(DAG_PB, digest(label))
    return {
        "v1-base32": cid_string(raw_v1),
        "v1-base32-upper": cid_string(raw_v1).upper(),
        "v1-base32-dag-pb": cid_string(pb_v1),
        "v1-base16": "f" + raw_v1.hex(),
        "v1-base16-upper": "F" + raw_v1.hex().upper(),
        "v1-base58": "z" + base58(raw_v1),
        "v0": base58(multihash),
    }


def b32(raw: bytes) -> str:
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")
