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
class TlsSettings:
    """Serving `wss://` and `https://` with a self-signed certificate."""

    enabled: bool = False
    """Serve TLS with a self-signed certificate, generated on first use and kept across
    restarts (`tls/` in the state directory). Its SHA-256 fingerprint goes into setup codes
    and the mDNS record so that phones can pin it. Changing it rebinds the listener."""


@dataclass(frozen=True)
class NodesSettings:
    """Which commands connected nodes (phones, other computers) may be asked to run."""

    allow_commands: tuple[str, ...] = ()
    """Commands allowed besides the platform's defaults (`camera.snap`, `system.run`, …)."""
    deny_commands: tuple[str, ...] = ()
    """Commands never invoked, whatever the node declares (wins over `allow_commands`)."""
    invoke_timeout_ms: int = 30_000
    """Default time a `node.invoke` waits for the node's answer, in milliseconds."""


@dataclass(frozen=True)
class HttpSettings:
    """How long the gateway waits for slow or idle HTTP clients (WebSockets start as HTTP)."""

    header_timeout_ms: int = 10_000
    """Time a client has to send a request's headers, counted from its first byte (and, for
    a new connection, from connecting), in milliseconds; then the connection is closed.
    Read when a connection opens."""
    keepalive_timeout_ms: int = 30_000
    """Time an idle connection is kept open for the client's next request after a response,
    in milliseconds. Read when a connection opens."""


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
    auto_approve_loopback_devices: bool = True
    """Pair devices connecting from this machine without asking (as OpenClaw does); others
    wait for approval (`moltis devices approve`, the tray, the web app)."""
    tls: TlsSettings = field(default_factory=TlsSettings)
    """TLS (`wss://`) for clients on the network."""
    nodes: NodesSettings = field(default_factory=NodesSettings)
    """Nodes: devices that run commands for the agent."""
    max_pairing_requests_per_minute: int = 10
    """New pairing requests accepted per client IP per minute; more are refused with
    `RATE_LIMITED` (pending requests are capped at 64 in all)."""
    chat_completions: bool = False
    """Serve the OpenAI-compatible `POST /v1/chat/completions` (needs the gateway token or
    password as a Bearer token)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks (`127.0.0.1`, `10.0.0.0/8`) of reverse proxies in front of the
    gateway (Tailscale Serve, Caddy). Their `X-Forwarded-For` names the real client; a
    request with forwarding headers from anyone else is never treated as local."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names the gateway answers to besides its own (`localhost`, this machine's
    name and addresses, `.local`, `.home.arpa`, `.internal`, `.lan` and `.ts.net` names):
    `name` or `.suffix`. Requests for
    any other `Host` get 421 (this is what defeats DNS rebinding)."""
    http: HttpSettings = field(default_factory=HttpSettings)
    """Timeouts of HTTP connections (slow or idle clients)."""


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


ThinkingLevel = Literal["off", "minimal", "low", "medium", "high", "xhigh"]


@dataclass(frozen=True)
class AgentSettings:
    """One agent: a persona with its own model, workspace, tools and credentials."""

    id: str
    """Identifier used in session keys (`agent:<id>:main`)."""
    name: str = ""
    """Display name; empty means the id."""
    model: str = ""
    """Primary model as `provider/model`; empty means `agents.model`."""
    fallbacks: tuple[str, ...] = ()
    """Models (`provider/model`) tried in order when the primary one fails with a retryable
    error; empty means `agents.fallbacks`."""
    workspace: str = ""
    """Workspace directory (bootstrap files, skills); empty means `workspace/<id>` in the
    state directory."""
    thinking: ThinkingLevel = "off"
    """Default reasoning effort; `/think <level>` overrides it per session."""
    tools_allow: tuple[str, ...] = ("*",)
    """Tools the agent may use (names, `*` for all)."""
    tools_deny: tuple[str, ...] = ()
    """Tools the agent may not use (wins over `tools_allow`)."""
    auth_profile: str = ""
    """Name of an entry in `auth_profiles` whose credentials this agent uses; empty means
    the provider's own key."""


@dataclass(frozen=True)
class AgentsSettings:
    """The agents this gateway runs, and what they share."""

    default: str = "main"
    """Id of the agent that gets messages not routed elsewhere."""
    list: tuple[AgentSettings, ...] = (AgentSettings(id="main"),)
    """The agents."""
    model: str = ""
    """Default model as `provider/model`; empty picks the first available: a configured
    provider, else ANTHROPIC_API_KEY, OPENAI_API_KEY, else a local Ollama."""
    fallbacks: tuple[str, ...] = ()
    """Default fallback models (`provider/model`)."""
    max_iterations: int = 25
    """Most model calls in one turn (each tool round is one)."""
    max_tokens: int = 8192
    """Most output tokens per model call."""
    tool_timeout_s: float = 60.0
    """Time a tool may run before it is cancelled, in seconds."""
    tool_result_max_chars: int = 32_000
    """Longest tool result handed to the model, in characters (the rest is cut with a note)."""
    skills_dirs: tuple[str, ...] = ()
    """Extra directories with `SKILL.md` skills (besides `<workspace>/skills` and the user
    skills directory)."""


