"""The model store: a cache of downloaded model files, shared by every kind of model
(voice's speech models, the embedded local LLM's GGUF files).

`catalog.py` has what a catalog entry must say (its files, home URLs, the Python packages
that may ship it); `manager.py` finds, downloads, verifies, assembles and removes models;
`download.py` streams files with resume and checksums; `packages.py` finds models inside
installed Python packages (whole, or split across several). Each user (voice/,
providers/local_catalog.py) keeps its own catalog and says its own words in errors (a
`Wording`).
"""
