"""What ``promptsweep init --data FILE`` proposes from the user's own records: the id key, the
keys the model reads (inputs) and the fields it answers, with label values taken from the data.

Pure logic over the records (no files written, nothing asked): every choice comes with a note
saying why, and the keys it had to guess are marked ``unsure`` so the command asks about them
on a terminal, or says what it picked elsewhere.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from promptsweep.core.data.dataset import RawRecord, infer_id_field

Role = Literal["input", "label", "text", "skip"]

# Key names that say which side of the task a free-text column is on (matched per `_` part).
INPUT_WORDS = frozenset(
    [
        "text",
        "body",
        "message",
        "question",
        "input",
        "inputs",
        "log",
        "logs",
        "line",
        "content",
        "description",
        "subject",
        "title",
        "prompt",
        "query",
        "ticket",
        "email",
        "mail",
        "document",
        "doc",
        "context",
        "transcript",
        "review",
        "comment",
        "request",
        "issue",
        "snippet",
        "code",
        "source",
        "chat",
        "conversation",
        "utterance",
        "sentence",
        "passage",
        "article",
        "post",
        "tweet",
        "note",
        "notes",
        "error",
        "trace",
    ]
)
OUTPUT_WORDS = frozenset(
    [
        "reply",
        "answer",
        "response",
        "summary",
        "output",
        "expected",
        "resolution",
        "explanation",
        "rationale",
        "target",
        "completion",
        "fix",
        "action",
        "suggestion",
        "solution",
        "result",
        "gold",
        "reference",
        "verdict",
    ]
)
# Few-valued keys that usually describe the input rather than ask for an answer.
CONTEXT_WORDS = frozenset(
    [
        "namespace",
        "service",
        "channel",
        "language",
        "lang",
        "locale",
        "product",
        "customer",
        "user",
        "author",
        "source",
        "host",
        "region",
        "env",
        "environment",
        "platform",
        "version",
        "date",
        "time",
        "timestamp",
        "created",
        "updated",
        "url",
    ]
)
_IDENTIFIER = re.compile(r"^\S{1,80}$")
_WORD = re.compile(r"[^\W_]+")
MAX_LABEL_VALUES = 20
MAX_LABEL_WORDS = 4
MAX_LABEL_CHARS = 40
RESTATES_SHARE = 0.6
"""A free-text key restates an input when, on average, this share of its words are in that input."""


@dataclass(frozen=True)
class Column:
    """One top-level key of the records, summarised."""

    key: str
    values: tuple[str, ...]
    present: int
    scalar: bool

    @property
    def distinct(self) -> int:
        return len(set(self.values))

    @property
    def avg_chars(self) -> float:
        return sum(len(v) for v in self.values) / len(self.values) if self.values else 0.0

    @property
    def max_words(self) -> int:
        return max((len(v.split()) for v in self.values), default=0)

    @property
    def words(self) -> set[str]:
        return {part for part in re.split(r"[_\-\s]+|(?<=[a-z])(?=[A-Z])", self.key.lower()) if part}

    def counts(self) -> Counter[str]:
        return Counter(self.values)

    def example(self, width: int = 40) -> str:
        text = self.values[0] if self.values else ""
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"

    def describe(self) -> str:
        return f"{self.distinct} distinct values in {self.present} records, e.g. {self.example()!r}"


@dataclass
class Choice:
    """What a key becomes, why, and whether that was a guess."""

    column: Column
    role: Role
    why: str
    unsure: bool = False
    values: tuple[str, ...] = ()


@dataclass
class Proposal:
    """The id key, and one choice per other key, in the data's own key order."""

    records: int
    id_field: str | None
    id_why: str
    choices: list[Choice] = field(default_factory=list)

    def role_of(self, key: str) -> Role | None:
        return next((c.role for c in self.choices if c.column.key == key), None)

    @property
    def unsure(self) -> list[Choice]:
        return [c for c in self.choices if c.unsure]

    @property
    def inputs(self) -> list[str]:
        return [c.column.key for c in self.choices if c.role == "input"]


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def columns(records: Sequence[RawRecord]) -> list[Column]:
    """Every top-level key, in first-seen order, with its values as text (scalars only)."""
    keys: dict[str, None] = {}
    for record in records:
        for key in record.data:
            if isinstance(key, str):
                keys.setdefault(key, None)
    found = []
    for key in keys:
        raw = [record.data[key] for record in records if record.data.get(key) is not None]
        texts = [_text(v) for v in raw]
        scalar = all(t is not None for t in texts)
        found.append(
            Column(
                key=key,
                values=tuple(t for t in texts if t is not None),
                present=len(raw),
                scalar=scalar,
            )
        )
    return found


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def restated_share(column: Column, source: Column) -> float:
    """How much of ``column`` repeats ``source`` record by record: the mean share of its words
    found in the same record's ``source`` (records where it has no words are left out). A log
    line's parsed template, a title cut from the body: text the model can write from the input."""
    shares = []
    for value, origin in zip(column.values, source.values, strict=True):
        words = _words(value)
        if words:
            shares.append(len(words & _words(origin)) / len(words))
    return sum(shares) / len(shares) if shares else 0.0


