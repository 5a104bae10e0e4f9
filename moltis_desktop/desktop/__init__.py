"""The desktop shell: the only package that may import Qt (PySide6, qasync)."""
