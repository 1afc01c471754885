"""Checks that every config and stored record runs its fields through, so a bad value from a
flag, a recipe or a hand-edited JSON file fails the same way: one HashingError that names the
field and says what it must be. numpy/stdlib only (indexes/ and the CLI use it without torch).
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

from hashing.core.errors import HashingError

SEED_MAX = 2**32 - 1       # numpy's RandomState takes seeds below 2**32
INT64_MAX = 2**63 - 1      # item ids and counts are int64 (numpy arrays, Milvus's INT64 primary key)


def integer(name: str, value: Any, lo: int | None = None, hi: int | None = None, *, setting: bool = False) -> int:
    """An int (not a bool, not a string) within [lo, hi]. `setting`: `name` is a setting the caller was given
    (the CLI names its flag: HashingError.settings), not a field of a stored record."""
    settings = (name,) if setting else ()
    if isinstance(value, bool) or not isinstance(value, int):
        raise HashingError(f"{name} must be an integer, got {value!r}", settings=settings)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
        raise HashingError(f"{name} must be an integer {span}, got {value}", settings=settings)
    return int(value)


def number(name: str, value: Any, lo: float | None = None, positive: bool = False) -> float:
    """A finite real number (ints welcome), >= lo, and > 0 when positive."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HashingError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise HashingError(f"{name} must be greater than 0, got {value}")
    if lo is not None and value < lo:
        raise HashingError(f"{name} must be at least {lo}, got {value}")
    return float(value)


def choice(name: str, value: Any, options: Iterable[str]) -> str:
    options = list(options)
    if value not in options:
        raise HashingError(f"unknown {name} {value!r}: choose one of {', '.join(options)}")
    return value


def code_bits(value: Any, name: str = "bits") -> int:
    """A code length: a multiple of 8 from 8 to 1024 (codes are packed 8 bits to a byte)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 8 <= value <= 1024 or value % 8:
        raise HashingError(f"{name} must be a multiple of 8 from 8 to 1024, got {value!r}")
    return int(value)


def string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise HashingError(f"{name} must be a string, got {value!r}")
    return value


def mapping(name: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise HashingError(f"{name} must be a JSON object, got {value!r}")
    return value


def item_ids(values: Iterable[Any]) -> tuple[list[int], list[int]]:
    """Split ids a user gave into (those an int64 can hold, 0..INT64_MAX; the rest). The rest
    can name no item, and numpy would raise OverflowError on them rather than say so."""
    fits, never = [], []
    for v in values:
        (fits if 0 <= int(v) <= INT64_MAX else never).append(int(v))
    return fits, never


class NestedTooDeep(json.JSONDecodeError):
    """JSON nested deeper than Python's parser follows: a damaged (or hostile) file, not a crash."""


def json_loads(text: str | bytes) -> Any:
    """json.loads of a file a user can edit. Nesting deeper than Python's parser can follow (100,000
    brackets) raises RecursionError there; here it is NestedTooDeep, a json.JSONDecodeError, so a
    caller's "not JSON" message covers it and one that wants to can say "damaged"."""
    try:
        return json.loads(text)
    except RecursionError:
        doc = text if isinstance(text, str) else text.decode("utf-8", "replace")
        raise NestedTooDeep("nested too deeply", doc, 0) from None
