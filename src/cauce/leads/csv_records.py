"""Where the records of decoded CSV text end, and how a broken one fails, for
`csv_import` (the rules are in its docstring; the quote mechanics in `csv_sniff`).

`RecordScanner` finds the end of the complete records in a buffer (quoted cells may
span lines), takes a record for one whose quote is never closed, or a line for one
longer than a row may be (`MAX_RECORD_CHARS`), says why such a record fails, and skips
the rest of its line, across the texts the reader feeds it.
"""

from __future__ import annotations

from collections.abc import Sequence

from cauce.leads.csv_sniff import (
    MAX_CELL_LINES,
    FaultKind,
    QuoteFault,
    line_breaks,
    line_end,
    quote_fault,
    record_pattern,
    records_pattern,
)

# The longest row read (1 Mi characters): thousands of times a real lead's row, so it
# only stops a runaway record, and the most the reader buffers to re-read the lines after
# a quote never closed. A longer row fails alone; the rest of its line is skipped unread.
MAX_RECORD_CHARS = 1024 * 1024
TOO_LONG = (
    f"the row is longer than {MAX_RECORD_CHARS} characters, the limit of a row; the rest "
    "of its line was skipped"
)


class RecordScanner:
    """The records of one file's text (split at `delimiter`); it keeps whether the rest
    of a line is being skipped from one text to the next."""

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self.pattern = record_pattern(delimiter)
        self._run = records_pattern(delimiter)
        # Skipping the rest of a line too long to read; dropping the "\n" of a "\r\n"
        # whose "\r" ended what was skipped.
        self._skip_line = False
        self._skip_lf = False

    def skipped(self, text: str) -> str:
        """`text` without what is left of a line being skipped."""
        if self._skip_lf and text and not self._skip_line:
            self._skip_lf = False
            return text[1:] if text[0] == "\n" else text
        if not self._skip_line:
            return text
        end = line_end(text, 0)
        if end < 0:
            return ""
        self._skip_line = False
        self._skip_lf = end == len(text) and text.endswith("\r")
        return text[end:]

    def skip_rest(self, line: str) -> None:
        """Skip, unread, the rest of the line `line` starts (it is too long to read)."""
        self._skip_lf = line.endswith("\r")
        self._skip_line = not self._skip_lf

    def scan(self, buffer: str, pos: int, final: bool) -> tuple[int, QuoteFault | None]:
        """Where the complete records from `pos` end, and the fault of the record there
        if it is taken for a quote never closed (else it is unfinished: the tail)."""
        # A "\r" at the end may be the first half of a "\r\n": that record waits.
        end = len(buffer) - 1 if not final and buffer.endswith("\r") else len(buffer)
        if buffer.find('"', pos) < 0:  # no quotes: records end at line breaks
            cut = max(buffer.rfind("\n", pos, end), buffer.rfind("\r", pos, end)) + 1
            return max(pos, cut), None
        delimiter = self.delimiter
        while True:
            run = self._run.match(buffer, pos, end)
            assert run is not None  # it matches the empty string
            pos = run.end()
            found = self.pattern.match(buffer, pos, end) if pos < end else None
            if found is None:
                break
            # A record that one-line records do not match: a quoted cell spans lines.
            fault = _long_line(buffer, pos) or quote_fault(
                buffer, pos, found.end(), delimiter, closed=True,
                too_long=found.end() - pos > MAX_RECORD_CHARS,
            )  # fmt: skip
            if fault is not None:
                return pos, fault
            pos = found.end()
        if pos >= end:
            return pos, None
        if fault := _long_line(buffer, pos):
            return pos, fault
        # An unfinished record's line breaks are in a quoted cell: past a limit, or at
        # the end of the file, its quote is taken for one never closed. It is judged on
        # its text up to where it first passes a limit, so a file read whole and one read
        # in chunks give the same reason (a record past both limits and the end of the
        # file is past the limit it reached first).
        cut = _limit_at(buffer, pos, end)
        if cut < 0 and not final:
            return pos, None
        why: FaultKind = "never closed"
        if cut >= 0:
            many = line_breaks(buffer, pos, cut, MAX_CELL_LINES) > MAX_CELL_LINES
            why = "many lines" if many else "too long"
        upto = cut if cut >= 0 else len(buffer)
        fault = quote_fault(
            buffer, pos, upto, delimiter, closed=False, open_why=why,
            too_long=upto - pos > MAX_RECORD_CHARS,
        )  # fmt: skip
        return pos, fault

    @staticmethod
    def refusal(fault: QuoteFault, labels: Sequence[str]) -> tuple[str, int | None]:
        """Why the record where `scan` stopped fails, and the cell at fault if one is
        (`labels`: the header's column labels, if it has been read)."""
        if fault.why == "long line":
            return TOO_LONG, None
        why = {
            "never closed": "the file ends first",
            "too long": f"the row would be longer than {MAX_RECORD_CHARS} characters",
            "followed by text": "the next quote is followed by other text than a delimiter, "
            "so it opens a cell rather than closing this one",
        }.get(fault.why, f"a quoted cell may hold at most {MAX_CELL_LINES} line breaks")
        if fault.cell < len(labels):
            column = f"column '{labels[fault.cell]}'"
        else:
            column = f"column {fault.cell + 1}"
        return (
            f"a quote opened in {column} is never closed ({why}): the row was read up to "
            "the end of that line, and the next line as the next row (a quote inside a "
            "cell is written twice)",
            fault.cell,
        )

    def after_line(self, buffer: str, at: int, final: bool) -> int:
        """Where the line holding `buffer[at]` ends (skipping the rest of it unread if it
        goes on past the buffer)."""
        end = line_end(buffer, at)
        if end < 0:  # the line goes on past the text: skip the rest of it
            self._skip_line = not final
            return len(buffer)
        if not final and end == len(buffer) and buffer.endswith("\r"):
            self._skip_lf = True  # its "\n" may come with the next text
        return end


def _limit_at(text: str, start: int, end: int) -> int:
    """Where the unfinished record at `start` first passes a limit: just after its
    line break number `MAX_CELL_LINES` + 1, or where it is longer than
    `MAX_RECORD_CHARS` with a line break in it (a first line that long is `_long_line`'s);
    -1 if it passes neither before `end` (which leaves out a last "\r" whose "\n" may
    come with the next text, as `scan` does)."""
    count, pos, first_break, many_at = 0, start, -1, -1
    while True:
        n, r = text.find("\n", pos, end), text.find("\r", pos, end)
        if n < 0 and r < 0:
            break
        pos = min(p for p in (n, r) if p >= 0)
        pos += 2 if text.startswith("\r\n", pos, end) else 1
        count += 1
        if count == 1:
            first_break = pos
        if count > MAX_CELL_LINES:
            many_at = pos
            break
    long_at = -1
    if first_break >= 0:
        long_at = max(start + MAX_RECORD_CHARS + 1, first_break)
        if long_at > end:
            long_at = -1
    reached = [at for at in (many_at, long_at) if at >= 0]
    return min(reached) if reached else -1


def _long_line(buffer: str, start: int) -> QuoteFault | None:
    """A fault for the record at `start` if its first line, complete in the buffer, is
    longer than a row may be (whatever its quotes: a row fails the same way however the
    file arrives in chunks)."""
    end = line_end(buffer, start)
    return QuoteFault(0, start, "long line") if end - start > MAX_RECORD_CHARS else None
