"""Admitting a connection, one module per credential.

`common` (what every credential's admission shares: the request, the outcome, the rejection,
the auth errors, the throttle check and the device proof) is the lowest; `device_pairing`
(pairing at connect) builds on it; `shared_secret`, `device_token` and `bootstrap_token`
build on both and never import each other. `gateway/handshake.py` imports them and decides
which one a `connect` goes through; nothing here imports it.
"""
