"""Slash directives and commands in a message (`/think high`, `/reset`, `#think`, …).

Directives change how the turn runs and are stripped before the model sees the message; in
a message made only of directives they persist on the session. Commands (`/reset`,
`/status`, …) are answered by the gateway itself, without a model call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from moltis_desktop.providers.base import THINKING_LEVELS

DIRECTIVES = ("think", "verbose", "model", "exec")
COMMANDS = ("reset", "new", "compact", "status", "usage", "stop", "help")
_ALIASES = {"t": "think", "thinking": "think", "v": "verbose", "models": "model"}
_VERBOSE = ("on", "full", "off")
_USAGE = ("off", "tokens", "full", "cost")
# `/name` or `#name` at the start of the message or after whitespace, optional `:`, then an
# optional argument (a single word, except for commands taking free text).
_TOKEN = re.compile(r"(?:(?<=\s)|^)[/#](?P<name>[A-Za-z][A-Za-z_-]*):?(?=\s|$)")
_FREE_TEXT = ("compact", "exec")

HELP_TEXT = """Directives (affect this message; alone in a message they stick to the session):
  /think off|minimal|low|medium|high|xhigh   reasoning effort (also /t, #think)
  /verbose on|full|off                        show tool calls in replies (/v)
  /model provider/model                       use another model
  /exec host=… security=… ask=…               how shell commands run (#exec)
Commands:
  /new [model]   start a new session      /reset   same, keeping the model
  /compact [how] summarise older turns    /status  session and model state
  /usage [off|tokens|full|cost]           /stop    stop the running reply
  /help          this text"""


class DirectiveError(ValueError):
    """A directive with a value it does not take; the message says what it takes."""


@dataclass(frozen=True)
class Directive:
    name: str
    value: str = ""


@dataclass(frozen=True)
class ParsedMessage:
    """A message split into what the model sees and what the gateway acts on."""

    text: str
    """The message without its directives and commands (what the model gets)."""
    directives: tuple[Directive, ...] = ()
    commands: tuple[Directive, ...] = ()
    errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def directive_only(self) -> bool:
        """Nothing is left for the model: settings persist, no model call happens."""
        return not self.text.strip() and bool(self.directives or self.commands)

    def value(self, name: str) -> str | None:
        """The last value given for directive `name`, if any."""
        for directive in reversed(self.directives):
            if directive.name == name:
                return directive.value
        return None


def _check(name: str, value: str) -> str:
    if name == "think":
        level = value.lower() or "medium"
        if level in ("on", "true"):
            level = "medium"
        if level not in THINKING_LEVELS:
            raise DirectiveError(f"/think takes one of {', '.join(THINKING_LEVELS)}")
        return level
    if name == "verbose":
        mode = value.lower() or "on"
        if mode not in _VERBOSE:
            raise DirectiveError("/verbose takes on, full or off")
        return mode
    if name == "model" and not value:
        raise DirectiveError("/model takes a model, e.g. /model anthropic/claude-sonnet-4-5")
    if name == "exec":
        exec_options(value)  # validates
        return value
    if name == "usage" and value and value.lower() not in _USAGE:
        raise DirectiveError("/usage takes off, tokens, full or cost")
    return value


_EXEC_KEYS = {
    "host": ("sandbox", "gateway", "node"),
    "security": ("deny", "allowlist", "full"),
    "ask": ("off", "on-miss", "always"),
    "node": (),
}


def exec_options(value: str) -> dict[str, str]:
    """`/exec host=gateway security=allowlist ask=on-miss node=<id>` as a dict."""
    options: dict[str, str] = {}
    for word in value.split():
        key, _, val = word.partition("=")
        if key not in _EXEC_KEYS or not val:
            raise DirectiveError(
                "/exec takes host=sandbox|gateway|node security=deny|allowlist|"
                "full ask=off|on-miss|always node=<id>"
            )
        allowed = _EXEC_KEYS[key]
        if allowed and val not in allowed:
            raise DirectiveError(f"/exec {key}= takes {', '.join(allowed)}")
        options[key] = val
    return options


def parse(message: str) -> ParsedMessage:
    """Find directives and commands anywhere in the message (`/think: high` works too)."""
    directives: list[Directive] = []
    commands: list[Directive] = []
    errors: list[str] = []
    kept: list[str] = []
    pos = 0
    matches = list(_TOKEN.finditer(message))
    for i, match in enumerate(matches):
        raw = match.group("name").lower()
        name = _ALIASES.get(raw, raw)
        if name not in DIRECTIVES and name not in COMMANDS:
            continue
        if match.group(0).startswith("#") and name not in ("think", "exec", "reset"):
            continue  # `#hashtags` are text; only the documented `#` forms are directives
        kept.append(message[pos : match.start()])
        end = match.end()
        value = ""
        rest = message[end:]
        if name in _FREE_TEXT:
            stop = matches[i + 1].start() if i + 1 < len(matches) else len(message)
            value = message[end:stop].strip()
            end = stop
        elif name in ("think", "verbose", "model", "new", "usage"):
            arg = re.match(r"\s+([^\s/#]\S*)", rest)
            if arg:
                value = arg.group(1)
                end += arg.end()
        pos = end
        try:
            value = _check(name, value)
        except DirectiveError as exc:
            errors.append(str(exc))
            continue
        (directives if name in DIRECTIVES else commands).append(Directive(name, value))
    kept.append(message[pos:])
    text = re.sub(r"[ \t]{2,}", " ", "".join(kept)).strip()
    return ParsedMessage(text, tuple(directives), tuple(commands), tuple(errors))
