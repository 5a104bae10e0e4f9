"""The gateway's RPC methods, one module per area; each declares its methods' scopes."""
