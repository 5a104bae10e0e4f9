"""Admitting a connection: `common` holds what every credential's admission shares."""
