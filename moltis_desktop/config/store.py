"""The config file as the gateway sees it: raw text + hash, validated writes, hot reload."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moltis_desktop.config.loader import (
    SECRET_KEY_NAMES,
    ConfigError,
    Format,
    check_keys,
    deep_merge,
    env_overrides,
    expand_env,
    format_for,
    merge_patch,
    parse_text,
    to_settings,
)
from moltis_desktop.config.settings import RESTART_KEYS, Settings
from moltis_desktop.core.atomic import atomic_write_text
from moltis_desktop.core.clock import SYSTEM_CLOCK, Clock
from moltis_desktop.core.logging import REDACTOR

_LOGGER = logging.getLogger(__name__)

REDACTED_SENTINEL = "__OPENCLAW_REDACTED__"
"""What a secret value written in config looks like in `config.get` (OpenClaw's own marker,
so that OpenClaw clients that round-trip it keep working)."""


class ConfigConflictError(ConfigError):
    """The file changed since the caller read it (`baseHash` is stale)."""


@dataclass(frozen=True)
class ConfigSnapshot:
    """One loaded, valid state of the config."""

    path: Path
    """The config file."""
    format: Format
    """Its format, from the extension."""
    exists: bool
    """Whether the file exists (defaults apply when it does not)."""
    raw: str
    """The file's text (empty when it does not exist)."""
    hash: str
    """sha256 of `raw`, hex; the `baseHash` writers must present."""
    parsed: dict[str, Any]
    """The file parsed, before `${VAR}` expansion."""
    settings: Settings
    """The effective settings: defaults, file, environment and flags."""
    warnings: tuple[str, ...] = ()
    """Unknown keys and other things worth telling the user."""
    loaded_at_ms: int = 0
    """When this snapshot was loaded (ms since the epoch)."""
    source: str = "file"
    """`file`, or `last-good` / `defaults` when the file is broken."""
    effective: dict[str, Any] = field(default_factory=dict)
    """`settings` as plain data."""


@dataclass(frozen=True)
class _FileStamp:
    mtime_ns: int
    size: int
    inode: int


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    """Settings as plain JSON-ready data (every field, defaults included)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    # dataclasses.asdict, not msgspec.to_builtins: msgspec leaves untouched defaults on the
    # class, and to_builtins then skips them.
    result: dict[str, Any] = plain(dataclasses.asdict(settings))
    return result


def text_hash(raw: str) -> str:
    """The hash of a config text, as `config.get` reports it."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


Listener = Callable[[ConfigSnapshot, ConfigSnapshot], None]


