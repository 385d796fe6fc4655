"""`WHOLE_NUMBER_TEXT`: a whole-number query parameter takes digits, never `0.0` or `3.00`.

Pydantic's lax mode reads the text `0.0` as the integer 0, so `min_score=0.0` was taken
where the document promises an integer (found by the OpenAPI fuzz test: a value generated
to break the parameter's type was accepted). Such a value is refused as any other invalid
filter is (422, its pointer naming the parameter).
"""

from __future__ import annotations

import re
from typing import Any, Final

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_DIGITS = re.compile(r"[+-]?[0-9]+")


def digits_only(value: Any) -> Any:
    """`value` unchanged, unless it is text other than an optional sign and digits."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value.strip()):
        raise PydanticCustomError(
            "int_parsing", "Input should be a valid integer, unable to parse string as an integer"
        )
    return value


# For `Annotated[int | None, WHOLE_NUMBER_TEXT]`: the check runs before pydantic's own.
WHOLE_NUMBER_TEXT: Final = BeforeValidator(digits_only)
