"""Setup codes: what a phone scans to find and join this gateway.

A setup code is base64url (no padding) of UTF-8 JSON `{url, urls?, bootstrapToken}` (OpenClaw's
current form; its early form carried `token`/`password` instead). Moltis adds `tlsSha256`
(the certificate fingerprint to pin) when the URL is `wss://`. `oc-pair://<code>` is the same
code as a link.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

LINK_PREFIX = "oc-pair://"
MAX_URLS = 8


class SetupCodeError(ValueError):
    """A setup code that cannot be read (the message says what is wrong with it)."""


@dataclass(frozen=True)
class SetupCode:
    url: str
    urls: tuple[str, ...] = ()
    bootstrap_token: str = ""
    tls_sha256: str = ""
    legacy_token: str = ""
    """The shared token of an early-form code (`{url, token}`)."""
    legacy_password: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def all_urls(self) -> list[str]:
        """The URL first, then the other addresses, without repeats."""
        out: list[str] = []
        for url in (self.url, *self.urls):
            if url and url not in out:
                out.append(url)
        return out

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"url": self.url}
        if len(self.urls) > 1:
            data["urls"] = list(self.urls[:MAX_URLS])
        if self.bootstrap_token:
            data["bootstrapToken"] = self.bootstrap_token
        if self.tls_sha256:
            data["tlsSha256"] = self.tls_sha256
        return data


def encode(code: SetupCode) -> str:
    raw = json.dumps(code.to_json(), separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(text: str) -> SetupCode:
    """Read a setup code (also as an `oc-pair://` link, with or without padding)."""
    body = text.strip()
    if body.lower().startswith(LINK_PREFIX):
        body = body[len(LINK_PREFIX) :]
    body = body.strip("/ ")
    if not body:
        raise SetupCodeError("the setup code is empty")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError):
        raise SetupCodeError(
            "this is not a setup code (copy it again from the Pair a Phone window or `moltis qr`)"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise SetupCodeError("the setup code has no gateway URL")
    url = data["url"]
    check_url(url)
    urls = tuple(u for u in data.get("urls") or () if isinstance(u, str))
    for extra_url in urls:
        check_url(extra_url)
    known = {"url", "urls", "bootstrapToken", "tlsSha256", "token", "password"}
    return SetupCode(
        url=url,
        urls=urls,
        bootstrap_token=str(data.get("bootstrapToken") or ""),
        tls_sha256=str(data.get("tlsSha256") or ""),
        legacy_token=str(data.get("token") or ""),
        legacy_password=str(data.get("password") or ""),
        extra={k: v for k, v in data.items() if k not in known},
    )


def plain_ws_allowed(host: str) -> bool:
    """Whether plain `ws://` may be used to reach `host`: loopback, private (RFC 1918, ULA),
    link-local, `.local` names and the Android emulator's 10.0.2.2 only."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".local"):
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_private or addr.is_link_local


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise SetupCodeError(f"not a gateway URL: {url!r} (expected ws:// or wss://)")
    if parts.scheme == "ws" and not plain_ws_allowed(parts.hostname):
        raise SetupCodeError(
            f"{url} is plain ws:// to a public address; only wss:// may leave the local network"
        )


def lan_addresses(include_loopback: bool = False) -> list[str]:
    """This machine's IP addresses that a phone on the same network could reach: private,
    link-local (IPv4) and ULA addresses, in a stable order (IPv4 first)."""
    import ifaddr  # comes with zeroconf

    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                addr = ipaddress.ip_address(text.split("%")[0])
            except ValueError:
                continue
            if addr.is_loopback:
                if include_loopback:
                    found.append(addr)
                continue
            if isinstance(addr, ipaddress.IPv6Address) and addr.is_link_local:
                continue  # needs a zone id, which a phone cannot know
            if addr.is_private or addr.is_link_local or addr.is_global:
                found.append(addr)
    unique = sorted(set(found), key=lambda a: (a.version, not a.is_private, int(a)))
    return [str(a) for a in unique]


def gateway_urls(addresses: list[str], port: int, tls: bool) -> list[str]:
    """`ws://`/`wss://` URLs for each address; plain `ws://` only for private ones."""
    out: list[str] = []
    for address in addresses:
        host = f"[{address}]" if ":" in address else address
        if tls:
            out.append(f"wss://{host}:{port}")
        elif plain_ws_allowed(address):
            out.append(f"ws://{host}:{port}")
    return out[:MAX_URLS]
