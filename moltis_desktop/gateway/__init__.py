"""The gateway: aiohttp server, the OpenClaw WebSocket protocol, methods, broadcast, HTTP."""
