"""The base of every error meant for a user: its message says what to do."""

from __future__ import annotations


class MoltisError(Exception):
    """An error a user can act on.

    The message is shown as it is (CLI, logs, gateway error frames), so it must say what
    went wrong and what to do about it.
    """

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
