"""Store URLs: a plain path as a ``sqlite:///`` URL, and passwords kept out of messages."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["normalise_url", "redact", "scheme_of"]

_PASSWORDS = (
    (re.compile(r"(://[^:/@\s]*:)[^@\s]*@"), r"\1***@"),  # postgresql://user:secret@host
    (re.compile(r"(password\s*=\s*)\S+", re.IGNORECASE), r"\1***"),  # password=secret
)


def normalise_url(url: str) -> str:
    """``url``, with a plain file path turned into a ``sqlite:///`` URL."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser()}"
    return url


def scheme_of(url: str) -> str:
    """The scheme of a store URL, lower case (``sqlite`` for a plain path)."""
    return normalise_url(url).split("://", 1)[0].lower()


def redact(text: str) -> str:
    """``text`` (a URL, a connection string, an error message) with anything that looks like
    a password replaced by ``***``."""
    for pattern, replacement in _PASSWORDS:
        text = pattern.sub(replacement, text)
    return text
