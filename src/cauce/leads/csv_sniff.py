"""Reading a CSV file's shape: the encoding, the delimiter, an incremental decoder that
can change its mind once (and reads a UTF-8 line inside a cp1252 file as UTF-8), and the
record structure: complete records, quotes that cannot be right, the cells of a record
the csv module refuses.

See `cauce.leads.csv_import` for the rules; this module holds the mechanics.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import re
from dataclasses import dataclass
from typing import Literal

SAMPLE_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t", "|")
# A quoted cell may hold line breaks (notes, addresses: a few lines); one spanning more
# is taken for a quote never closed (see `quote_fault`).
MAX_CELL_LINES = 100
# A decoder holds back the last, unfinished line of a chunk so that it decides a line's
# encoding on the whole line; a line longer than this is decided piece by piece.
_HOLD_BYTES = 64 * 1024

_NOT_ASCII = re.compile(rb"[\x80-\xff]")
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# A UTF-8 lead byte followed by a continuation byte (`LC` once bytes are mapped to these
# classes; a translation and a substring search are several times faster than a regex):
# in cp1252 an upper-case accented letter followed by a symbol ("É“"), which Spanish
# text hardly ever has.
_BYTE_CLASSES = bytes(
    ord("L") if 0xC2 <= b <= 0xF4 else ord("C") if 0x80 <= b <= 0xBF else ord(".")
    for b in range(256)
)
# UTF-8 read in a cp1252 file: the characters of a Western European CRM's rows (Latin-1
# letters and symbols, Latin Extended-A, punctuation such as smart quotes and dashes,
# currency such as €, letterlike such as ™). A line with another character stays
# cp1252: the bytes of a cp1252 line form valid UTF-8 only by chance, and then mostly
# other characters ("ADIÓS”" is valid UTF-8 for "ADIӔS", "á€“" for a Myanmar letter).
_UNLIKELY_UTF8 = re.compile(
    "[\x80-\x9f\u0180-\u1fff\u2070-\u209f\u20d0-\u20ff\u2150-\uffff\U00010000-\U0010ffff]"
)


@dataclass(frozen=True, slots=True)
class CsvFormat:
    """What detection decided: the codec, whether a BOM was there, the delimiter."""

    encoding: str
    bom: bool
    delimiter: str


def byte_order_mark(sample: bytes) -> tuple[str, int] | None:
    """(codec, BOM length) if the file starts with a UTF-8 or UTF-16 BOM."""
    for bom, codec in _BOMS:
        if sample.startswith(bom):
            return codec, len(bom)
    return None


def detect_encoding(sample: bytes, *, at_eof: bool = False) -> tuple[str, int, bool]:
    """(codec, BOM length, confirmed) for the start of a file; see the module rules.

    `confirmed` is False when the sample is plain ASCII: the codec is then a guess.
    """
    if (bom := byte_order_mark(sample)) is not None:
        return *bom, True
    if sample.isascii():
        return "utf-8", 0, False
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(sample, final=at_eof)
    invalid = text.count("\ufffd")
    valid = sum(1 for c in text if c > "\x7f") - invalid
    # cp1252 accents almost never form valid UTF-8 sequences, so a sample with at least
    # as many valid multi-byte characters as bad bytes is UTF-8 with a few broken rows.
    if valid >= invalid:
        return "utf-8", 0, True
    # Else cp1252, even with bytes cp1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90,
    # 0x9D): they are most often a UTF-8 row pasted into the file ("Á" is C3 81), which
    # the decoder reads as UTF-8, and otherwise fail their row. Latin-1 would read the
    # euro sign, smart quotes and dashes as control characters, which the schema drops
    # without a word.
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


def _is_cp1252(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "cp1252"


def _utf8_line(line: bytes) -> str | None:
    """A line of a cp1252 file as UTF-8, if it is plainly UTF-8 (see `_UNLIKELY_UTF8`)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _UNLIKELY_UTF8.search(text) else text


def _cp1252_lines(data: bytes) -> str:
    """cp1252 text (complete lines) in which a line that is plainly UTF-8 is read as
    UTF-8; bytes cp1252 leaves undefined become U+FFFD (their row's error)."""
    classes = data.translate(_BYTE_CLASSES)
    pair = classes.find(b"LC") if b"C" in classes else -1
    if pair < 0:  # the fast path: no line can be UTF-8
        return data.decode("cp1252", "replace")
    parts: list[str] = []
    done = 0
    while pair >= 0:
        start = max(done, data.rfind(b"\n", done, pair) + 1, data.rfind(b"\r", done, pair) + 1)
        ends = [e for e in (data.find(b"\n", pair), data.find(b"\r", pair)) if e >= 0]
        end = min(ends) + 1 if ends else len(data)
        text = _utf8_line(data[start:end])
        if text is not None:
            parts += (data[done:start].decode("cp1252", "replace"), text)
            done = end
        pair = classes.find(b"LC", end)
    parts.append(data[done:].decode("cp1252", "replace"))
    return "".join(parts)