@dataclass(frozen=True)
class BindingSettings:
    """Routes inbound messages to an agent; the most specific match wins
    (peer > guild > team > account > channel)."""

    agent: str
    """The agent id messages matching this binding go to."""
    channel: str = ""
    """Channel (`telegram`, `slack`, …); empty matches any."""
    account: str = ""
    """Channel account id; empty matches any."""
    peer: str = ""
    """Sender / chat id; empty matches any."""
    guild: str = ""
    """Guild / server id (Discord); empty matches any."""
    team: str = ""
    """Team / workspace id (Slack); empty matches any."""


@dataclass(frozen=True)
class ProviderSettings:
    """One LLM provider. The table name is its id; a known id (`anthropic`, `openai`,
    `gemini`, `groq`, `xai`, `deepseek`, `openrouter`, `mistral`, `ollama`, `lmstudio`,
    `local`) brings
    its preset, so most keys can stay empty."""

    kind: Literal["", "anthropic", "openai", "local"] = ""
    """Wire API: `anthropic` (Messages), `openai` (Chat Completions) or `local` (the
    embedded llama.cpp model, see `models.local`); empty means the preset's."""
    base_url: str = ""
    """API base URL; empty means the preset's (or the SDK's own environment variable)."""
    api_key_secret: str = ""
    """Name of the secret-store entry holding the API key; empty means `<id>-api-key`."""
    api_key_env: str = ""
    """Environment variable that may hold the key; empty means the preset's (e.g.
    ANTHROPIC_API_KEY)."""
    enabled: bool = True
    """Offer this provider's models."""
    models: tuple[str, ...] = ()
    """Model ids offered even when the model list does not report them."""
    discover_models: bool = True
    """Ask the provider for its model list (cached, refreshed in the background)."""
    timeout_s: float = 120.0
    """Time one request may take, in seconds."""
    max_retries: int = 2
    """Retries (with backoff, honouring Retry-After) on 429, 5xx and connection errors."""


@dataclass(frozen=True)
class AuthProfileSettings:
    """A set of credentials agents can use instead of the provider's default key."""

    provider: str
    """Provider id the credentials are for."""
    kind: Literal["api_key", "oauth"] = "api_key"
    """`api_key`: a key in the secret store; `oauth`: tokens from `moltis auth login`."""
    secret: str = ""
    """Secret-store entry holding the key or the OAuth tokens; empty means
    `auth-<profile name>`."""


@dataclass(frozen=True)
class SessionResetSettings:
    """When a session starts over (the transcript is archived, never lost)."""

    mode: Literal["daily", "idle", "never"] = "daily"
    """`daily`: at `at_hour` local time; `idle`: after `idle_minutes` without messages;
    `never`."""
    at_hour: int = 4
    """Hour of the daily reset (0-23, gateway local time)."""
    idle_minutes: int = 0
    """Minutes without messages before an idle reset (mode `idle`)."""


@dataclass(frozen=True)
class SessionSettings:
    """Conversations: keys, resets, compaction."""

    main_key: str = "main"
    """The main session's key suffix (`agent:<id>:<main_key>`)."""
    dm_scope: Literal["main", "per-peer", "per-channel-peer", "per-account-channel-peer"] = "main"
    """How direct messages map to sessions: all to the main session, or one per peer (per
    channel, per account)."""
    reset: SessionResetSettings = field(default_factory=SessionResetSettings)
    """Reset policy."""
    compaction_reserve_tokens: int = 16_384
    """Compact when the context leaves fewer than this many tokens of the model's window."""
    compaction_keep_recent_tokens: int = 20_000
    """Tokens of recent conversation kept verbatim when compacting."""


@dataclass(frozen=True)
class PriceSettings:
    """A model's price, in US dollars per million tokens."""

    input: float = 0.0
    """Per million input tokens."""
    output: float = 0.0
    """Per million output tokens."""
    cache_read: float = 0.0
    """Per million tokens read from the prompt cache."""
    cache_write: float = 0.0
    """Per million tokens written to the prompt cache."""


