"""The agent's tools, each a plain function the `@tool` decorator describes, registered
through the plugin hooks (`tools/builtin.py` is the built-in plugin). Tools reach what they
need through typed service keys (`ToolContext.service(KEY)`), never by name."""
