"""What model calls cost: a small built-in price table (US dollars per million tokens) that
`usage.prices` in the config overrides, and `cost(ref, usage)`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from moltis_desktop.config.settings import PriceSettings
from moltis_desktop.providers.base import Usage
from moltis_desktop.providers.presets import PRESETS

_PER_TOKEN = 1e-6


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_read: float = 0.0
    cache_write: float = 0.0

    def cost(self, usage: Usage) -> float:
        return _PER_TOKEN * (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
        )


def _claude(input_: float, output: float) -> Price:
    # Anthropic: cache reads cost 10% of input, 5-minute cache writes 125%.
    return Price(input_, output, input_ * 0.1, input_ * 1.25)


BUILTIN_PRICES: dict[str, Price] = {
    "claude-opus-4-6": _claude(5.0, 25.0),
    "claude-opus-4-5": _claude(5.0, 25.0),
    "claude-opus-4-1": _claude(15.0, 75.0),
    "claude-opus-4": _claude(15.0, 75.0),
    "claude-sonnet-4-6": _claude(3.0, 15.0),
    "claude-sonnet-4-5": _claude(3.0, 15.0),
    "claude-sonnet-4": _claude(3.0, 15.0),
    "claude-haiku-4-5": _claude(1.0, 5.0),
    "claude-3-5-haiku": _claude(0.8, 4.0),
    "gpt-4o": Price(2.5, 10.0, 1.25),
    "gpt-4o-mini": Price(0.15, 0.6, 0.075),
    "gpt-4.1": Price(2.0, 8.0, 0.5),
    "gpt-4.1-mini": Price(0.4, 1.6, 0.1),
    "gpt-4.1-nano": Price(0.1, 0.4, 0.025),
    "gpt-5": Price(1.25, 10.0, 0.125),
    "gpt-5-mini": Price(0.25, 2.0, 0.025),
    "o3": Price(2.0, 8.0, 0.5),
    "o3-mini": Price(1.1, 4.4, 0.55),
    "o4-mini": Price(1.1, 4.4, 0.275),
    "gemini-2.5-pro": Price(1.25, 10.0, 0.31),
    "gemini-2.5-flash": Price(0.3, 2.5, 0.075),
}
"""By model id; a dated id (`claude-sonnet-4-5-20250929`) takes its base id's price."""
FREE = Price(0.0, 0.0)


class PriceTable:
    """The built-in prices under the config's `usage.prices` (keyed `provider/model`, or a
    bare model id for every provider). Local servers (Ollama, LM Studio) cost nothing."""

    def __init__(self, overrides: Mapping[str, PriceSettings] | None = None) -> None:
        self._overrides = {
            ref: Price(p.input, p.output, p.cache_read, p.cache_write)
            for ref, p in (overrides or {}).items()
        }

    def price(self, ref: str) -> Price | None:
        """The price of `provider/model` (or a bare model id); None when unknown."""
        provider, slash, model = ref.partition("/")
        if not slash:
            provider, model = "", ref
        override = self._overrides.get(ref) or self._overrides.get(model)
        if override is not None:
            return override
        preset = PRESETS.get(provider)
        if preset is not None and preset.local:
            return FREE
        best = ""
        for known in BUILTIN_PRICES:
            if (model == known or model.startswith(known + "-")) and len(known) > len(best):
                best = known
        return BUILTIN_PRICES.get(best)

    def cost(self, ref: str, usage: Usage) -> float:
        """US dollars for `usage` on `ref` (0.0 when the price is unknown)."""
        price = self.price(ref)
        return price.cost(usage) if price is not None else 0.0


def cost(ref: str, usage: Usage, overrides: Mapping[str, PriceSettings] | None = None) -> float:
    """US dollars for `usage` on `provider/model` (`overrides`: `Settings.usage.prices`)."""
    return PriceTable(overrides).cost(ref, usage)
