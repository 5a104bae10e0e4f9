"""What the providers built on an official SDK share: the SDK imported off the event loop
on first use (it takes about a second to load), and one lazily built client per provider."""

from __future__ import annotations

import asyncio
import gc
import importlib
import sys
from types import ModuleType
from typing import Any, ClassVar

from moltis_desktop.providers.errors import missing_key_error
from moltis_desktop.providers.presets import NO_KEY
from moltis_desktop.providers.resolved import ProviderConfig


async def load_sdk(name: str) -> ModuleType:
    """The SDK module `name`, imported in a worker thread the first time."""
    module = sys.modules.get(name)
    if module is None:
        module = await asyncio.to_thread(_import_for_good, name)
    return module


def _import_for_good(name: str) -> ModuleType:
    # The SDK lives as long as the process: its ~100k objects are kept out of the garbage
    # collector's full passes (frozen), which would otherwise each stall the loop, and a
    # reply streaming, for ~70 ms; and no pass runs over them while they load. Refcounting
    # still frees whatever they stop using.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return importlib.import_module(name)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class SdkProvider:
    """A provider whose wire calls go through an SDK client class (`AsyncAnthropic`,
    `AsyncOpenAI`); subclasses name the module and the class."""

    sdk_module: ClassVar[str]
    client_class: ClassVar[str]

    def __init__(self, config: ProviderConfig, api_key: str | None) -> None:
        self.id = config.id
        self.config = config
        self.capabilities = config.capabilities
        self._api_key = api_key
        self._client: Any = None
        self._lock = asyncio.Lock()

    @property
    def base_url(self) -> str:
        return self.config.base_url

    async def client(self) -> Any:
        """The SDK client (built on first use)."""
        if self._api_key is None and self.config.key_required:
            raise missing_key_error(self.config)
        async with self._lock:
            if self._client is None:
                sdk = await load_sdk(self.sdk_module)
                self._client = getattr(sdk, self.client_class)(
                    api_key=self._api_key or NO_KEY,
                    base_url=self.config.base_url,
                    timeout=self.config.timeout_s,
                    max_retries=self.config.max_retries,
                )
            return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
