"""An agent signed in with OAuth: its access token is refreshed before a turn when it is
about to expire, and the provider gets the fresh one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from moltis_desktop.config.secrets import SecretStore
from moltis_desktop.config.settings import AuthProfileSettings
from moltis_desktop.providers.oauth import AuthManager
from tests.conftest import MakeClient, StartGateway
from tests.support.fake_llm import FakeLLM, Turn
from tests.support.fake_oauth import FakeOAuthServer
from tests.support.keyrings import MemoryKeyring


async def _no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


async def test_expired_oauth_token_is_refreshed_before_the_turn(
    start_gateway: StartGateway,
    make_client: MakeClient,
    memory_keyring: MemoryKeyring,
    tmp_path: Path,
) -> None:
    async with FakeOAuthServer() as oauth, FakeLLM() as llm:
        store = SecretStore(tmp_path / "signin", backend="keyring")
        profiles = {"codex": AuthProfileSettings(provider="openai-codex", kind="oauth")}
        manager = AuthManager(
            store, profiles, issuer=oauth.issuer, sleep=_no_wait, notify=lambda text: None
        )
        await asyncio.wait_for(manager.login("openai-codex", "codex", method="device"), 20)
        signed_in = json.loads(store.get("auth-codex") or "{}")
        signed_in["expires_at"] = 1_000  # long expired
        store.set("auth-codex", json.dumps(signed_in))

        config = f"""
[providers.openai-codex]
kind = "openai"
base_url = "{llm.openai_base_url}"

[auth_profiles.codex]
provider = "openai-codex"
kind = "oauth"

[[agents.list]]
id = "main"
model = "openai-codex/fake-model-1"
auth_profile = "codex"
"""
        handle = await start_gateway(
            config, env={"PYTHON_KEYRING_BACKEND": "memory", "MOLTIS_OAUTH_ISSUER": oauth.issuer}
        )
        client = make_client(handle.url)
        await client.connect(token=handle.token, scopes=["operator.write"])
        llm.script(Turn(text="signed-in answer"))
        await client.call(
            "chat.send", {"sessionKey": "main", "message": "hi", "idempotencyKey": "r1"}
        )
        final = None
        while final is None:
            frame = await client.next_event("chat")
            if frame["payload"]["state"] in ("final", "error"):
                final = frame["payload"]
        assert final["state"] == "final", final
        fresh = json.loads(store.get("auth-codex") or "{}")
        assert fresh["access_token"] != signed_in["access_token"]
        assert fresh["expires_at"] > 1_000
        assert len(oauth.calls("/oauth/token", "refresh_token")) == 1
        assert llm.last("/v1/chat/completions").api_key == fresh["access_token"]
        # No token reached the log.
        log = handle.log_file.read_text()
        assert fresh["access_token"] not in log
        assert signed_in["refresh_token"] not in log
