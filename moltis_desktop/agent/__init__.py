"""The agent: the tool-calling loop, the tool registry, prompts, directives, routing."""
