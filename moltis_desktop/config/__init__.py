"""Settings (defaults, file, environment, flags: merged and validated) and the secret store."""