@dataclass(frozen=True)
class UsageSettings:
    """Token and cost accounting."""

    prices: dict[str, PriceSettings] = field(default_factory=dict)
    """Prices per `provider/model`, overriding the built-in table."""


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
class LocalModelSettings:
    """The embedded local model (provider `local`): a GGUF chat model run in-process by
    llama.cpp. It answers when no key and no local server (Ollama, LM Studio) is found."""

    model: str = ""
    """Catalog id (`moltis models local list`) or the path of a `.gguf` file; empty means
    the best one installed: a downloaded tier, else the built-in SmolLM2-135M."""
    idle_unload_s: float = 300.0
    """Seconds without a turn after which the model is unloaded (its memory returned);
    0 keeps it loaded until the gateway stops."""
    context_tokens: int = 4096
    """Context window the model is loaded with (prompt and reply together)."""
    threads: int = 0
    """CPU threads for inference; 0 means the machine's physical cores (at most 8)."""
    max_tokens: int = 512
    """Longest reply, in tokens."""
    tools: tuple[str, ...] = ()
    """Lean mode: the tools a local model is offered on every turn (default none: small
    models call tools when none is needed). Any tool can still be asked for explicitly
    with a `/command` in the message."""
    mirror: str = ""
    """Base URL of a mirror serving `<model id>/<file name>` (or MOLTIS_MODEL_MIRROR)."""


@dataclass(frozen=True)
class ModelsSettings:
    """The model catalogue."""

    catalog: tuple[ModelEntry, ...] = ()
    """Models published to clients (`models.list`)."""
    local: LocalModelSettings = field(default_factory=LocalModelSettings)
    """The embedded local model."""


@dataclass(frozen=True)
class MdnsSettings:
    """Advertising the gateway on the local network (Bonjour / mDNS)."""

    mode: Literal["off", "minimal", "full"] = "minimal"
    """`off`: not advertised; `minimal`: `_openclaw-gw._tcp` and `_moltis._tcp` with the name,
    port and TLS fingerprint; `full`: also the host name and CLI path. Only a gateway that
    listens on the network (`gateway.bind` not `loopback`) is advertised on it; a loopback
    one is advertised on 127.0.0.1 only. MOLTIS_DISABLE_MDNS=1 turns it off."""
    name: str = ""
    """The name shown to phones; empty means "Moltis on <host name>"."""


@dataclass(frozen=True)
class DiscoverySettings:
    """How phones and other clients find this gateway."""

    mdns: MdnsSettings = field(default_factory=MdnsSettings)
    """mDNS / DNS-SD on the local network."""


@dataclass(frozen=True)
class WakeSettings:
    """Listening for the wake word."""

    models: tuple[str, ...] = ("hey_jarvis",)
    """Wake-word models: built-in names (`hey_jarvis`, `alexa`, `hey_mycroft`, `hey_rhasspy`,
    `okay_nabu`) or paths to your own openWakeWord `.tflite` / `.onnx` classifier files."""
    threshold: float = 0.5
    """Score (0 to 1) at which a wake word counts; higher means fewer false wakes and more
    missed ones."""
    patience: int = 1
    """Consecutive 80 ms frames scored at or over the threshold before the wake word counts
    (openWakeWord's `patience`): more means fewer false wakes on near misses, more missed
    wakes, and 80 ms more latency a frame (measured in docs/BENCHMARKS.md: 3 cut false wakes
    by 70 % and detection by 11 points)."""
    refractory_s: float = 2.0
    """After a wake, the same model cannot fire again for this many seconds."""
    vad_gate: bool = True
    """Run the wake-word model only while voice activity detection hears speech (with 2 s
    of audio kept from before it): far less CPU in a quiet room, same accuracy."""


@dataclass(frozen=True)
class SttSettings:
    """Transcription (speech to text) with faster-whisper, on this machine."""

    model: str = "tiny.en"
    """Whisper model: `tiny.en` (default, small and fast), `tiny`, `base.en`, `base`,
    `small.en`, `small`, or the path of a CTranslate2 model directory. Downloaded on first
    use (`moltis models voice download whisper/<size>`)."""
    language: str = ""
    """Language code of the speech (`en`, `de`, …); empty detects it (English-only `.en`
    models always use `en`)."""
    compute_type: str = "int8"
    """CTranslate2 compute type on the CPU: `int8` (default), `int8_float32`, `float32`."""
    beam_size: int = 1
    """Beam width: 1 is greedy and fastest; 5 is a little more accurate and slower."""
    threads: int = 0
    """CPU threads for transcription; 0 uses up to 4."""


