"""Test support: a schema-validating protocol client, fake keyrings, gateway processes."""
