"""Lists of item ids in a manifest row: packed (sorted, zlib-compressed differences, base64) and split
into parts that each fit one row."""

from __future__ import annotations

import numpy as np

MAX_REMOVING = 48000       # characters of a packed removal list in one manifest row


def pack_ids(ids: list[int]) -> str:
    """Sorted ids as one short string (zlib-packed differences, base64): a manifest row holds ~20,000."""
    import base64
    import zlib

    deltas = np.diff(np.asarray(sorted(ids), np.int64), prepend=0)
    return base64.b64encode(zlib.compress(deltas.astype("<i8").tobytes(), 9)).decode()


def unpack_ids(text: str) -> list[int]:
    import base64
    import binascii
    import zlib

    if not text:
        return []
    if not isinstance(text, str):
        raise ValueError("not a string")
    try:
        raw = zlib.decompress(base64.b64decode(text, validate=True))
    except (binascii.Error, zlib.error) as e:
        raise ValueError(str(e)) from None
    return np.cumsum(np.frombuffer(raw, "<i8")).astype(np.int64).tolist()


def split_removals(ids: list[int]) -> list[list[int]]:
    """The removals in parts whose packed list fits one manifest row; [[]] when there are none."""
    if not ids:
        return [[]]
    parts, todo = [], sorted(ids)
    while todo:
        n = len(todo)
        while len(pack_ids(todo[:n])) > MAX_REMOVING:
            n //= 2
        parts.append(todo[:n])
        todo = todo[n:]
    return parts
