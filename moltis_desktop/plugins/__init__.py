"""Plugins: hook specifications and the plugin manager (built-ins register the same way)."""
