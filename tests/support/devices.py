"""A device identity as OpenClaw clients have one: an Ed25519 key, and the signed `device`
block of `connect` (payload v3)."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def device_id(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def signed_device(
    key: Ed25519PrivateKey,
    *,
    nonce: str,
    ts: int,
    token: str,
    scopes: list[str],
    role: str = "operator",
    client_id: str = "cli",
    mode: str = "cli",
) -> dict[str, object]:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ident = hashlib.sha256(raw).hexdigest()
    payload = "|".join(
        ["v3", ident, client_id, mode, role, ",".join(scopes), str(ts), token, nonce, "linux",
         "linux"]
    )  # fmt: skip
    return {
        "id": ident,
        "publicKey": _b64(raw),
        "signature": _b64(key.sign(payload.encode())),
        "signedAt": ts,
        "nonce": nonce,
    }
