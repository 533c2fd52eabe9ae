"""What every review module shares: the refusal type, text cleaning and the queue projection.

Kept apart from ``workbench`` and ``appeals`` so that each can import it without importing the other.
"""

from __future__ import annotations

from server.errors import PrecertError

LIST_FIELDS = {"request": 0, "response": 0}


class ReviewError(PrecertError):
    """A refusal of a review action, with an HTTP status and a message for people (its code follows
    from the status)."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(status, message, code)


def clean_text(value, limit: int) -> str:
    """Text from a form or JSON: a string, control characters other than newlines and tabs removed,
    cut to ``limit``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ReviewError(400, "text fields must be strings")
    return "".join(ch for ch in value if ch in "\n\t" or ord(ch) >= 32).strip()[:limit]
