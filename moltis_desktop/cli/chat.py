"""`moltis agent`, `moltis sessions`, `moltis send`, `moltis models`: the agent from a
terminal, through the running gateway."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

from moltis_desktop.cli.connect import client_for
from moltis_desktop.cli.output import print_json, run
from moltis_desktop.core.errors import MoltisError
from moltis_desktop.protocol.constants import Scope

AGENT_TIMEOUT_S = 120.0
"""How long `moltis agent` waits for the next part of the reply by default."""


def add_chat_parsers(sub: Any, client_flags: Any) -> None:
    """The subcommands of this module, added to the main parser."""
    agent = sub.add_parser("agent", help="send a message to the agent; the reply streams")
    agent.add_argument(
        "--message",
        "-m",
        required=True,
        help="the message (directives such as /think high work too)",
    )
    agent.add_argument(
        "--think",
        choices=["off", "minimal", "low", "medium", "high", "xhigh"],
        help="reasoning effort for this message",
    )
    agent.add_argument("--agent", help="agent id (default: the default agent)")
    agent.add_argument("--session", help="session key (default: the agent's main session)")
    agent.add_argument("--model", help="model for this message, as provider/model")
    client_flags(agent)
    for action in agent._actions:
        if action.dest == "timeout":  # a turn may load the local model first: wait longer
            action.default = AGENT_TIMEOUT_S
            action.help = (
                "seconds to wait for the reply while nothing arrives (default "
                f"{AGENT_TIMEOUT_S:g}, which covers loading the local model)"
            )

    sessions = sub.add_parser("sessions", help="list sessions, show or clear one")
    actions = sessions.add_subparsers(dest="sessions_command", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="sessions, newest first")
    listing.add_argument("--agent", help="only this agent's")
    listing.add_argument("--limit", type=int, default=50)
    client_flags(listing)
    history = actions.add_parser("history", help="a session's messages")
    history.add_argument("key", nargs="?", default="main", help="session key (default main)")
    history.add_argument("--limit", type=int, default=50)
    client_flags(history)
    clear = actions.add_parser("clear", help="start a session over (its transcript is archived)")
    clear.add_argument("key", nargs="?", default="main")
    client_flags(clear)

    send = sub.add_parser("send", help="deliver a message to a session (no model call)")
    send.add_argument("--to", required=True, help="session key")
    send.add_argument("--message", "-m", required=True)
    client_flags(send)

    models = sub.add_parser("models", help="the models the configured providers offer")
    models.add_argument("--refresh", action="store_true", help="ask the providers again")
    client_flags(models)


def cmd_agent(args: argparse.Namespace) -> int:
    return int(run(_agent(args)))


async def _agent(args: argparse.Namespace) -> int:
    run_id = str(uuid.uuid4())
    params: dict[str, Any] = {
        "sessionKey": args.session or "main",
        "message": args.message,
        "idempotencyKey": run_id,
    }
    if args.agent:
        params["agentId"] = args.agent
    if args.think:
        params["thinking"] = args.think
    scopes = [Scope.READ, Scope.WRITE] + ([Scope.ADMIN] if args.model else [])
    async with client_for(args, scopes) as client:
        if args.model:
            # A model for this message only: the `agent` method takes one.
            return await _agent_method(client, args, run_id)
        rid = await client.send_request("chat.send", params)
        streamed = False
        async for frame in client.frames(timeout_s=args.timeout):
            if frame.get("type") == "res" and frame.get("id") == rid and not frame.get("ok"):
                raise MoltisError(str((frame.get("error") or {}).get("message")))
            if frame.get("type") != "event":
                continue
            payload = frame.get("payload") or {}
            if payload.get("runId") != run_id:
                continue
            if frame["event"] == "agent" and payload.get("stream") == "assistant":
                delta = (payload.get("data") or {}).get("delta", "")
                if not args.json:
                    sys.stdout.write(delta)
                    sys.stdout.flush()
                streamed = True
            elif frame["event"] == "chat" and payload.get("state") in ("final", "error", "aborted"):
                return _finish(args, payload, streamed)
    return 1


def _finish(args: argparse.Namespace, payload: dict[str, Any], streamed: bool) -> int:
    state = payload.get("state")
    text = "".join(
        b.get("text", "")
        for b in (payload.get("message") or {}).get("content", [])
        if isinstance(b, dict)
    )
    if args.json:
        print_json(
            {
                "runId": payload.get("runId"),
                "state": state,
                "text": text,
                "usage": payload.get("usage"),
                "error": payload.get("errorMessage"),
            }
        )
    elif state == "final":
        print("" if streamed else text)
    if state == "error":
        print(f"moltis: {payload.get('errorMessage')}", file=sys.stderr)
        return 1
    if state == "aborted":
        print("moltis: the reply was stopped", file=sys.stderr)
        return 1
    return 0


async def _agent_method(client: Any, args: argparse.Namespace, run_id: str) -> int:
    params: dict[str, Any] = {
        "message": args.message,
        "idempotencyKey": run_id,
        "model": args.model,
    }
    for name, value in (
        ("agentId", args.agent),
        ("sessionKey", args.session),
        ("thinking", args.think),
    ):
        if value:
            params[name] = value
    rid = await client.send_request("agent", params)
    async for frame in client.frames(timeout_s=args.timeout):
        if frame.get("type") != "res" or frame.get("id") != rid:
            continue
        payload = frame.get("payload") or {}
        if payload.get("status") == "accepted":
            continue
        if not frame.get("ok"):
            raise MoltisError(str((frame.get("error") or {}).get("message")))
        text = "\n".join(p.get("text", "") for p in payload.get("result", {}).get("payloads", []))
        if args.json:
            print_json(payload)
        else:
            print(text)
        return 0
    return 1


def cmd_sessions(args: argparse.Namespace) -> int:
    action = args.sessions_command

    async def go() -> Any:
        scopes = [Scope.READ, Scope.ADMIN] if action == "clear" else [Scope.READ]
        async with client_for(args, scopes) as client:
            if action == "list":
                params: dict[str, Any] = {"limit": args.limit}
                if args.agent:
                    params["agentId"] = args.agent
                return await client.call("sessions.list", params)
            if action == "history":
                return await client.call(
                    "chat.history", {"sessionKey": args.key, "limit": args.limit}
                )
            return await client.call("sessions.reset", {"key": args.key})

    result = run(go())
    if args.json:
        print_json(result)
        return 0
    if action == "list":
        sessions = result.get("sessions", [])
        if not sessions:
            print("No sessions yet.")
        for s in sessions:
            tokens = s.get("totalTokens", 0)
            label = f"  ({s['label']})" if s.get("label") else ""
            print(f"{s['key']}{label}  {s.get('messageCount', 0)} messages, {tokens} tokens")
    elif action == "history":
        from moltis_desktop.agent.transcript import text_of

        for message in result.get("messages", []):
            text = text_of(message.get("content"))
            if message.get("role") == "toolResult":
                text = f"[{message.get('toolName')}] {text[:200]}"
            print(f"{message.get('role')}: {text}")
    else:
        print(f"Session {args.key} started over (the old transcript is archived).")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with client_for(args, [Scope.WRITE]) as client:
            return await client.call(
                "send",
                {"to": args.to, "message": args.message, "idempotencyKey": str(uuid.uuid4())},
            )

    result = run(go())
    if args.json:
        print_json(result)
    else:
        print(f"delivered to {result.get('to')}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with client_for(args, [Scope.READ]) as client:
            return await client.call("models.list", {"refresh": True} if args.refresh else {})

    result = run(go())
    models = result.get("models", [])
    if args.json:
        print_json(result)
        return 0
    if not models:
        print("No models: configure a provider (see README, Providers).")
        return 0
    for model in models:
        window = f"{model['contextWindow'] // 1000}k ctx" if model.get("contextWindow") else ""
        flags = "reasoning" if model.get("reasoning") else ""
        print(f"{model['provider']}/{model['id']:40} {window:>10} {flags}")
    return 0
