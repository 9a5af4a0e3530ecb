"""Number and coordinate helpers shared by the dataset readers, converters and generators: one rounding rule
for box coordinates and allocations, one parser for the numbers in metadata, CUB and box files."""
from __future__ import annotations

import math

from ..errors import MetadataError

__all__ = ["parse_number", "round_half_up"]


def round_half_up(v: float) -> int:
    """``floor(v + 0.5)``: halves round up (no banker's rounding), as ``int(v + 0.5)`` does for the
    non-negative coordinates and counts it is used on."""
    return math.floor(v + 0.5)


def parse_number(value: object, file: object, line: int | None, what: str, *, integer: bool = False,
                 entry: str = "") -> float:
    """``value`` (text from a file) as a finite float, an integral one when ``integer``; anything else is a
    :class:`~kdcicam.errors.MetadataError` naming the file, the line, ``what`` (and ``entry``, e.g. the
    image a COCO annotation belongs to) and the value."""
    prefix = f"{entry}: " if entry else ""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MetadataError(file, line, f"{prefix}{what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise MetadataError(file, line, f"{prefix}{what} {value!r} is not finite")
    if integer and number != int(number):
        raise MetadataError(file, line, f"{prefix}{what} {value!r} is not an integer")
    return number
