"""The error types the plugin reports as one clear line, and the words those lines share.

Messages about a file never quote its content back: a path given by mistake (``/etc/shadow``
as a template) must not end up in a CI log. Keys that are not plain names are described by
their length, values are never shown. Reading and validating files lives in :mod:`.load`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class PromptsweepError(Exception):
    """Base class for errors the plugin reports to the user as one clear line."""


class ConfigError(PromptsweepError):
    """Bad input: a suite, template, dataset or search-space file that cannot be used."""


class EndpointError(PromptsweepError):
    """The LLM endpoint cannot be used (unreachable, not OpenAI-compatible)."""


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]{0,47}$")


def safe_key(part: object) -> str:
    """A key as it may appear in a message: plain names as they are, anything else by length."""
    if isinstance(part, int):
        return str(part)
    text = str(part)
    return text if _PLAIN_KEY.match(text) else f"<a key of {len(text)} characters>"


def short_repr(value: object, width: int = 40) -> str:
    """``repr`` of a user value cut to ``width`` characters, for validator messages."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """``"; did you mean 'weight'?"`` for a close match among ``known``, else ``""``."""
    matches = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


def unknown_name_hint(word: str, known: Iterable[str], *, what: str = "keys", limit: int = 12) -> str:
    """A "did you mean" when one is close, else the list of what is allowed (shortened)."""
    names = sorted(set(known))
    hint = did_you_mean(word, names)
    if hint:
        return hint
    if not names:
        return ""
    shown = ", ".join(names[:limit]) + (", …" if len(names) > limit else "")
    return f"; known {what}: {shown}"
