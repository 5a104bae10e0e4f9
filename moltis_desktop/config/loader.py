"""Turning config text, environment variables and flags into validated `Settings`."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import msgspec

from moltis_desktop.config.settings import Settings
from moltis_desktop.core.errors import MoltisError

Format = Literal["toml", "yaml", "json"]
_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Keys that must never hold a secret value in config (the value belongs in the secret store);
# values found under them are warned about and redacted.
SECRET_KEY_NAMES = frozenset(
    {
        "token",
        "password",
        "api_key",
        "apikey",
        "secret",
        "access_token",
        "refresh_token",
        "bot_token",
        "app_token",
    }
)
ENV_PREFIX = "MOLTIS_"
# Environment variables with a meaning of their own (not config keys).
_ENV_NOT_CONFIG = frozenset(
    {
        "MOLTIS_HOME",
        "MOLTIS_CONFIG",
        "MOLTIS_URL",
        "MOLTIS_TOKEN",
        "MOLTIS_PASSWORD",
        "MOLTIS_SECRETS_PASSPHRASE",
    }
)
ENV_ALIASES: Mapping[str, str] = {
    "MOLTIS_BIND": "gateway.bind",
    "MOLTIS_PORT": "gateway.port",
    "MOLTIS_LOG_LEVEL": "logging.level",
}


class ConfigError(MoltisError):
    """The config cannot be used as it is. Says where (file, key) and what is allowed."""

    def __init__(self, message: str, *, file: Path | None = None, key: str | None = None) -> None:
        where = ""
        if file is not None:
            where = f"{file}: "
        if key:
            where += f"`{key}`: "
        super().__init__(where + message)
        self.file = file
        self.key = key
        self.detail = message


def format_for(path: Path) -> Format:
    """The config format chosen by the file's extension."""
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    if suffix == ".toml":
        return "toml"
    raise ConfigError(
        f"unknown config format {suffix!r}: use .toml, .yaml, .yml or .json", file=path
    )


def parse_text(text: str, fmt: Format, file: Path | None = None) -> dict[str, Any]:
    """Parse config text into plain dicts/lists; syntax errors name the line."""
    if not text.strip():
        return {}
    try:
        if fmt == "toml":
            import tomllib

            data: Any = tomllib.loads(text)
        elif fmt == "yaml":
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # each parser has its own exception type
        raise ConfigError(f"not valid {fmt.upper()}: {_syntax_error(exc)}", file=file) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a table/mapping, not {type(data).__name__}", file=file
        )
    return data


def _syntax_error(exc: Exception) -> str:
    """What the parser found wrong and where, without the text around it: PyYAML's messages
    quote the offending line, which may hold a secret, and this message reaches `health`,
    `config.get` and the log."""
    if not type(exc).__module__.startswith("yaml"):
        return str(exc)  # tomllib and json name the line and column only
    parts = []
    for text, mark in (
        (getattr(exc, "context", None), getattr(exc, "context_mark", None)),
        (getattr(exc, "problem", None), getattr(exc, "problem_mark", None)),
    ):
        if text:
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            parts.append(f"{text}{where}")
    return "; ".join(parts) or type(exc).__name__


