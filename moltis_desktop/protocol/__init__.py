"""The OpenClaw gateway wire protocol (versions 3 and 4): frames, codes, codec, connect params."""
