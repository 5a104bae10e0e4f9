"""The settings tree: frozen dataclasses, one per config section, with their defaults.

Each field's docstring is its help text (shown by `config.schema` and `moltis config`), and
names its unit. Secrets never appear here by value: a field ending in `_secret` holds the
*name* of an entry in the secret store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class AuthSettings:
    """How clients prove who they are."""

    mode: Literal["token", "password", "none"] = "token"
    """`token`: a shared token (default); `password`: a shared password; `none`: no shared
    secret, accepted from loopback clients only."""
    token_secret: str = "gateway-token"
    """Name of the secret-store entry holding the shared token. Created on first start when
    missing. The MOLTIS_TOKEN environment variable, when set, is used instead."""
    password_secret: str = "gateway-password"
    """Name of the secret-store entry holding the shared password (mode `password`). The
    MOLTIS_PASSWORD environment variable, when set, is used instead."""
    max_failures: int = 10
    """Failed connect attempts allowed per client IP within `failure_window_s`; then the IP
    is refused for `lockout_s`."""
    failure_window_s: float = 60.0
    """Length of the failed-attempt window, in seconds."""
    lockout_s: float = 300.0
    """How long a client IP is refused after too many failures, in seconds."""
    exempt_loopback: bool = True
    """Never lock out loopback clients (their failed attempts are answered ever more slowly
    instead, up to 5 s). Browsers (requests with an Origin) are never exempt."""


@dataclass(frozen=True)
class CorsSettings:
    """Which web pages (origins) may call the gateway from a browser."""

    allowed_origins: tuple[str, ...] = ()
    """Origins (`scheme://host[:port]`) allowed besides the gateway's own; `*` allows any.
    Default: same-origin only."""


@dataclass(frozen=True)
class GatewaySettings:
    """The WebSocket + HTTP server."""

    bind: str = "loopback"
    """Address to listen on: `loopback` (127.0.0.1), `lan` (all IPv4 interfaces), or an IP
    address. Changing it rebinds the listener."""
    port: int = 18789
    """TCP port for both HTTP and WebSocket. Changing it rebinds the listener."""
    max_payload: int = 512 * 1024
    """Largest frame a client may send after the handshake, in bytes."""
    max_buffered_bytes: int = 1536 * 1024
    """Bytes queued for a client that reads too slowly before its events are dropped and, for
    events that cannot be dropped, the connection is closed."""
    tick_interval_ms: int = 30_000
    """Interval between `tick` keep-alive events, in milliseconds."""
    handshake_timeout_ms: int = 10_000
    """Time a new connection has to send `connect`, in milliseconds."""
    max_inflight_per_connection: int = 64
    """Requests one connection may have running at once; further frames wait (backpressure)."""
    health_refresh_ms: int = 60_000
    """Interval at which the health snapshot is rebuilt and pushed as a `health` event, in
    milliseconds."""
    auth: AuthSettings = field(default_factory=AuthSettings)
    """Authentication of clients."""
    cors: CorsSettings = field(default_factory=CorsSettings)
    """Cross-origin access from browsers."""


@dataclass(frozen=True)
class LoggingSettings:
    """The gateway's own log."""

    level: LogLevel = "info"
    """Lowest level written: debug, info, warning or error."""
    file: str = ""
    """Path of the JSON log file; empty means `moltis.log` in the platform log directory."""
    max_bytes: int = 5 * 1024 * 1024
    """Size at which the log file is rotated, in bytes."""
    backups: int = 5
    """Number of rotated log files kept."""


@dataclass(frozen=True)
class SecretsSettings:
    """Where API keys, tokens and passwords are kept."""

    backend: Literal["auto", "keyring", "file"] = "auto"
    """`keyring`: the OS keyring; `file`: an encrypted file (passphrase from
    MOLTIS_SECRETS_PASSPHRASE or a prompt); `auto`: the keyring when one works, else the file."""


@dataclass(frozen=True)
class AgentSettings:
    """One agent: a persona with its own model and workspace."""

    id: str
    """Identifier used in session keys (`agent:<id>:main`)."""
    name: str = ""
    """Display name; empty means the id."""
    model: str = ""
    """Primary model as `provider/model`; empty means the default model."""
    workspace: str = ""
    """Workspace directory; empty means `workspace/<id>` in the state directory."""


@dataclass(frozen=True)
class AgentsSettings:
    """The agents this gateway runs."""

    default: str = "main"
    """Id of the agent that gets messages not routed elsewhere."""
    list: tuple[AgentSettings, ...] = (AgentSettings(id="main"),)
    """The agents."""


@dataclass(frozen=True)
class ModelEntry:
    """One model in the published catalogue."""

    id: str
    """The provider's model id, e.g. `claude-sonnet-4-5`."""
    provider: str
    """The provider id, e.g. `anthropic`, `openai`, `ollama`."""
    name: str = ""
    """Display name; empty means the id."""
    context_window: int = 0
    """Context window in tokens; 0 means unknown."""
    reasoning: bool = False
    """The model supports extended thinking / reasoning."""
    input: tuple[Literal["text", "image", "audio", "video", "document"], ...] = ("text",)
    """Input kinds the model accepts."""


@dataclass(frozen=True)
class ModelsSettings:
    """The model catalogue."""

    catalog: tuple[ModelEntry, ...] = ()
    """Models published to clients (`models.list`)."""


@dataclass(frozen=True)
class Settings:
    """All of Moltis Desktop's settings."""

    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    """The gateway server."""
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    """The log."""
    secrets: SecretsSettings = field(default_factory=SecretsSettings)
    """The secret store."""
    agents: AgentsSettings = field(default_factory=AgentsSettings)
    """Agents."""
    models: ModelsSettings = field(default_factory=ModelsSettings)
    """Models."""


RESTART_KEYS = frozenset({"gateway.bind", "gateway.port"})
"""Keys whose change rebinds the gateway's listener."""