class ConfigStore:
    """Owns the config file.

    Holds the last good snapshot; a broken file (at start or edited while running) never
    replaces it: the error is kept in `error` for `health` and the log. Writes are validated
    first, checked against `baseHash`, then written atomically with a `.bak` copy.
    """

    def __init__(
        self,
        path: Path,
        *,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self._read_only = read_only
        self.format = format_for(self.path)
        self._env = dict(os.environ if env is None else env)
        self._overrides = dict(overrides or {})
        self._clock = clock
        self._listeners: list[Listener] = []
        self._stamp: _FileStamp | None = None
        self.error: ConfigError | None = None
        if not read_only:
            self._remove_stale_temp_files()
        self.current = self._load_initial()

    # ------------------------------------------------------------------ loading

    def _remove_stale_temp_files(self) -> None:
        # Temp files of atomic writes interrupted by a crash (the real file is intact). Only
        # old ones: a fresh one may belong to another process writing right now.
        cutoff = time.time() - 60
        for stale in self.path.parent.glob(f".*{self.path.name}*.tmp"):
            with contextlib.suppress(OSError):
                if stale.stat().st_mtime < cutoff:
                    stale.unlink()

    @property
    def last_good_path(self) -> Path:
        """Where the last text that loaded cleanly is kept, for starts with a broken file."""
        return self.path.with_name(f".{self.path.name}.last-good")

    def _read(self) -> tuple[bool, str]:
        try:
            stat = self.path.stat()
            self._stamp = _FileStamp(stat.st_mtime_ns, stat.st_size, stat.st_ino)
            return True, self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._stamp = None
            return False, ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the config file: {exc}", file=self.path) from None

    def build(self, raw: str, *, exists: bool = True, source: str = "file") -> ConfigSnapshot:
        """Parse and validate `raw` as this store's file would be; raise `ConfigError`."""
        parsed = parse_text(raw, self.format, self.path)
        expanded = expand_env(parsed, self._env, self.path)
        from_env = env_overrides(self._env)
        tree = deep_merge(deep_merge(expanded, from_env), self._overrides)
        warnings = check_keys(expanded, str(self.path)) + check_keys(from_env, "environment")
        # The file must hold up on its own, not only with today's flags laid over it.
        to_settings(expanded, self.path)
        settings = to_settings(tree, self.path)
        return ConfigSnapshot(
            path=self.path,
            format=self.format,
            exists=exists,
            raw=raw,
            hash=text_hash(raw),
            parsed=parsed,
            settings=settings,
            warnings=tuple(warnings),
            loaded_at_ms=self._clock.now_ms(),
            source=source,
            effective=settings_as_dict(settings),
        )

    def _load_initial(self) -> ConfigSnapshot:
        try:
            exists, raw = self._read()
            snap = self.build(raw, exists=exists)
        except ConfigError as exc:
            self.error = exc
            if not self._read_only:
                _LOGGER.error("config is broken, starting with the last good one: %s", exc)
            return self._fallback()
        self._remember_good(snap)
        if not self._read_only:
            self._log_warnings(snap)
        return snap

    def _fallback(self) -> ConfigSnapshot:
        try:
            raw = self.last_good_path.read_text(encoding="utf-8")
            return self.build(raw, source="last-good")
        except (OSError, ConfigError):
            return self.build("", exists=self.path.exists(), source="defaults")

    def _remember_good(self, snap: ConfigSnapshot) -> None:
        if not snap.exists or self._read_only:
            return
        try:
            if (
                not self.last_good_path.exists()
                or self.last_good_path.read_text(encoding="utf-8") != snap.raw
            ):
                atomic_write_text(self.last_good_path, snap.raw)
        except OSError as exc:  # a read-only config dir must not stop anything
            _LOGGER.warning("cannot keep a last-good copy of the config: %s", exc)

    def _log_warnings(self, snap: ConfigSnapshot) -> None:
        for warning in snap.warnings:
            _LOGGER.warning("%s", warning)

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(old, new)` after every change of the effective config."""
        self._listeners.append(listener)

    def reload(self) -> bool:
        """Re-read the file. Returns True when the effective config changed.

        A broken file sets `error` and keeps the current snapshot.
        """
        try:
            exists, raw = self._read()
            snap = self.build(raw, exists=exists)
        except ConfigError as exc:
            if self.error is None or str(self.error) != str(exc):
                _LOGGER.error("config change rejected, keeping the last good config: %s", exc)
            self.error = exc
            return False
        if self.error is not None:
            _LOGGER.info("config is valid again: %s", self.path)
        self.error = None
        self._remember_good(snap)
        return self._swap(snap)

    def _swap(self, snap: ConfigSnapshot) -> bool:
        old = self.current
        self.current = snap
        if snap.raw == old.raw and snap.effective == old.effective and old.source == "file":
            return False
        self._log_warnings(snap)
        _LOGGER.info("config loaded from %s", self.path)
        for listener in list(self._listeners):
            try:
                listener(old, snap)
            except Exception:
                _LOGGER.exception("config listener failed")
        return True

    def changed_on_disk(self) -> bool:
        """Whether the file differs (mtime, size, inode, presence) from what was last read."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return self._stamp is not None
        except OSError:
            return False
        return self._stamp != _FileStamp(stat.st_mtime_ns, stat.st_size, stat.st_ino)

    async def watch(self, interval_s: float = 1.0) -> None:
        """Reload whenever the file changes on disk, until cancelled.

        Polls `stat()` rather than using inotify & co: it is a few microseconds a second,
        works the same on every OS, and sees editors' and our own atomic renames.
        """
        while True:
            await asyncio.sleep(interval_s)
            if self.changed_on_disk():
                self.reload()

    # ------------------------------------------------------------------ writing

    def _check_base(self, base_hash: str | None) -> str:
        _exists, raw = self._read()
        if base_hash is not None and base_hash != text_hash(raw):
            raise ConfigConflictError(
                "the config changed since it was read (baseHash is stale); read it again "
                "(config.get) and retry",
                file=self.path,
            )
        return raw

    def write_raw(self, raw: str, base_hash: str | None = None) -> ConfigSnapshot:
        """Validate `raw` and make it the config file; returns the new snapshot."""
        current_raw = self._check_base(base_hash)
        raw = restore_redacted(raw, current_raw, self.format)
        snap = self.build(raw)
        atomic_write_text(self.path, raw, backup=True)
        self._read()
        self.error = None
        self._remember_good(snap)
        self._swap(snap)
        return snap

    def patch(self, patch: Mapping[str, Any], base_hash: str | None = None) -> ConfigSnapshot:
        """Apply a JSON merge patch (`null` deletes a key) to the file, keeping its comments
        and layout where the format allows (TOML)."""
        current_raw = self._check_base(base_hash)
        return self.write_raw(
            apply_patch_to_text(current_raw, patch, self.format), text_hash(current_raw)
        )

    @staticmethod
    def restart_keys(old: Settings, new: Settings) -> list[str]:
        """The changed keys that need the listener rebound (`RESTART_KEYS`)."""

        def get(settings: Settings, dotted: str) -> Any:
            value: Any = settings
            for part in dotted.split("."):
                value = getattr(value, part)
            return value

        return [key for key in sorted(RESTART_KEYS) if get(old, key) != get(new, key)]


# ---------------------------------------------------------------------- text helpers


def apply_patch_to_text(raw: str, patch: Mapping[str, Any], fmt: Format) -> str:
    """`raw` with a merge patch applied, re-serialised in the same format."""
    if fmt == "toml":
        import tomlkit

        doc = tomlkit.parse(raw)
        _patch_toml(doc, patch)
        return tomlkit.dumps(doc)
    current = parse_text(raw, fmt)
    merged = merge_patch(current, patch)
    if fmt == "yaml":
        import yaml

        return str(yaml.safe_dump(merged, sort_keys=False, allow_unicode=True))
    return json.dumps(merged, indent=2, ensure_ascii=False) + "\n"


def _patch_toml(node: Any, patch: Mapping[str, Any]) -> None:
    import tomlkit

    for key, value in patch.items():
        if value is None:
            if key in node:
                del node[key]
        elif isinstance(value, Mapping):
            if key not in node or not isinstance(node[key], dict):
                node[key] = tomlkit.table()
            _patch_toml(node[key], value)
            if len(node[key]) == 0:
                del node[key]
        else:
            node[key] = value


def _secret_values(tree: Any) -> list[str]:
    out: list[str] = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if str(key).lower() in SECRET_KEY_NAMES and isinstance(value, str) and value:
                out.append(value)
            else:
                out.extend(_secret_values(value))
    elif isinstance(tree, list):
        for item in tree:
            out.extend(_secret_values(item))
    return out


def redact_text(raw: str, fmt: Format) -> str:
    """`raw` with every secret value written in it replaced by the redaction marker.

    A file that parses is redacted by its tree (the values of `SECRET_KEY_NAMES` keys); one
    that does not is redacted line by line (`redact_broken_text`).
    """
    try:
        values = _secret_values(parse_text(raw, fmt))
    except ConfigError:
        return redact_broken_text(raw)
    for value in sorted(set(values), key=len, reverse=True):
        raw = raw.replace(value, REDACTED_SENTINEL)
    return raw


# ---------------------------------------------------------------------- a broken file

# Key names whose value is hidden in a file that does not parse: broader than
# SECRET_KEY_NAMES (compared without `_`/`-` and by their ending), since hiding a harmless
# value there costs nothing (the round trip puts it back).
_SECRET_KEY_ENDINGS = (
    *(name.replace("_", "") for name in SECRET_KEY_NAMES),
    "passwd", "passphrase", "privatekey", "accesskey", "secretkey", "signingkey",
    "clientsecret", "credential", "credentials", "cookie", "authorization", "bearer",
)  # fmt: skip
# A key (bare, possibly dotted, or quoted) and its `=` or `:`, at the start of a line or
# after a separator (`{`, `,`, `[`, a YAML list's `- `).
_KEY = re.compile(
    r"""(?:^|(?<=[\s{,\[]))(?:"(?P<dq>[^"\n]*)"|'(?P<sq>[^'\n]*)'|(?P<bare>[A-Za-z0-9_.\-]+))"""
    r"[ \t]*[:=](?![:=])[ \t]*",
    re.MULTILINE,
)
_B = r"(?<![A-Za-z0-9_\-])"  # not in the middle of a word
_TOKEN_SHAPES = re.compile(
    "|".join(
        (
            _B + r"sk-[A-Za-z0-9_\-]{16,}",  # OpenAI, Anthropic (sk-ant-…), OpenRouter, …
            _B + r"xox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack
            _B + r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",  # GitHub
            _B + r"glpat-[A-Za-z0-9_\-]{20,}",  # GitLab
            _B + r"AIza[0-9A-Za-z_\-]{30,}",  # Google
            _B + r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key ids
            _B + r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWTs
            _B + r"\d{6,12}:[A-Za-z0-9_\-]{30,}",  # Telegram bot tokens
            _B + r"[0-9a-fA-F]{32,}(?![A-Za-z0-9])",  # long hex
        )
    )
)
# A long run of base64-ish characters as a whole value (after `=` or `:`, maybe quoted).
_OPAQUE_VALUE = re.compile(r"""[=:][ \t]*["']?([A-Za-z0-9+/_\-]{32,}={0,2})(?![A-Za-z0-9+/_\-=])""")


def _secret_looking_key(name: str) -> bool:
    flat = name.rsplit(".", 1)[-1].lower().replace("_", "").replace("-", "")
    return flat.endswith(_SECRET_KEY_ENDINGS)


def _quoted_end(raw: str, start: int, quote: str) -> int:
    """Where the string opened at `start` ends (its closing quote), or the end of the line
    when it is not closed there."""
    line_end = raw.find("\n", start)
    line_end = len(raw) if line_end < 0 else line_end
    i = start + 1
    while i < line_end:
        if quote == '"' and raw[i] == "\\":
            i += 2
            continue
        if raw[i] == quote:
            return i
        i += 1
    return line_end


def _block_end(raw: str, key_start: int, value_start: int) -> int:
    """The end of the lines below a key that are indented deeper than its line (a YAML
    block scalar, a nested block, or a value continued on the next lines)."""
    line_start = raw.rfind("\n", 0, key_start) + 1
    head = raw[line_start:key_start]
    indent = len(head) - len(head.lstrip(" \t"))
    pos = raw.find("\n", value_start)
    last = len(raw) if pos < 0 else pos
    while 0 <= pos < len(raw):
        next_nl = raw.find("\n", pos + 1)
        next_nl = len(raw) if next_nl < 0 else next_nl
        line = raw[pos + 1 : next_nl]
        if line.strip():
            if len(line) - len(line.lstrip(" \t")) <= indent:
                break
            last = next_nl
        pos = next_nl
    return last


def _value_span(raw: str, key_start: int, start: int) -> tuple[int, int]:
    """The span of the value that starts at `start`, without its quotes."""
    rest = raw[start : start + 3]
    if rest in ('"""', "'''"):
        close = raw.find(rest, start + 3)
        return start + 3, len(raw) if close < 0 else close
    if rest[:1] in ('"', "'"):
        return start + 1, _quoted_end(raw, start, rest[0])
    line_end = raw.find("\n", start)
    line_end = len(raw) if line_end < 0 else line_end
    text = raw[start:line_end].rstrip()
    if text in ("", "|", ">", "|-", ">-", "|+", ">+"):
        return start, _block_end(raw, key_start, start)
    return start, start + len(text.rstrip(","))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def broken_secret_spans(raw: str) -> list[tuple[int, int]]:
    """Where the secrets of a config text that does not parse probably are, in order:
    the values of secret-looking keys (TOML `key = "v"`, YAML `key: v` and block scalars,
    JSON `"key": "v"`, JSON5 `key: 'v'`), every value the process knows as a secret
    (`REDACTOR`), well-known token shapes (`sk-…`, `xoxb-…`, `ghp_…`, `AIza…`, JWTs, long
    hex) and long opaque values of any key."""
    spans = list(REDACTOR.spans(raw))
    for match in _KEY.finditer(raw):
        key = match.group("dq") or match.group("sq") or match.group("bare") or ""
        if _secret_looking_key(key):
            spans.append(_value_span(raw, match.start(), match.end()))
    spans.extend(m.span() for m in _TOKEN_SHAPES.finditer(raw))
    for match in _OPAQUE_VALUE.finditer(raw):
        value = match.group(1)
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            spans.append(match.span(1))
    return _merge(spans)


def redact_broken_text(raw: str) -> str:
    """A config text that does not parse, with `broken_secret_spans` replaced by the
    redaction marker (restored by `restore_redacted` when the text is written back)."""
    out, last = [], 0
    for start, end in broken_secret_spans(raw):
        out.append(raw[last:start])
        out.append(REDACTED_SENTINEL)
        last = end
    out.append(raw[last:])
    return "".join(out)


def redact_tree(tree: Any) -> Any:
    """A copy of a config tree with secret values replaced by the redaction marker."""
    if isinstance(tree, dict):
        return {
            k: (
                REDACTED_SENTINEL
                if str(k).lower() in SECRET_KEY_NAMES and isinstance(v, str) and v
                else redact_tree(v)
            )
            for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [redact_tree(v) for v in tree]
    return tree


def restore_redacted(raw: str, current_raw: str, fmt: Format) -> str:
    """Put back the secret values a client saw as the redaction marker (config.get → edit →
    config.set round trips)."""
    count = raw.count(REDACTED_SENTINEL)
    if not count:
        return raw
    try:
        current = parse_text(current_raw, fmt)
    except ConfigError:
        # The file was broken when it was read: it was redacted line by line.
        ordered = [current_raw[start:end] for start, end in broken_secret_spans(current_raw)]
    else:
        values = sorted(set(_secret_values(current)), key=current_raw.find)
        positions = sorted(
            (pos, value) for value in values for pos in _find_all(current_raw, value)
        )
        ordered = [value for _pos, value in positions]
    if len(ordered) == count:
        for value in ordered:
            raw = raw.replace(REDACTED_SENTINEL, value, 1)
        return raw
    raise ConfigError(
        f"the new config holds {count} redacted placeholder(s) ({REDACTED_SENTINEL}) that do "
        "not match the current file; read the config again (config.get) and edit that"
    )


def _find_all(text: str, needle: str) -> list[int]:
    out, start = [], 0
    while (pos := text.find(needle, start)) >= 0:
        out.append(pos)
        start = pos + len(needle)
    return out