def _split_lines(data: bytes, final: bool) -> tuple[bytes, bytes]:
    """(the complete lines of `data`, the unfinished last line to hold back)."""
    if final:
        return data, b""
    cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
    if cut == 0 and len(data) > _HOLD_BYTES:
        # A very long line goes on in pieces, cut after an ASCII byte (never inside a
        # character) when one is near the end.
        cut = len(data)
        for back in range(cut, max(cut - 8, 0), -1):
            if data[back - 1] < 0x80:
                cut = back
                break
    return data[:cut], data[cut:]


class StreamDecoder:
    """Incremental decoding, line-aware for cp1252 and for a provisional UTF-8.

    - cp1252 (detected or asked for): a line that is plainly UTF-8 is read as UTF-8
      (a row pasted from another file); any other line as cp1252.
    - Provisional UTF-8 (the sample was ASCII): the text stays ASCII until a byte that
      is not; the `SAMPLE_BYTES` from that byte on (or up to the end of the file, if
      it comes first) decide: if they are all UTF-8 the file is UTF-8 from then on,
      else it is cp1252 as above from that byte on (the text before was ASCII, the
      same in both), so a UTF-8 and a cp1252 row close together are each read right.
      Those bytes do not depend on how the file is cut into chunks.
    - Anything else (UTF-8 seen, UTF-16, an encoding asked for): the codec's own
      incremental decoder, bad bytes as U+FFFD (their row's error).

    The line-aware modes hold back a chunk's unfinished last line until its end comes.
    """

    def __init__(self, encoding: str, confirmed: bool) -> None:
        codecs.lookup(encoding)  # LookupError for an unknown codec
        self.encoding = encoding
        self._pending = b""
        self._mode = "plain"
        if not confirmed:
            self._mode = "provisional"
        elif _is_cp1252(encoding):
            self._mode = "cp1252"
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")

    def preview(self, sample: bytes) -> str:
        """The start of the file as text, for detecting its shape (not for rows)."""
        codec = "cp1252" if self._mode == "cp1252" else self.encoding
        return codecs.getincrementaldecoder(codec)(errors="replace").decode(sample)

    def decode(self, data: bytes, final: bool = False) -> str:
        if self._mode == "plain":
            return self._decoder.decode(data, final)
        if self._mode == "provisional":
            return self._provisional(data, final)
        lines, self._pending = _split_lines(self._pending + data, final)
        return _cp1252_lines(lines)

    def _provisional(self, data: bytes, final: bool) -> str:
        """ASCII so far: pass ASCII lines on; from the first byte that is not ASCII, wait
        for the `SAMPLE_BYTES` starting there (or the end of the file), which decide:
        UTF-8 if they are all UTF-8, else cp1252. The bytes that decide are the same
        however the file is cut into chunks, and so are the rows."""
        buffered = self._pending + data
        lines, rest = _split_lines(buffered, final)
        if lines.isascii():
            self._pending = rest
            return lines.decode("ascii")
        start = _NOT_ASCII.search(lines)
        assert start is not None
        first = start.start()
        head = buffered[:first].decode("ascii")
        window = buffered[first : first + SAMPLE_BYTES]
        if len(window) < SAMPLE_BYTES and not final:
            self._pending = buffered[first:]  # wait for the rest of the window
            return head
        self._pending = b""
        try:
            codecs.getincrementaldecoder("utf-8")().decode(
                window, final=final and first + SAMPLE_BYTES >= len(buffered)
            )
        except UnicodeDecodeError:
            self.encoding, self._mode = "cp1252", "cp1252"
            return head + self.decode(buffered[first:], final)
        # Real UTF-8 seen: from now on a bad byte is an error of its row only.
        self._mode = "plain"
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return head + self._decoder.decode(buffered[first:], final)


def record_pattern(delimiter: str, *, one_line: bool = False) -> re.Pattern[str]:
    """A regex matching one complete record (up to and including its line break); with
    `one_line`, one whose quoted cells hold no line break."""
    # One complete record, exactly as the csv module (doublequote, non-strict) sees it: a
    # quote opens a quoted field only at the start of a field; inside it "" is a quote
    # and line breaks are data; after the closing quote the field runs to the delimiter.
    # Possessive quantifiers keep it linear and stop it from closing a quote early.
    d = re.escape(delimiter)
    other = f"[^{d}\\r\\n]"
    inside = '[^"\\r\\n]' if one_line else '[^"]'
    fld = f'(?:"(?:{inside}|"")*+"{other}*+|[^{d}\\r\\n"]{other}*+)?'
    return re.compile(f"{fld}(?:{d}{fld})*+(?:\\r\\n|\\r|\\n)")