@dataclass(frozen=True)
class TtsSettings:
    """Speech (text to speech): piper on this machine, or OpenAI's speech API."""

    enabled: bool = True
    """Speak the replies to spoken questions (talk mode and the wake word)."""
    speak_chat_replies: bool = False
    """Also speak the replies to typed chat messages (the web app, the tray's chat window)
    on this computer's speakers; `tts.status` reports it as `auto` (`always` or `off`)."""
    provider: Literal["piper", "openai"] = "piper"
    """`piper` (local, no cloud) or `openai` (the `openai` provider's key; sends the text)."""
    voice: str = "en_US-joe-medium"
    """Piper voice: a voice id (downloaded on first use) or the path of a `.onnx` voice."""
    speed: float = 1.0
    """Speaking rate: 1.0 is the voice's own pace, 1.25 a quarter faster, 0.8 slower."""
    openai_model: str = "gpt-4o-mini-tts"
    """OpenAI speech model (provider `openai`)."""
    openai_voice: str = "alloy"
    """OpenAI voice (provider `openai`)."""
    openai_provider: str = "openai"
    """The `[providers.<id>]` whose API key and base URL OpenAI speech uses (any server
    that speaks OpenAI's `/v1/audio/speech`)."""
    max_chars: int = 1500
    """Longer replies are cut to this many characters before they are spoken."""


@dataclass(frozen=True)
class TalkSettings:
    """The conversation loop: listen, send, speak."""

    session_key: str = "main"
    """The session spoken questions go to."""
    end_silence_ms: int = 700
    """Silence that ends an utterance, in milliseconds."""
    start_timeout_s: float = 5.0
    """After the wake word, how long to wait for the question to start, in seconds."""
    max_utterance_s: float = 20.0
    """Hard cap on one utterance, in seconds."""
    grace_ms: int = 250
    """Audio kept after the end of speech (trailing words), in milliseconds."""
    idle_timeout_s: float = 30.0
    """Talk mode ends after this many seconds without speech."""
    stop_phrases: tuple[str, ...] = ("stop", "stop talking", "goodbye", "that's all")
    """Saying one of these (alone) ends talk mode."""
    interrupt_on_speech: bool = True
    """Barge-in: speaking while a reply is played stops it and starts a new question."""
    reply_timeout_s: float = 120.0
    """How long to wait for the assistant's reply, in seconds."""


@dataclass(frozen=True)
class ChimeSettings:
    """Short sounds that say what the assistant is doing."""

    on_wake: bool = True
    """A rising chime when the wake word is heard."""
    on_send: bool = True
    """A falling chime when the question is sent."""
    volume: float = 0.25
    """Chime volume, 0 to 1."""


@dataclass(frozen=True)
class VoiceSettings:
    """Voice on this machine: wake word, transcription, speech, talk mode. Audio heard before
    the wake word is never stored or sent anywhere."""

    enabled: bool = False
    """Listen for the wake word all the time (the tray's Voice menu turns it on)."""
    input_device: str = ""
    """Microphone: a device name (or part of one) or index from `moltis voice devices`;
    empty uses the system default."""
    output_device: str = ""
    """Speakers: as `input_device`."""
    push_to_talk_shortcut: str = "Ctrl+Alt+Space"
    """Global shortcut (tray app) that starts a question without the wake word, e.g.
    "Ctrl+Alt+Space"; empty turns it off."""
    keep_audio: bool = False
    """Keep the recorded questions (never the audio before the wake word) as WAV files in
    the state directory's `voice/recordings`."""
    model_mirror: str = ""
    """Base URL to download voice models from instead of their home sites (a mirror)."""
    wake: WakeSettings = field(default_factory=WakeSettings)
    """Wake word."""
    stt: SttSettings = field(default_factory=SttSettings)
    """Transcription."""
    tts: TtsSettings = field(default_factory=TtsSettings)
    """Speech."""
    talk: TalkSettings = field(default_factory=TalkSettings)
    """The conversation loop."""
    chimes: ChimeSettings = field(default_factory=ChimeSettings)
    """Chimes."""


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
    providers: dict[str, ProviderSettings] = field(default_factory=dict)
    """LLM providers by id (`[providers.anthropic]`, `[providers.ollama]`, …)."""
    auth_profiles: dict[str, AuthProfileSettings] = field(default_factory=dict)
    """Named credentials agents can use (`agents.list[].auth_profile`)."""
    bindings: tuple[BindingSettings, ...] = ()
    """Routing of inbound messages to agents."""
    session: SessionSettings = field(default_factory=SessionSettings)
    """Conversations."""
    usage: UsageSettings = field(default_factory=UsageSettings)
    """Usage and cost."""
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    """Discovery on the local network."""
    voice: VoiceSettings = field(default_factory=VoiceSettings)
    """Voice: wake word, transcription, speech."""


RESTART_KEYS = frozenset({"gateway.bind", "gateway.port", "gateway.tls.enabled"})
"""Keys whose change rebinds the gateway's listener."""
