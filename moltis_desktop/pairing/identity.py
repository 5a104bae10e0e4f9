"""Device identity proofs: an Ed25519 key per client install, signing the connect challenge."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

SIGNATURE_MAX_SKEW_MS = 600_000
"""How far `signedAt` may be from the gateway's clock, in ms (OpenClaw's
DEVICE_SIGNATURE_SKEW_MS)."""
_SPKI_ED25519_PREFIX = bytes.fromhex("302a300506032b6570032100")


class DeviceProofError(Exception):
    """A device proof that does not hold; `code` is OpenClaw's `DEVICE_AUTH_*` detail code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SignedConnect:
    """What a device signs, as it was sent in `connect`."""

    device_id: str
    public_key: str
    signature: str
    signed_at: int
    nonce: str
    client_id: str
    client_mode: str
    role: str
    scopes: tuple[str, ...]
    token: str
    platform: str
    device_family: str


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public_key(public_key: str) -> bytes:
    """The 32 raw key bytes from base64url (the wire form) or a PEM SubjectPublicKeyInfo."""
    text = public_key.strip()
    try:
        if text.startswith("-----BEGIN"):
            body = "".join(line for line in text.splitlines() if not line.startswith("-----"))
            der = base64.b64decode(body)
            if not der.startswith(_SPKI_ED25519_PREFIX):
                raise ValueError("not an Ed25519 key")
            raw = der[len(_SPKI_ED25519_PREFIX) :]
        else:
            raw = _b64url_decode(text)
    except ValueError:
        raise DeviceProofError(
            "DEVICE_AUTH_PUBLIC_KEY_INVALID", "device public key invalid"
        ) from None
    if len(raw) != 32:
        raise DeviceProofError("DEVICE_AUTH_PUBLIC_KEY_INVALID", "device public key invalid")
    return raw


def device_id_for(raw_key: bytes) -> str:
    """A device id: lowercase hex sha256 of the raw public key."""
    return hashlib.sha256(raw_key).hexdigest()


def _norm(value: str) -> str:
    # Trimmed, ASCII A-Z lower-cased (not str.lower(): other letters stay as they are).
    return value.strip().translate(
        str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
    )


def signature_payloads(proof: SignedConnect, *, legacy_v1: bool = False) -> list[str]:
    """The strings a client may have signed: v3 first, then the legacy v2 (and, for
    loopback clients that sent no nonce, the v1 form without one)."""
    base = [
        proof.device_id,
        proof.client_id,
        proof.client_mode,
        proof.role,
        ",".join(proof.scopes),
        str(proof.signed_at),
        proof.token,
        proof.nonce,
    ]
    v3 = "|".join(["v3", *base, _norm(proof.platform), _norm(proof.device_family)])
    v2 = "|".join(["v2", *base])
    if legacy_v1:
        return ["|".join(["v1", *base[:-1]])]
    return [v3, v2]


def verify_device_proof(
    proof: SignedConnect, *, challenge_nonce: str, now_ms: int, loopback: bool = False
) -> None:
    """Check a signed connect the way OpenClaw does; raise `DeviceProofError` on failure.

    The nonce must be the one this connection was challenged with, which makes a captured
    signature useless on any other connection. Only a loopback client may leave it out, and
    then only the legacy v1 payload (which has no nonce) is accepted."""
    raw = raw_public_key(proof.public_key)
    if device_id_for(raw) != proof.device_id:
        raise DeviceProofError("DEVICE_AUTH_DEVICE_ID_MISMATCH", "device identity mismatch")
    if abs(now_ms - proof.signed_at) > SIGNATURE_MAX_SKEW_MS:
        raise DeviceProofError("DEVICE_AUTH_SIGNATURE_EXPIRED", "device signature expired")
    legacy_v1 = not proof.nonce and loopback
    if not proof.nonce and not loopback:
        raise DeviceProofError("DEVICE_AUTH_NONCE_REQUIRED", "device nonce required")
    if proof.nonce and proof.nonce != challenge_nonce:
        raise DeviceProofError("DEVICE_AUTH_NONCE_MISMATCH", "device nonce mismatch")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(raw)
        signature = _b64url_decode(proof.signature)
    except ValueError:
        raise DeviceProofError(
            "DEVICE_AUTH_PUBLIC_KEY_INVALID", "device public key invalid"
        ) from None
    for payload in signature_payloads(proof, legacy_v1=legacy_v1):
        try:
            key.verify(signature, payload.encode("utf-8"))
            return
        except InvalidSignature:
            continue
    raise DeviceProofError("DEVICE_AUTH_SIGNATURE_INVALID", "device signature invalid")
