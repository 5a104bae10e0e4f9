"""Moltis Desktop: a personal AI gateway as a native desktop app."""

__version__ = "0.1.0"