def expand_env(value: Any, env: Mapping[str, str], file: Path | None = None, path: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string; `$${` stays a literal `${`."""
    if isinstance(value, str):
        if "$" not in value:
            return value

        def sub(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, default = match.group(1), match.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"environment variable {name} is not set; set it or write ${{{name}:-default}}",
                file=file,
                key=path,
            )

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {
            k: expand_env(v, env, file, f"{path}.{k}" if path else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, env, file, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """Config values from `MOLTIS_SECTION__KEY=value` variables and a few short aliases
    (`MOLTIS_PORT`, `MOLTIS_BIND`, `MOLTIS_LOG_LEVEL`); the full `__` form wins over an alias.

    Values are read as JSON when they parse as JSON (numbers, booleans, lists), else as text.
    """
    pairs: list[tuple[str, str]] = []
    for name, raw in env.items():
        if name in ENV_ALIASES:
            pairs.insert(0, (ENV_ALIASES[name], raw))
        elif name.startswith(ENV_PREFIX) and name not in _ENV_NOT_CONFIG and "__" in name:
            dotted = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            pairs.append((dotted, raw))
    out: dict[str, Any] = {}
    for dotted, raw in pairs:
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        set_dotted(out, dotted, value)
    return out


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating tables on the way."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on top of `base`: tables merge, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: tables merge, `null` deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# ------------------------------------------------------------------ validation


def _unwrap(tp: Any) -> Any:
    """The dataclass or container inside Optional/Annotated."""
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else tp
    return tp


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def type_at(path: str, root: type = Settings) -> Any:
    """The declared type at the key `path` (`a.b[0].c`), or None when there is none."""
    tp: Any = root
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        tp = _unwrap(tp)
        if token.startswith("["):
            if get_origin(tp) is not tuple:
                return None
            tp = get_args(tp)[0]
            continue
        if get_origin(tp) is dict:
            tp = get_args(tp)[1]
            continue
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            return None
        hints = _hints(tp)
        if token not in hints:
            return None
        tp = hints[token]
    return tp


def allowed_values(tp: Any) -> str:
    """A human description of what a type allows."""
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is tuple:
        element = _unwrap(get_args(tp)[0])
        if isinstance(element, type) and dataclasses.is_dataclass(element):
            return "a list of tables with keys " + ", ".join(
                f.name for f in dataclasses.fields(element)
            )
        item = allowed_values(element)
        plural = {"a string": "strings", "an integer": "integers", "a number": "numbers"}
        return "a list of " + plural.get(item, item)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "a table with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    if origin is dict:
        inner = allowed_values(get_args(tp)[1])
        return "a table of " + inner.replace("a table with keys", "tables with keys", 1)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, str(tp))


def _walk_unknown(data: Any, tp: Any, path: str) -> Iterator[tuple[str, list[str]]]:
    tp = _unwrap(tp)
    if get_origin(tp) is tuple and isinstance(data, list):
        for i, item in enumerate(data):
            yield from _walk_unknown(item, get_args(tp)[0], f"{path}[{i}]")
        return
    if get_origin(tp) is dict and isinstance(data, dict):
        for key, item in data.items():
            yield from _walk_unknown(item, get_args(tp)[1], f"{path}.{key}")
        return
    if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)) or not isinstance(data, dict):
        return
    hints = _hints(tp)
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key in hints:
            yield from _walk_unknown(value, hints[key], dotted)
        else:
            yield dotted, list(hints)


def check_keys(data: Mapping[str, Any], source: str) -> list[str]:
    """Warnings for keys the settings do not know and for secret values written in config."""
    warnings = []
    for dotted, known in _walk_unknown(dict(data), Settings, ""):
        leaf = dotted.rsplit(".", 1)[-1]
        if leaf.lower() in SECRET_KEY_NAMES:
            warnings.append(
                f"{source}: `{dotted}` looks like a secret written in plain text; it is ignored. "
                f"Store it with `moltis secrets set NAME` and refer to it by name "
                f'(e.g. `{leaf}_secret = "NAME"`).'
            )
            continue
        hint = difflib.get_close_matches(leaf, known, n=1)
        tip = f" (did you mean `{hint[0]}`?)" if hint else ""
        warnings.append(f"{source}: unknown key `{dotted}` is ignored{tip}")
    return warnings


_PATH_IN_ERROR = re.compile(r" - at `\$((?:\.[A-Za-z0-9_]+|\[\d+\]|\[\.\.\.\])*)`$")


def to_settings(data: Mapping[str, Any], file: Path | None = None) -> Settings:
    """Validate a merged config tree into `Settings`; unknown keys are left out, not refused."""
    try:
        settings = msgspec.convert(_known_only(dict(data), Settings), Settings, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH_IN_ERROR.search(text)
        key = match.group(1).lstrip(".") if match else None
        if key and "[...]" in key:
            key = _name_dict_key(dict(data), key)
        message = _PATH_IN_ERROR.sub("", text)
        if key:
            tp = type_at(key)
            if tp is not None:
                message += f"; allowed: {allowed_values(tp)}"
        raise ConfigError(message, file=file, key=key) from None
    _check_semantics(settings, file)
    return settings


def _name_dict_key(data: dict[str, Any], key: str) -> str:
    """msgspec reports a value inside a table of tables as `providers[...]`; find which."""
    head, _, rest = key.partition("[...]")
    container: Any = data
    for part in head.split("."):
        container = container.get(part, {}) if isinstance(container, dict) else {}
    item_type = _unwrap(type_at(head))
    if isinstance(container, dict) and get_origin(item_type) is dict:
        for name, value in container.items():
            try:
                msgspec.convert(
                    _known_only(value, get_args(item_type)[1]), get_args(item_type)[1], strict=False
                )
            except msgspec.ValidationError:
                return f"{head}.{name}{rest}"
    return key.replace("[...]", ".*")


def _known_only(data: Any, tp: Any) -> Any:
    tp = _unwrap(tp)
    if get_origin(tp) is tuple and isinstance(data, list):
        return [_known_only(item, get_args(tp)[0]) for item in data]
    if get_origin(tp) is dict and isinstance(data, dict):
        return {k: _known_only(v, get_args(tp)[1]) for k, v in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(data, dict):
        hints = _hints(tp)
        return {k: _known_only(v, hints[k]) for k, v in data.items() if k in hints}
    return data


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_semantics(settings: Settings, file: Path | None) -> None:
    gw = settings.gateway
    if not 0 <= gw.port <= 65535:
        raise ConfigError(
            f"{gw.port} is not a TCP port; allowed: 0-65535 (0 picks a free port)",
            file=file,
            key="gateway.port",
        )
    for key, value, low in (
        ("gateway.max_payload", gw.max_payload, 1024),
        ("gateway.max_buffered_bytes", gw.max_buffered_bytes, 64 * 1024),
        ("gateway.tick_interval_ms", gw.tick_interval_ms, 100),
        ("gateway.handshake_timeout_ms", gw.handshake_timeout_ms, 100),
        ("gateway.max_inflight_per_connection", gw.max_inflight_per_connection, 1),
        ("gateway.health_refresh_ms", gw.health_refresh_ms, 100),
        ("gateway.http.header_timeout_ms", gw.http.header_timeout_ms, 100),
        ("gateway.http.keepalive_timeout_ms", gw.http.keepalive_timeout_ms, 100),
    ):
        if value < low:
            raise ConfigError(f"{value} is too small; allowed: at least {low}", file=file, key=key)
    for proxy in gw.trusted_proxies:
        try:
            ipaddress.ip_network(proxy.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"{proxy!r} is not an IP address or network; allowed: `127.0.0.1`, `::1`, "
                "`10.0.0.0/8`…",
                file=file,
                key="gateway.trusted_proxies",
            ) from None
    for host in gw.allowed_hosts:
        name = host.strip().lstrip("*").strip("[]")
        if not name or (any(c in name for c in "/:@ \t") and not _is_address(name)):
            raise ConfigError(
                f"{host!r} is not a host name; allowed: `gw.example.org` or `.example.org` "
                "(no scheme, port or path)",
                file=file,
                key="gateway.allowed_hosts",
            )
    ids = [a.id for a in settings.agents.list]
    if settings.agents.default not in ids:
        raise ConfigError(
            f"no agent with id {settings.agents.default!r}; allowed: one of "
            f"{', '.join(map(repr, ids)) or '(no agents defined)'}",
            file=file,
            key="agents.default",
        )