def looks_like_label(column: Column, n: int) -> bool:
    """Few distinct, short values, repeated: a label the model can choose."""
    limit = min(MAX_LABEL_VALUES, max(2, n // 2))
    return (
        column.distinct <= limit
        and column.max_words <= MAX_LABEL_WORDS
        and column.avg_chars <= MAX_LABEL_CHARS
        and (column.distinct < n or n <= 2)
    )


def _looks_like_identifier(column: Column, n: int) -> bool:
    return column.distinct == n and n > 2 and all(_IDENTIFIER.match(v) for v in column.values)


def pick_id(records: Sequence[RawRecord], cols: Sequence[Column]) -> tuple[str | None, str]:
    """``id``, else a unique ``*_id`` key (as the suite would infer), else a unique, space-free
    string key; ``None`` falls back to positions (``sample0001``…)."""
    key = infer_id_field(records)
    if key is not None:
        return key, "unique in every record"
    n = len(records)
    for column in cols:
        if column.present == n and column.scalar and _looks_like_identifier(column, n):
            return column.key, "the first key whose values are unique and have no spaces"
    return None, "no key is unique in every record: samples are named sample0001, sample0002, …"


def propose(records: Sequence[RawRecord]) -> Proposal:
    """A role for every key: the id, inputs (free text the model reads), label fields (few
    distinct values, taken from the data) and text fields (free text the model writes)."""
    n = len(records)
    cols = columns(records)
    id_field, id_why = pick_id(records, cols)
    proposal = Proposal(records=n, id_field=id_field, id_why=id_why)
    free: list[Choice] = []
    for column in cols:
        if column.key == id_field:
            continue
        if not column.scalar:
            proposal.choices.append(Choice(column, "skip", "not plain text (a list or an object)"))
            continue
        if column.present < n:
            proposal.choices.append(
                Choice(column, "skip", f"missing in {n - column.present} of {n} records", unsure=True)
            )
            continue
        if looks_like_label(column, n):
            values = tuple(sorted(column.counts()))
            if column.words & CONTEXT_WORDS:
                proposal.choices.append(
                    Choice(
                        column, "input", f"few values ({column.distinct}), but its name says context", True
                    )
                )
            elif column.distinct == 1:
                proposal.choices.append(
                    Choice(column, "skip", "the same value in every record: nothing to learn", unsure=True)
                )
            else:
                proposal.choices.append(
                    Choice(column, "label", f"{column.distinct} distinct values", values=values)
                )
            continue
        if _looks_like_identifier(column, n) and not column.words & (INPUT_WORDS | OUTPUT_WORDS):
            proposal.choices.append(Choice(column, "skip", "unique values without spaces: an identifier"))
            continue
        if column.words & OUTPUT_WORDS:
            choice = Choice(column, "text", "free text, and its name says the model writes it")
        elif column.words & INPUT_WORDS:
            choice = Choice(column, "input", "free text, and its name says the model reads it")
        else:
            choice = Choice(column, "input", "free text", unsure=True)
        proposal.choices.append(choice)
        free.append(choice)
    # Free text that restates an input (a log line's template, a title cut from the body) is
    # something the model can write from that input: an answer, never a second input.
    sure_inputs = [
        c for c in proposal.choices if c.role == "input" and not c.unsure and c.column.present == n
    ]
    for choice in free:
        if not (choice.unsure and choice.role == "input"):
            continue
        shares = [(restated_share(choice.column, s.column), s.column.key) for s in sure_inputs]
        share, source = max(shares, default=(0.0, ""))
        if share >= RESTATES_SHARE:
            choice.role, choice.unsure = "text", False
            choice.why = f"free text that restates {source!r}: {share:.0%} of its words are in it"
    if not proposal.inputs:
        # Nothing named like an input: the longest free text is what the model reads.
        guesses = [c for c in free if c.role == "text"] or [c for c in proposal.choices if c.role == "label"]
        if guesses:
            longest = max(guesses, key=lambda c: c.column.avg_chars)
            longest.role, longest.why, longest.unsure = "input", "the longest free text", True
    if not any(c.role in ("label", "text") for c in proposal.choices):
        # Nothing to answer: the shortest unsure free text becomes the answer.
        guesses = [c for c in free if c.role == "input" and c.unsure]
        if len(guesses) > 1:
            shortest = min(guesses, key=lambda c: c.column.avg_chars)
            shortest.role, shortest.why = "text", "the shortest free text (something must be answered)"
    return proposal


__all__ = [
    "Choice",
    "Column",
    "Proposal",
    "columns",
    "looks_like_label",
    "pick_id",
    "propose",
    "restated_share",
]
