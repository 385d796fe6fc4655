"""Reading a CSV file's shape from its first bytes: the encoding, the delimiter, an
incremental decoder that can change its mind once, and a pattern for complete records.

See `cauce.leads.csv_import` for the rules; this module holds the mechanics.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass

SAMPLE_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t", "|")

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


@dataclass(frozen=True, slots=True)
class CsvFormat:
    """What detection decided: the codec, whether a BOM was there, the delimiter."""

    encoding: str
    bom: bool
    delimiter: str


def detect_encoding(sample: bytes, *, at_eof: bool = False) -> tuple[str, int, bool]:
    """(codec, BOM length, confirmed) for the start of a file; see the module rules.

    `confirmed` is False when the sample is plain ASCII: the codec is then a guess.
    """
    for bom, codec in _BOMS:
        if sample.startswith(bom):
            return codec, len(bom), True
    if sample.isascii():
        return "utf-8", 0, False
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(sample, final=at_eof)
    invalid = text.count("\ufffd")
    valid = sum(1 for c in text if c > "\x7f") - invalid
    # cp1252 accents almost never form valid UTF-8 sequences, so a sample with at least
    # as many valid multi-byte characters as bad bytes is UTF-8 with a few broken rows.
    if valid >= invalid:
        return "utf-8", 0, True
    try:
        sample.decode("cp1252")
    except UnicodeDecodeError:
        return "latin-1", 0, True
    return "cp1252", 0, True


def detect_delimiter(sample: str, *, at_eof: bool = False) -> str:
    """The delimiter among `DELIMITERS` that best splits the sample into a table."""
    if not at_eof:  # the last line of a sample may be cut short
        cut = max(sample.rfind("\n"), sample.rfind("\r"))
        sample = sample[: cut + 1] if cut > 0 else sample
    best, best_key = ",", (False, 0.0, 0)
    for delimiter in DELIMITERS:
        rows: list[list[str]] = []
        try:
            for row in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter):
                if any(cell.strip() for cell in row):
                    rows.append(row)
                if len(rows) >= 50:
                    break
        except csv.Error:
            continue
        if not rows:
            continue
        width = len(rows[0])
        consistent = sum(len(r) == width for r in rows) / len(rows)
        key = (width > 1, consistent, width)
        if key > best_key:
            best, best_key = delimiter, key
    return best


class StreamDecoder:
    """Incremental decoding with the provisional-UTF-8 fallback to cp1252."""

    def __init__(self, encoding: str, confirmed: bool) -> None:
        self.encoding = encoding
        self._provisional = not confirmed
        errors = "strict" if self._provisional else "replace"
        self._decoder = codecs.getincrementaldecoder(encoding)(errors=errors)

    def decode(self, data: bytes, final: bool = False) -> str:
        if not self._provisional:
            return self._decoder.decode(data, final)
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError:
            pending = self._decoder.getstate()[0]
            self.encoding, self._provisional = "cp1252", False
            self._decoder = codecs.getincrementaldecoder("cp1252")(errors="replace")
            return self._decoder.decode(pending + data, final)
        if not text.isascii():
            # Real UTF-8 seen: from now on a bad byte is an error of its row only.
            self._provisional = False
            self._decoder.errors = "replace"
        return text


def record_pattern(delimiter: str) -> re.Pattern[str]:
    """A regex matching one complete record (up to and including its line break)."""
    # One complete record, exactly as the csv module (doublequote, non-strict) sees it: a
    # quote opens a quoted field only at the start of a field; inside it "" is a quote
    # and line breaks are data; after the closing quote the field runs to the delimiter.
    # Possessive quantifiers keep it linear and stop it from closing a quote early.
    d = re.escape(delimiter)
    other = f"[^{d}\\r\\n]"
    fld = f'(?:"(?:[^"]|"")*+"{other}*+|[^{d}\\r\\n"]{other}*+)?'
    return re.compile(f"{fld}(?:{d}{fld})*+(?:\\r\\n|\\r|\\n)")