def records_pattern(delimiter: str) -> re.Pattern[str]:
    """A regex matching a run of complete one-line records (see `record_pattern`): one
    call takes a chunk's records up to the first that spans lines or is unfinished."""
    return re.compile(f"(?:{record_pattern(delimiter, one_line=True).pattern})*+")


def line_breaks(text: str, start: int, end: int, most: int) -> int:
    """How many line breaks (`\\r\\n` counting once) `text[start:end]` holds, counted up
    to `most` + 1 (enough to tell "more than `most`")."""
    count, pos = 0, start
    while count <= most:
        n, r = text.find("\n", pos, end), text.find("\r", pos, end)
        if n < 0 and r < 0:
            break
        pos = min(p for p in (n, r) if p >= 0)
        pos += 2 if text.startswith("\r\n", pos) else 1
        count += 1
    return count


def line_end(text: str, start: int) -> int:
    """Where the physical line holding `text[start]` ends (after its line break), or -1
    when the text ends first."""
    n, r = text.find("\n", start), text.find("\r", start)
    if n < 0 and r < 0:
        return -1
    pos = min(p for p in (n, r) if p >= 0)
    return pos + 2 if text.startswith("\r\n", pos) else pos + 1


# Why a record is taken for a quote never closed: the text ends inside the quoted cell;
# the cell spans more than `MAX_CELL_LINES` line breaks; the quote closing a cell that
# spans lines is followed by other text (it opens a later cell); the record would pass
# the row limit. Or (the reader's) the record's first line alone passes that limit.
FaultKind = Literal["never closed", "many lines", "followed by text", "too long", "long line"]


@functools.cache
def _cell_end(delimiter: str) -> re.Pattern[str]:
    return re.compile(f"[{re.escape(delimiter)}\\r\\n]")


@dataclass(frozen=True, slots=True)
class QuoteFault:
    """A record that cannot be read as it stands: the cell whose quote cannot be right
    (its position in the record, counting from 0), where that quote (or the record) is in
    the text, and why (see `FaultKind`)."""

    cell: int
    at: int
    why: FaultKind


def quote_fault(
    text: str,
    start: int,
    end: int,
    delimiter: str,
    *,
    closed: bool,
    open_why: FaultKind = "never closed",
    too_long: bool = False,
) -> QuoteFault | None:
    """The first quoted cell of the record at `text[start:end]` taken for a quote never
    closed, or None.

    `closed`: the record is complete (`record_pattern` matched it); a quoted cell that
    spans lines is then taken for a quote never closed if it spans more than
    `MAX_CELL_LINES` line breaks, or if its closing quote is followed by other text than
    a delimiter or a line break (it is then the opening quote of a later cell: real files
    close a quote at the cell's end), or if `too_long` (the record is over the limit).
    Else the record ends inside a quoted cell, whose fault says `open_why` (or that it
    spans more than `MAX_CELL_LINES` lines). Quoted cells on one line follow the csv
    module (`"a"b` is `ab`).
    """
    cell, pos = 0, start
    while True:
        if pos < end and text[pos] == '"':
            close, scan = -1, pos + 1
            while (quote := text.find('"', scan, end)) >= 0:
                if quote + 1 < end and text[quote + 1] == '"':
                    scan = quote + 2
                    continue
                close = quote
                break
            if close < 0:
                if closed:
                    return None
                many = line_breaks(text, pos, end, MAX_CELL_LINES) > MAX_CELL_LINES
                return QuoteFault(cell, pos, "many lines" if many else open_why)
            breaks = line_breaks(text, pos, close, MAX_CELL_LINES)
            if breaks:
                after = text[close + 1] if close + 1 < end else "\n"
                if breaks > MAX_CELL_LINES:
                    return QuoteFault(cell, pos, "many lines")
                if after not in (delimiter, "\r", "\n"):
                    return QuoteFault(cell, pos, "followed by text")
                if too_long:
                    return QuoteFault(cell, pos, "too long")
            pos = close + 1
        found = _cell_end(delimiter).search(text, pos, end)
        if found is None or found.group() != delimiter:
            return None if closed else QuoteFault(cell, start, open_why)
        cell, pos = cell + 1, found.end()


def split_record(record: str, delimiter: str) -> list[str]:
    """The cells of one complete record, as the csv module would read them (used where
    the csv module refuses the record: a cell over its size limit)."""
    if record.endswith("\r\n"):
        body = record[:-2]
    elif record.endswith(("\r", "\n")):
        body = record[:-1]
    else:
        body = record
    if not body:
        return []
    d = re.escape(delimiter)
    field = re.compile(f'"((?:[^"]|"")*+)"([^{d}]*+)|([^{d}]*+)')
    cells, pos = [], 0
    while True:
        found = field.match(body, pos)
        assert found is not None  # the last alternative matches the empty string
        quoted, rest, plain = found.groups()
        cells.append(quoted.replace('""', '"') + rest if quoted is not None else plain)
        pos = found.end()
        if pos >= len(body):
            return cells
        pos += 1  # the delimiter
