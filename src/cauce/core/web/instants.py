"""`ISO_8601_ONLY`: a date-time filter takes ISO 8601 text, never a number.

Pydantic's lax mode reads a number as a Unix time, and so a query's `created_after=0` or
`=2025` (1970, 33 minutes in) and a body's `"created_before": 0`, where the document
promises an ISO 8601 date-time and a client most likely meant a year or sent a wrong
field. Such a value is refused as any other invalid filter is (422, its pointer naming
the parameter).
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_MESSAGE: Final = "Input should be an ISO 8601 date-time, not a number (no Unix time is read)"


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def refuse_numbers(value: Any) -> Any:
    """`value` unchanged, unless it is a number, or text that is one (a query's value)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise PydanticCustomError("datetime_type", _MESSAGE)
    if isinstance(value, str) and _numeric(value):
        raise PydanticCustomError("datetime_parsing", _MESSAGE)
    return value


# For `Annotated[datetime | None, ISO_8601_ONLY]`: the check runs before pydantic's own.
ISO_8601_ONLY: Final = BeforeValidator(refuse_numbers)
