"""What a node holds to prove who it is: its Ed25519 device key and the tokens a gateway gave it.

Both live in the node's state directory as JSON files written atomically with mode 0600:
`identity.json` (OpenClaw's `device.json` shape) and `tokens.json` (the gateway it pairs
with and one device token per role).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from moltis_desktop.core.atomic import atomic_write_text
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.core.logging import REDACTOR
from moltis_desktop.core.paths import private_dir
from moltis_desktop.pairing.identity import SignedConnect, signature_payloads

_LOGGER = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"
TOKENS_FILE = "tokens.json"


class NodeStateError(MoltisError):
    """A file in the node's state directory cannot be used."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def connect_signature_payload(
    *,
    device_id: str,
    client_id: str,
    client_mode: str,
    role: str,
    scopes: Sequence[str],
    signed_at_ms: int,
    token: str,
    nonce: str,
    platform: str,
    device_family: str,
) -> str:
    """The v3 string a device signs in `connect` (OpenClaw's `buildDeviceAuthPayloadV3`):
    the very string the gateway verifies (`pairing.identity.signature_payloads`)."""
    proof = SignedConnect(
        device_id=device_id,
        public_key="",
        signature="",
        signed_at=signed_at_ms,
        nonce=nonce,
        client_id=client_id,
        client_mode=client_mode,
        role=role,
        scopes=tuple(scopes),
        token=token,
        platform=platform,
        device_family=device_family,
    )
    return signature_payloads(proof)[0]


class DeviceIdentity:
    """An Ed25519 key pair; the device id is the hex SHA-256 of the raw public key."""

    def __init__(self, private_key: Ed25519PrivateKey, created_at_ms: int) -> None:
        self._key = private_key
        self.created_at_ms = created_at_ms
        self.public_key_raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.device_id = hashlib.sha256(self.public_key_raw).hexdigest()

    @classmethod
    def generate(cls) -> DeviceIdentity:
        return cls(Ed25519PrivateKey.generate(), int(time.time() * 1000))

    @classmethod
    def load_or_create(cls, path: Path) -> DeviceIdentity:
        """The identity stored at `path`; a new one (saved there, 0600) when there is none."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            identity = cls.generate()
            identity.save(path)
            _LOGGER.info("created node identity %s in %s", identity.device_id[:12], path)
            return identity
        except OSError as exc:
            raise NodeStateError(f"cannot read the node identity {path}: {exc}") from None
        return cls._parse(path, text)

    @classmethod
    def _parse(cls, path: Path, text: str) -> DeviceIdentity:
        broken = (
            f"the node identity {path} is damaged; delete it to make a new one "
            "(the node then has to be paired again)"
        )
        try:
            data = json.loads(text)
            key = load_pem_private_key(str(data["privateKeyPem"]).encode("ascii"), password=None)
        except (ValueError, KeyError, TypeError):
            raise NodeStateError(broken) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise NodeStateError(broken)
        identity = cls(key, int(data.get("createdAtMs") or 0))
        stored_id = data.get("deviceId")
        if stored_id and stored_id != identity.device_id:
            raise NodeStateError(broken)
        return identity

    @property
    def public_key(self) -> str:
        """The public key as sent on the wire: raw 32 bytes, base64url without padding."""
        return _b64url(self.public_key_raw)

    @property
    def public_key_pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )

    def to_json(self) -> dict[str, Any]:
        private_pem = self._key.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        ).decode("ascii")
        return {
            "version": 1,
            "deviceId": self.device_id,
            "publicKeyPem": self.public_key_pem,
            "privateKeyPem": private_pem,
            "createdAtMs": self.created_at_ms,
        }

    def save(self, path: Path) -> None:
        private_dir(path.parent)
        atomic_write_text(path, json.dumps(self.to_json(), indent=1), mode=0o600)

    def sign(self, payload: str) -> str:
        """An Ed25519 signature of the UTF-8 `payload`, base64url without padding."""
        return _b64url(self._key.sign(payload.encode("utf-8")))

    def sign_connect(
        self,
        *,
        nonce: str,
        signed_at_ms: int,
        client_id: str,
        client_mode: str,
        role: str,
        scopes: Sequence[str],
        token: str,
        platform: str,
        device_family: str,
    ) -> dict[str, Any]:
        """The `device` block of `connect`, signed over the challenge (`signed_at_ms` is the
        challenge's `ts`; `token` is the one in `auth`, whichever field carries it)."""
        payload = connect_signature_payload(
            device_id=self.device_id,
            client_id=client_id,
            client_mode=client_mode,
            role=role,
            scopes=scopes,
            signed_at_ms=signed_at_ms,
            token=token,
            nonce=nonce,
            platform=platform,
            device_family=device_family,
        )
        return {
            "id": self.device_id,
            "publicKey": self.public_key,
            "signature": self.sign(payload),
            "signedAt": signed_at_ms,
            "nonce": nonce,
        }


@dataclass(frozen=True)
class RoleToken:
    """A device token the gateway issued for one role."""

    token: str
    scopes: tuple[str, ...] = ()
    issued_at_ms: int = 0


class NodeTokens:
    """`tokens.json`: the gateway this node belongs to (its addresses and TLS pin) and the
    device tokens it issued, one per role. Every change is written at once (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.gateway_url = ""
        self.urls: list[str] = []
        self.tls_sha256 = ""
        self.tokens: dict[str, RoleToken] = {}
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise NodeStateError(
                f"the node's token file {self.path} cannot be read ({exc}); delete it and "
                "pair again with `moltis node run --pair <setup code>`"
            ) from None
        if not isinstance(data, dict):
            return
        self.gateway_url = str(data.get("gatewayUrl") or "")
        self.urls = [u for u in data.get("urls") or () if isinstance(u, str)]
        self.tls_sha256 = str(data.get("tlsSha256") or "")
        for role, entry in (data.get("tokens") or {}).items():
            if isinstance(entry, dict) and entry.get("token"):
                token = str(entry["token"])
                REDACTOR.add(token)
                self.tokens[str(role)] = RoleToken(
                    token,
                    tuple(str(s) for s in entry.get("scopes") or ()),
                    int(entry.get("issuedAtMs") or 0),
                )

    def save(self) -> None:
        data = {
            "gatewayUrl": self.gateway_url,
            "urls": self.urls,
            "tlsSha256": self.tls_sha256,
            "tokens": {
                role: {"token": t.token, "scopes": list(t.scopes), "issuedAtMs": t.issued_at_ms}
                for role, t in sorted(self.tokens.items())
            },
        }
        private_dir(self.path.parent)
        atomic_write_text(self.path, json.dumps(data, indent=1), mode=0o600)

    def token_for(self, role: str) -> str | None:
        entry = self.tokens.get(role)
        return entry.token if entry else None

    def put(self, role: str, token: RoleToken) -> None:
        REDACTOR.add(token.token)
        self.tokens[role] = token
        self.save()

    def drop(self, role: str) -> None:
        if self.tokens.pop(role, None) is not None:
            self.save()

    def set_gateway(self, url: str, urls: Sequence[str], tls_sha256: str) -> None:
        """Remember where the gateway is. A different gateway's tokens are forgotten."""
        known = {self.gateway_url, *self.urls} - {""}
        if known and not known & {url, *urls}:
            _LOGGER.info("another gateway: forgetting the tokens of %s", self.gateway_url)
            self.tokens.clear()
        changed = (self.gateway_url, self.urls, self.tls_sha256) != (url, list(urls), tls_sha256)
        self.gateway_url, self.urls, self.tls_sha256 = url, list(urls), tls_sha256
        if changed or not self.path.exists():
            self.save()
