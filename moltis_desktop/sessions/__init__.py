"""Conversations: session keys, the per-agent session index and transcripts, the usage ledger."""
