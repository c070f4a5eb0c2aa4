"""Building blocks shared by every config block: a strict model and a humantime duration."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

__all__ = ["Duration", "StrictModel", "format_duration", "normalized_choice", "parse_duration"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
          "d": 86400.0}  # fmt: skip
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)")


class StrictModel(BaseModel):
    """Base of every config block: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def normalized_choice(aliases: Mapping[str, str]) -> Callable[[Any], Any]:
    """A before-validator for string choices: trims, lowercases and maps aliases (the original's
    spellings) to the canonical value; anything else passes through to be validated."""

    def normalize(value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return aliases.get(value, value)
        return value

    return normalize


def parse_duration(value: Any) -> float:
    """Parse a humantime duration ("5s", "1m30s", "250ms") or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '5s', got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like '5s', got {type(value).__name__}")
    text = value.strip().replace(" ", "")
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}: use forms like '500ms', '5s', '1m30s', '2h'")
    return total


def format_duration(seconds: float) -> str:
    """Format seconds the way config files write them ("1m30s", "250ms")."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out, rest = "", round(seconds, 3)
    for unit, size in (("h", 3600), ("m", 60)):
        if rest >= size:
            out += f"{int(rest // size)}{unit}"
            rest -= (rest // size) * size
    if rest:
        out += f"{rest:g}s"
    return out


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
