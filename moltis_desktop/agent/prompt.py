"""The system prompt: identity, the workspace's bootstrap files, skills, time and channel."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOOTSTRAP_FILES = ("IDENTITY.md", "SOUL.md", "AGENTS.md", "USER.md", "TOOLS.md", "MEMORY.md")
"""Read from the agent's workspace, in this order, when present (OpenClaw's set)."""
MAX_BOOTSTRAP_CHARS = 20_000
"""Per file; longer files are cut (the model is told so)."""
MAX_SKILLS = 100


@dataclass(frozen=True)
class Skill:
    """A `SKILL.md` file: a named procedure the model can read when a task calls for it."""

    name: str
    description: str
    path: Path


def _front_matter(text: str) -> dict[str, Any]:
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    import yaml

    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def find_skills(directories: Iterable[Path]) -> list[Skill]:
    """Skills in `<dir>/<name>/SKILL.md` (and `<dir>/SKILL.md`), first name wins."""
    seen: dict[str, Skill] = {}
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*/SKILL.md")) + sorted(directory.glob("SKILL.md")):
            try:
                meta = _front_matter(path.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                continue
            name = str(meta.get("name") or path.parent.name)
            description = str(meta.get("description") or "").strip()
            if name not in seen and len(seen) < MAX_SKILLS:
                seen[name] = Skill(name, description, path)
    return list(seen.values())


@dataclass(frozen=True)
class PromptContext:
    """Everything the system prompt is built from."""

    agent_id: str
    agent_name: str
    workspace: Path
    skills_dirs: tuple[Path, ...] = ()
    channel: str = ""
    """Where the message came from (`webchat`, `telegram`, `cli`…); empty when unknown."""
    chat_type: str = ""
    extra: str = ""
    """Extra instructions from the caller (`extraSystemPrompt`)."""
    now: datetime.datetime | None = None


def build_system_prompt(ctx: PromptContext) -> str:
    """The system prompt for one turn."""
    now = ctx.now or datetime.datetime.now().astimezone()
    sections = [
        f"You are {ctx.agent_name or ctx.agent_id}, a personal assistant running in Moltis "
        "Desktop on the user's own computer. Be helpful, direct and honest; use the tools you "
        "have when they help, and say so when you cannot do something.",
        f"Current time: {now.strftime('%A %Y-%m-%d %H:%M')} ({now.tzinfo}).",
    ]
    if ctx.channel:
        where = f"This conversation happens over {ctx.channel}"
        sections.append(where + (f" ({ctx.chat_type} chat)." if ctx.chat_type else "."))
    for name in BOOTSTRAP_FILES:
        path = ctx.workspace / name
        try:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if not text:
            continue
        if len(text) > MAX_BOOTSTRAP_CHARS:
            text = text[:MAX_BOOTSTRAP_CHARS] + f"\n[… {name} is longer; the rest was cut]"
        sections.append(f"## {name}\n{text}")
    skills = find_skills([ctx.workspace / "skills", *ctx.skills_dirs])
    if skills:
        lines = [
            "## Skills",
            "Read a skill's file (its path is given) before doing a task it covers:",
        ]
        lines += [f"- {s.name}: {s.description or '(no description)'} — {s.path}" for s in skills]
        sections.append("\n".join(lines))
    if ctx.extra.strip():
        sections.append(ctx.extra.strip())
    return "\n\n".join(sections)
