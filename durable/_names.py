"""The one rule for run ids and signal names, the same for every store: non-empty text of at
most `MAX_NAME_LENGTH` characters without control characters. Checked before any store is
touched: Postgres cuts text at a NUL (two ids would become one run), and an id of megabytes
would be written into every index entry."""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_NAME_LENGTH", "check_name", "check_text"]

MAX_NAME_LENGTH = 255
"""The longest run id or signal name, in characters."""


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a valid id or name; ``what`` says which, in messages (e.g.
    ``"durable.run(..., id=...)"``).

    Raises:
        ValueError: too long, or it holds a control character (NUL, newline...) or a lone
            surrogate (which no database can store).
    """
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(
            f"{what} is {len(value)} characters long ({value[:40]!r}...); ids and signal names "
            f"may be at most {MAX_NAME_LENGTH} characters: use a shorter key (a hash of a long "
            "one, for example)"
        )
    return check_text(value, what)


def check_text(value: str, what: str) -> str:
    """Return ``value`` if it holds no control character or lone surrogate (any length).

    Raises:
        ValueError: it does.
    """
    for position, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(
                f"{what} {value[:60]!r} holds the character {char!r} at position {position}; "
                "ids and signal names may not contain control characters (Postgres cuts text "
                "at a NUL, so two ids would become one run): remove it"
            )
    return value
