"""`moltis qr` (setup codes from the command line) and the CLI over TLS, against real
gateway processes on loopback."""

from __future__ import annotations

import json
from pathlib import Path

from moltis_desktop.pairing.setupcode import decode
from tests.support.process import gateway_process
from tests.test_cli import moltis

TOKEN = "qr-cli-token-0123456789"


def test_qr_json_with_a_public_url(tmp_path: Path) -> None:
    with gateway_process(tmp_path / "home", token=TOKEN) as gw:
        env = {**gw.env, "MOLTIS_URL": gw.url}
        url = f"ws://127.0.0.1:{gw.port}"
        done = moltis(env, "qr", "--json", "--url", url)
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert set(data) == {
            "setupId",
            "setupCode",
            "url",
            "urls",
            "access",
            "accessDowngraded",
            "expiresAtMs",
        }
        assert data["url"] == url and data["urls"] == [url]
        assert data["access"] == "full" and data["accessDowngraded"] is False
        code = decode(data["setupCode"])
        assert code.url == url
        assert code.bootstrap_token
        assert TOKEN not in done.stdout + done.stderr

        plain = moltis(env, "qr", "--url", url, "--profile", "limited")
        assert plain.returncode == 0, plain.stderr
        out = plain.stdout
        assert "█" in out or "▀" in out or "▄" in out  # the ASCII QR block
        text = next(line.strip() for line in out.splitlines() if line.startswith("  "))
        assert f"Link: oc-pair://{text}" in out
        again = decode(text)
        assert again.url == url and again.bootstrap_token != code.bootstrap_token
        assert "Access: limited" in out
        assert "moltis devices approve" in out
        assert TOKEN not in out + plain.stderr

        bare = moltis(env, "qr", "--url", url, "--no-ascii")
        assert bare.returncode == 0, bare.stderr
        assert "█" not in bare.stdout and "oc-pair://" in bare.stdout


def test_qr_on_a_loopback_gateway_needs_lan(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with gateway_process(home, token=TOKEN) as gw:
        env = {**gw.env, "MOLTIS_URL": gw.url}
        refused = moltis(env, "qr")
        assert refused.returncode == 1
        assert "listens on this computer only" in refused.stderr
        assert "moltis qr --lan" in refused.stderr
        assert "--url" in refused.stderr

        opened = moltis(env, "qr", "--lan", "--json", timeout=40)
        assert opened.returncode == 0, opened.stderr + gw.output()
        assert "listens on your network" in opened.stderr
        data = json.loads(opened.stdout)
        assert decode(data["setupCode"]).url == data["url"]
        assert data["url"].endswith(f":{gw.port}")
        config = (home / "config" / "moltis.toml").read_text()
        assert 'bind = "lan"' in config, config
        assert TOKEN not in opened.stdout + opened.stderr


def test_cli_pins_the_local_gateway_certificate(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with gateway_process(home, token=TOKEN, MOLTIS_GATEWAY__TLS__ENABLED="1") as gw:
        # No --url: the CLI builds wss://127.0.0.1:<port> from the config and pins the
        # certificate in the state directory.
        env = {**gw.env, "MOLTIS_GATEWAY__PORT": str(gw.port)}
        health = moltis(env, "health")
        assert health.returncode == 0, health.stderr
        assert "Gateway: ok" in health.stdout
        called = moltis({**env, "MOLTIS_URL": gw.url}, "call", "health")
        assert called.returncode == 0, called.stderr
        assert json.loads(called.stdout)["ok"] is True

        wrong = moltis(env, "health", "--tls-fingerprint", "00" * 32)
        assert wrong.returncode == 1
        assert "does not match the pinned fingerprint" in wrong.stderr

        # Another home: no certificate known for the URL, so the self-signed one fails.
        other = {**gw.env, "MOLTIS_HOME": str(tmp_path / "other"), "MOLTIS_URL": gw.url}
        unknown = moltis(other, "health", "--token", TOKEN)
        assert unknown.returncode == 1
        assert "self-signed" in unknown.stderr and "--tls-fingerprint" in unknown.stderr
