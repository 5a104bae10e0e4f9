"""LLM providers: thin translators between our neutral message types and each wire API."""
