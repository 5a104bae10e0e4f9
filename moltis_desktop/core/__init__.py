"""Lowest layer: paths, logging, clock, atomic files and the user-facing error base."""
