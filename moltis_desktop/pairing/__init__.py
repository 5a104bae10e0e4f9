"""Device identity and pairing: signed connects, paired devices, device tokens, setup codes."""
