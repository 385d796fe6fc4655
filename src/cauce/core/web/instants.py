"""`ISO_8601_ONLY`: a date-time filter takes ISO 8601 text, never a number.

Pydantic's lax mode reads a number as a Unix time, and so a query's `created_after=0` or
`=2025` (1970, 33 minutes in) and a body's `"created_before": 0`, where the document
promises an ISO 8601 date-time and a client most likely meant a year or sent a wrong
field. Such a value is refused as any other invalid filter is (422, its pointer naming
the parameter).

A query's `+` is a space once decoded (form encoding): `created_after=2025-01-01T10:00+01:00`
sent as typed arrives as `2025-01-01T10:00 01:00`, which is no date-time. Its 422 says
to send the `+` as `%2B`, rather than only that the text does not parse.
"""

from __future__ import annotations

import re
from typing import Any, Final

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_MESSAGE: Final = "Input should be an ISO 8601 date-time, not a number (no Unix time is read)"


# A date-time whose offset's `+` became a space: a full time, a space, then an offset.
_PLUS_AS_SPACE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)? \d{2}(?::?\d{2})?"
)
_PLUS_MESSAGE: Final = (
    "Input should be an ISO 8601 date-time; a space stands where its offset's + was: in a "
    "URL send + as %2B (an unencoded + arrives as a space)"
)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def refuse_numbers(value: Any) -> Any:
    """`value` unchanged, unless it is a number, or text that is one (a query's value),
    or a date-time whose offset's `+` arrived as a space (refused saying so)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise PydanticCustomError("datetime_type", _MESSAGE)
    if isinstance(value, str) and _numeric(value):
        raise PydanticCustomError("datetime_parsing", _MESSAGE)
    if isinstance(value, str) and _PLUS_AS_SPACE.fullmatch(value.strip()):
        # Never a date-time pydantic reads (text after the time): only the message changes.
        raise PydanticCustomError("datetime_parsing", _PLUS_MESSAGE)
    return value


# For `Annotated[datetime | None, ISO_8601_ONLY]`: the check runs before pydantic's own.
ISO_8601_ONLY: Final = BeforeValidator(refuse_numbers)
