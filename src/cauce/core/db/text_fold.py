# ruff: noqa: RUF002  (Greek and Cyrillic letters are this module's examples)
"""Text compared without regard to case and accents the same way in Python, SQLite and
PostgreSQL, whatever PostgreSQL's locale.

The databases' own functions disagree: SQLite's `lower()` and `LIKE` fold ASCII only;
PostgreSQL's `lower()` folds by the database's ctype (nothing beyond ASCII under `C`, and
under `C.UTF-8` a final `Σ` becomes `σ` where Python's `lower()` gives `ς`). So the fold
is Python's, one character for one (`fold_char`), and a search for folded text is:

- on SQLite, `LIKE` over the column folded by a function each connection registers
  (`register_sqlite`, from engine.py);
- on PostgreSQL, a regular expression with each searched character as a bracket of every
  character that folds to it (`σ`: `[σΣς...]`). It matches exactly where the folded
  column holds the text (the fold keeps lengths, so position for position), it compares
  characters only (no case-insensitive matching: no locale), and costs about what
  `lower() LIKE` does (~15 ms over 10,000 leads). `translate()` to the folded characters
  would do too, but its time grows with their number: ~400 ms for a Greek name.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Any

from sqlalchemy import String, func
from sqlalchemy.sql.elements import ColumnElement

FOLD_FUNCTION = "cauce_fold"

# Planes 4 to 13 have no character assigned, 15 and 16 are private use (no case, no
# decomposition): skipped, the table takes a quarter of the time to build.
_RANGES = ((0, 0x40000), (0xE0000, 0xF0000))


def fold_char(char: str) -> str:
    """One character folded to one: without its accents (NFKD, combining marks left out)
    and case-folded (`Ό` is `ο`, `Ё` is `е`, `Σ` and `ς` are `σ`), when that gives one
    character; else case-folded or lower-cased when either does (`ǅ` is `ǆ`); else as it
    is (`ß`, whose case folding is two: `ss`)."""
    base = "".join(
        c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
    ).casefold()
    if len(base) == 1:
        return base
    for other in (char.casefold(), char.lower()):
        if len(other) == 1:
            return other
    return char


@functools.cache
def _tables() -> tuple[dict[int, str], dict[str, str]]:
    """The characters the fold changes (code point to fold), and for each fold the
    characters folding to it. Built on first use (~50 ms), once per process."""
    forward: dict[int, str] = {}
    sources: dict[str, list[str]] = {}
    for start, stop in _RANGES:
        for point in range(start, stop):
            char = chr(point)
            unchanged = char.lower() == char and char.casefold() == char
            if unchanged and not unicodedata.decomposition(char):
                continue
            folded = fold_char(char)
            if folded != char:
                forward[point] = folded
                sources.setdefault(folded, []).append(char)
    return forward, {folded: "".join(chars) for folded, chars in sources.items()}


def fold_text(text: str | None) -> str | None:
    """`text` with each character folded (`fold_char`): as long as `text`, and folding it
    again changes nothing. SQLite's `cauce_fold(text)`."""
    if text is None:
        return None
    if text.isascii():  # what the table does to ASCII: A-Z lower-cased, nothing else
        return text.lower()
    return text.translate(_tables()[0])


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _regex_char(char: str) -> str:
    # In PostgreSQL's regular expressions `\` before a character that is not a letter or
    # digit stands for that character, inside brackets too; nothing beyond ASCII is special.
    return "\\" + char if char.isascii() and not char.isalnum() else char


def _regex(wanted: str) -> str:
    sources = _tables()[1]
    parts = []
    for char in wanted:
        others = sources.get(char)
        if others:
            parts.append("[" + "".join(_regex_char(c) for c in char + others) + "]")
        else:
            parts.append(_regex_char(char))
    return "".join(parts)


def contains_folded(column: Any, text: str, dialect: str) -> ColumnElement[bool]:
    """Whether `column`, folded as `fold_text` folds, contains `text` folded: a scan of
    the column (no index serves it)."""
    wanted = fold_text(text) or ""
    if dialect == "sqlite":
        folded = func.cauce_fold(column, type_=String())
        return folded.like(_like_pattern(wanted), escape="\\")
    matches: ColumnElement[bool] = column.regexp_match(_regex(wanted))
    return matches


def register_sqlite(dbapi_connection: Any) -> None:
    """Give a new SQLite connection the SQL function `cauce_fold(text)` (`fold_text`)."""
    dbapi_connection.create_function(FOLD_FUNCTION, 1, fold_text, deterministic=True)
